"""The gateway (aiohttp): every channel's webhooks, the web chat, the Rasa-compatible
REST channel, the agent API and console, the health check and the Prometheus metrics,
in front of Rasa.

`create_app` wires the parts: channels that have credentials, the inbox (in process,
or Redis with REDIS_URL), the records in SQL and the router that processes messages.
"""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Mapping, Optional
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import text

from actions.notify import outbox_path
from actions.policy import load_peak_policy, load_policy, parse_yaml_model, policy_dir
from actions.store.sql import Store, create_store_engine, open_store
from bot.handoff.console import install_agent_console
from bot.handoff.desk import HandoffDesk
from bot.handoff.events import EventBus, RedisEventBus
from bot.handoff.live import LiveQueues, RedisLiveQueues
from bot.handoff.peak import PeakMode
from bot.handoff.policy import load_handoff_policy
from bot.handoff.store import HandoffStore
from bot.messaging.inbound_limit import InboundCounter, MemoryInboundCounter, RedisInboundCounter
from bot.messaging.inbox import Inbox, RedisInbox, SqlInbox
from bot.messaging.metrics import GatewayMetrics, install_metrics
from bot.messaging.rasa_client import RasaClient
from bot.messaging.records import GatewayRecords
from bot.outreach.monitor import Monitor, load_monitor_policy
from bot.privacy import Holdings, Privacy, install_privacy, load_privacy_policy
from bot.reporting.dashboard import KpiSource, install_dashboard
from bot.reporting.kpi import load_kpi_policy
from bot.router import Router
from bot.settings import REST_TOKEN_FILE, Settings, load_settings, local_secret
from connectors.channel import Channel
from connectors.config import ChannelCredentials, ChannelPolicy, credentials_from_env
from connectors.outbound import memory_limiters, redis_limiters
from connectors.rest import RestChannel
from connectors.telegram import TelegramChannel
from connectors.twilio import TwilioChannel
from connectors.webchat import WebChatChannel
from connectors.whatsapp import WhatsAppChannel

log = logging.getLogger("bot.app")

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
ROUTER = web.AppKey("router", Router)
REDIS: web.AppKey[Optional[aioredis.Redis]] = web.AppKey("redis")
HTTP = web.AppKey("http", aiohttp.ClientSession)
MONITOR = web.AppKey("monitor", Monitor)



def load_channel_policy(directory: Optional[Path] = None) -> ChannelPolicy:
    return parse_yaml_model(ChannelPolicy, (directory or policy_dir()) / "channels.yml")


def webchat_secret(settings: Settings) -> bytes:
    """WEBCHAT_SECRET, else a random one kept in var/ so sessions survive a restart."""
    return (settings.webchat_secret or local_secret(settings.var_dir, "webchat.secret")).encode()


def rest_api_token(settings: Settings) -> str:
    """REST_API_TOKEN, else a random one kept in var/ (`make run` prints how to use it)."""
    return settings.rest_api_token or local_secret(settings.var_dir, REST_TOKEN_FILE)


def build_channels(credentials: ChannelCredentials, policy: ChannelPolicy,
                   settings: Settings, redis: Optional[aioredis.Redis] = None
                   ) -> Dict[str, Channel]:
    """The channels that have credentials. With Redis, the providers' rate limits are
    kept by all gateway processes together."""
    limiters = redis_limiters(redis) if redis is not None else memory_limiters
    channels: Dict[str, Channel] = {
        "webchat": WebChatChannel(webchat_secret(settings),
                                  settings.redis_url or None),
        "rest": RestChannel(rest_api_token(settings))}
    if credentials.twilio:
        channels["twilio"] = TwilioChannel(credentials.twilio, policy,
                                           credentials.public_base_url, limiters)
    if credentials.whatsapp:
        channels["whatsapp"] = WhatsAppChannel(credentials.whatsapp, policy, limiters)
    if credentials.telegram:
        channels["telegram"] = TelegramChannel(credentials.telegram, policy, limiters)
    return channels


def report_channels(channels: Mapping[str, Channel], env: Mapping[str, str]) -> None:
    missing = ChannelCredentials.missing(env)
    for name in sorted(set(channels) | set(missing)):
        if name in channels:
            log.info("channel %s: on", name)
        else:
            log.warning("channel %s: off (set %s)", name, ", ".join(missing[name]))


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    router = app[ROUTER]
    for channel in router.channels.values():
        await channel.start()
    await router.desk.bus.start()
    await router.desk.live.start()
    await router.inbox.start(router.process)
    await app[MONITOR].start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        app[HTTP] = session
        yield
    await app[MONITOR].stop()
    await router.inbox.stop()
    await router.desk.live.stop()
    await router.desk.bus.stop()
    for channel in router.channels.values():
        await channel.stop()
    await router.rasa.close()
    redis = app[REDIS]
    if redis is not None:
        await redis.close(close_connection_pool=True)
    app[STORE].close()
    router.records.close()


async def _component_up(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as response:
            return response.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


def _store_up(store: Store) -> bool:
    try:
        with store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:  # any driver error means "down" here
        return False


async def _redis_up(redis: Optional[aioredis.Redis]) -> Optional[bool]:
    if redis is None:
        return None
    try:
        return bool(await redis.ping())
    except aioredis.RedisError:
        return False


async def health(request: web.Request) -> web.Response:
    settings, session = request.app[SETTINGS], request.app[HTTP]
    actions_up, redis_up, *rasa_up = await asyncio.gather(
        _component_up(session, settings.action_health_url),
        _redis_up(request.app[REDIS]),
        *(_component_up(session, f"{url}/") for url in settings.rasa_urls),
    )
    components: Dict[str, Any] = {
        "gateway": True,
        # one instance up is enough to serve: the client passes over the others
        "rasa": any(rasa_up),
        "action_server": actions_up,
        "store": await asyncio.to_thread(_store_up, request.app[STORE]),
    }
    if redis_up is not None:
        components["redis"] = redis_up
    status = 200 if all(components.values()) else 503
    return web.json_response({"status": "ok" if status == 200 else "starting", **components,
                              "channels": sorted(request.app[ROUTER].channels)},
                             status=status)


# A pooled Redis connection idle longer than this is checked with a PING before use.
REDIS_IDLE_CHECK_SECONDS = 1.0
# A Redis that stops answering (its host off the network) fails a connection or a
# command after this long, so a webhook waiting on it is answered (its message goes to
# the spool) instead of hanging; a command takes a millisecond.
REDIS_TIMEOUT_SECONDS = 2.0


def connect_redis(url: str) -> aioredis.Redis:
    """A Redis client whose idle connections are checked before use and opened again
    when the check fails. After a Redis restart every idle pooled connection is dead,
    and without the check the first command on each failed, though Redis was up: a
    message went to the spool and could be overtaken by the conversation's next one,
    which another gateway put straight into Redis. A command itself is never sent
    twice: a message would be popped twice."""
    return aioredis.from_url(url, health_check_interval=REDIS_IDLE_CHECK_SECONDS,
                             retry=Retry(NoBackoff(), 1),
                             socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                             socket_timeout=REDIS_TIMEOUT_SECONDS)


def create_app(settings: Optional[Settings] = None,
               channels: Optional[Dict[str, Channel]] = None,
               policy: Optional[ChannelPolicy] = None) -> web.Application:
    """The gateway app. `channels` defaults to those the environment configures."""
    settings = settings or load_settings()
    policy = policy or load_channel_policy()
    redis = connect_redis(settings.redis_url) if settings.redis_url else None
    if channels is None:
        channels = build_channels(credentials_from_env(os.environ), policy, settings, redis)
        report_channels(channels, os.environ)
    store = open_store(settings.database_url or None)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    records = GatewayRecords(create_store_engine(settings.gateway_database_url))
    inbox: Inbox = SqlInbox(records, policy.dedupe_hours * 3600)
    inbound: InboundCounter = MemoryInboundCounter(policy.inbound_limit.per_seconds)
    if redis is not None:
        inbox = RedisInbox(redis, records, policy.dedupe_hours * 3600)
        inbound = RedisInboundCounter(redis, policy.inbound_limit.per_seconds)
    escalation = load_policy()
    handoffs = HandoffStore(records.engine)
    live = (RedisLiveQueues(handoffs, records, redis, list(escalation.teams)) if redis
            else LiveQueues(handoffs, records))
    desk = HandoffDesk(handoffs, records, load_handoff_policy(escalation), escalation, store,
                       RedisEventBus(redis) if redis else EventBus(), live,
                       PeakMode(load_peak_policy(), records, handoffs))
    metrics = GatewayMetrics(channels)
    router = Router(records, inbox,
                    RasaClient(settings.rasa_urls, settings.rasa_timeout_seconds,
                               policy.bot_requests_in_flight),
                    channels, policy, desk, metrics, inbound)

    app = web.Application(client_max_size=1024 * 1024)
    app[SETTINGS], app[STORE], app[ROUTER], app[REDIS] = settings, store, router, redis
    app[MONITOR] = Monitor.for_router(router, store, load_monitor_policy(policy))
    app.cleanup_ctx.append(_lifecycle)
    for channel in channels.values():
        channel.install(app, router)
    install_agent_console(app, desk, settings.agent_api_token)
    install_dashboard(app, KpiSource(records, settings.gateway_database_url,
                                     settings.tracker_database_url, load_kpi_policy(),
                                     ZoneInfo(desk.policy.business_hours.timezone)))
    install_privacy(app, Privacy(
        Holdings(records.engine, store.engine, settings.tracker_database_url, outbox_path()),
        load_privacy_policy(escalation), escalation.identity.default_phone_region), records)
    app.router.add_get("/health", health)
    install_metrics(app, metrics, desk, settings.metrics_token)
    return app
