"""The gateway's parts, wired once: channels with credentials, the inbox (in SQL, or in
Redis with REDIS_URL), the records, the handoff desk, the Rasa client and the router.
`bot serve` serves them (bot/app.py); `bot monitor` runs outreach on them without
serving, so it takes no customer's message."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Union

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from actions.store.backend import platform_policy, systems_on
from actions.store.sql import Store, open_store
from actions.store.types import StoreSystems
from bot.handoff.chatwoot.api import ChatwootApi
from bot.handoff.chatwoot.links import ChatwootLinks
from bot.handoff.chatwoot.target import ChatwootTarget
from bot.handoff.chatwoot.webhook import ChatwootWebhook
from bot.handoff.desk import HandoffDesk
from bot.handoff.events import EventBus, RedisEventBus
from bot.handoff.freshdesk.api import FreshdeskApi
from bot.handoff.freshdesk.links import FreshdeskLinks
from bot.handoff.freshdesk.target import FreshdeskTarget
from bot.handoff.freshdesk.webhook import FreshdeskWebhook
from bot.handoff.live import LiveQueues, RedisLiveQueues
from bot.handoff.peak import PeakMode
from bot.handoff.store import HandoffStore
from bot.handoff.zendesk.api import SunshineApi
from bot.handoff.zendesk.links import ZendeskLinks
from bot.handoff.zendesk.target import ZendeskTarget
from bot.handoff.zendesk.webhook import ZendeskWebhook
from bot.messaging.inbound_limit import InboundCounter, MemoryInboundCounter, RedisInboundCounter
from bot.messaging.inbox import Inbox, RedisInbox, SqlInbox
from bot.messaging.metrics import GatewayMetrics
from bot.messaging.rasa_client import RasaClient
from bot.messaging.records import GatewayRecords
from bot.outreach.policy import MonitorName, MonitorPolicy
from bot.outreach.report import RunReport
from bot.outreach.run import Outreach
from bot.policies import Policies, load_policies
from bot.router import Router
from bot.settings import REST_TOKEN_FILE, Settings, SettingsError, load_settings, local_secret
from common.sql import create_store_engine
from connectors.channel import Channel
from connectors.config import ChannelCredentials, ChannelPolicy, credentials_from_env
from connectors.outbound import memory_limiters, redis_limiters
from connectors.rest import RestChannel
from connectors.telegram import TelegramChannel
from connectors.twilio import TwilioChannel
from connectors.webchat import WebChatChannel
from connectors.whatsapp import WhatsAppChannel

log = logging.getLogger("bot.services")
# the webhook route of the helpdesk HANDOFF_TARGET names
HelpdeskWebhook = Union[ChatwootWebhook, FreshdeskWebhook, ZendeskWebhook]


@dataclass
class Services:
    settings: Settings
    policies: Policies
    store: Store
    # the order platform (STORE_BACKEND): what the agents' order snapshots and the
    # monitors read; the data requests use `store`, the bot's own records
    shop: StoreSystems
    records: GatewayRecords
    redis: Optional[aioredis.Redis]
    desk: HandoffDesk
    metrics: GatewayMetrics
    router: Router
    # the helpdesk's webhook, when HANDOFF_TARGET names one
    helpdesk_webhook: Optional[HelpdeskWebhook] = None

    async def close(self) -> None:
        """Release what `build_services` opened (its channels are started and stopped
        by whoever runs them)."""
        await self.router.rasa.close()
        await self.desk.target.stop()
        if self.redis is not None:
            await self.redis.close(close_connection_pool=True)
        self.shop.close()
        self.store.close()
        self.records.close()


def build_services(settings: Optional[Settings] = None,
                   channels: Optional[Dict[str, Channel]] = None,
                   policy: Optional[ChannelPolicy] = None) -> Services:
    """The gateway's parts. `channels` defaults to those the environment configures."""
    settings = settings or load_settings()
    policies = load_policies()
    if policy is not None:
        policies = policies.with_channels(policy)
    policy = policies.channels
    redis = connect_redis(settings.redis_url) if settings.redis_url else None
    if channels is None:
        channels = build_channels(credentials_from_env(os.environ), policy, settings, redis)
        report_channels(channels, os.environ)
    store = open_store(settings.database_url or None)
    shop = systems_on(store, os.environ, platform_policy(policies.escalation, keep_orders=False))
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    records = GatewayRecords(create_store_engine(settings.gateway_database_url))
    inbox: Inbox = SqlInbox(records, policy.dedupe_hours * 3600)
    inbound: InboundCounter = MemoryInboundCounter(policy.inbound_limit.per_seconds)
    if redis is not None:
        inbox = RedisInbox(redis, records, policy.dedupe_hours * 3600)
        inbound = RedisInboundCounter(redis, policy.inbound_limit.per_seconds)
    escalation = policies.escalation
    handoffs = HandoffStore(records.engine)
    live = (RedisLiveQueues(handoffs, records, redis, list(escalation.teams)) if redis
            else LiveQueues(handoffs, records))
    desk = HandoffDesk(handoffs, records, policies.handoff, escalation, shop,
                       RedisEventBus(redis) if redis else EventBus(), live,
                       PeakMode(policies.peak, records, handoffs))
    webhook = connect_handoff_target(settings, policies, desk)
    metrics = GatewayMetrics(channels)
    router = Router(records, inbox,
                    RasaClient(settings.rasa_urls, settings.rasa_timeout_seconds,
                               policy.bot_requests_in_flight, policy.bot_queue_seconds),
                    channels, policy, desk, metrics, inbound)

    return Services(settings, policies, store, shop, records, redis, desk, metrics, router,
                    webhook)


def connect_handoff_target(settings: Settings, policies: Policies,
                           desk: HandoffDesk) -> Optional[HelpdeskWebhook]:
    """HANDOFF_TARGET: the console (nothing to connect), or Chatwoot, Freshdesk or
    Zendesk, whose webhook the gateway then serves."""
    if settings.handoff_target == "console":
        return None
    if settings.handoff_target == "freshdesk":
        return connect_freshdesk(settings, policies, desk)
    if settings.handoff_target == "zendesk":
        return connect_zendesk(settings, policies, desk)
    chatwoot, policy = settings.chatwoot, policies.helpdesk.chatwoot
    if chatwoot is None:
        raise SettingsError("HANDOFF_TARGET=chatwoot needs the CHATWOOT_ variables")
    if policy is None:
        raise SettingsError("HANDOFF_TARGET=chatwoot needs a `chatwoot` section in "
                            "policy/helpdesk.yml")
    links = ChatwootLinks(desk.records.engine)
    desk.target = ChatwootTarget(ChatwootApi(chatwoot), links, desk, policy)
    log.info("handoffs go to Chatwoot inbox %s", chatwoot.inbox_id)
    return ChatwootWebhook(desk, links, chatwoot.webhook_secret, policy.resolved_disposition)


def connect_freshdesk(settings: Settings, policies: Policies,
                      desk: HandoffDesk) -> FreshdeskWebhook:
    freshdesk, policy = settings.freshdesk, policies.helpdesk.freshdesk
    if freshdesk is None:
        raise SettingsError("HANDOFF_TARGET=freshdesk needs the FRESHDESK_ variables")
    if policy is None:
        raise SettingsError("HANDOFF_TARGET=freshdesk needs a `freshdesk` section in "
                            "policy/helpdesk.yml")
    target = FreshdeskTarget(FreshdeskApi(freshdesk), FreshdeskLinks(desk.records.engine),
                             desk, policy)
    desk.target = target
    log.info("handoffs go to Freshdesk at %s", freshdesk.api_url)
    return FreshdeskWebhook(target, freshdesk.webhook_secret)


def connect_zendesk(settings: Settings, policies: Policies,
                    desk: HandoffDesk) -> ZendeskWebhook:
    zendesk, policy = settings.zendesk, policies.helpdesk.zendesk
    if zendesk is None:
        raise SettingsError("HANDOFF_TARGET=zendesk needs the ZENDESK_SUNCO_ variables")
    if policy is None:
        raise SettingsError("HANDOFF_TARGET=zendesk needs a `zendesk` section in "
                            "policy/helpdesk.yml")
    target = ZendeskTarget(SunshineApi(zendesk), ZendeskLinks(desk.records.engine), desk,
                           policy)
    desk.target = target
    log.info("handoffs go to Zendesk through Sunshine Conversations app %s at %s",
             zendesk.app_id, zendesk.api_url)
    return ZendeskWebhook(target, zendesk.webhook_secret, zendesk.app_id)


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


# A pooled Redis connection idle longer than this is checked with a PING before use.
REDIS_IDLE_CHECK_SECONDS = 1.0
# A Redis that stops answering (its host off the network) fails a connection or a
# command after this long, so a webhook waiting on it is answered (its message goes to
# the spool) instead of hanging; a command takes a millisecond.
REDIS_TIMEOUT_SECONDS = 2.0
# redis-py 4's own default; the gateway's concurrency is bounded by its turns, not here
REDIS_MAX_CONNECTIONS = 2**31


def connect_redis(url: str) -> aioredis.Redis:
    """A Redis client whose idle connections are checked before use and opened again
    when the check fails. After a Redis restart every idle pooled connection is dead,
    and without the check the first command on each failed, though Redis was up: a
    message went to the spool and could be overtaken by the conversation's next one,
    which another gateway put straight into Redis. A command that timed out is never
    sent again (it may still run, and a message would be popped twice): redis-py 6 and
    later retry commands with this same policy, so it names the broken connection
    alone, which redis-py 4 retried only at the check. The pool is not capped: redis-py 6
    and later cap it at 100 connections and fail the next command at once, which under
    200 conversations paused the inbox; each turn's commands hold a connection briefly."""
    return aioredis.from_url(url, health_check_interval=REDIS_IDLE_CHECK_SECONDS,
                             max_connections=REDIS_MAX_CONNECTIONS,
                             retry=Retry(NoBackoff(), 1,
                                         supported_errors=(RedisConnectionError,)),
                             socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                             socket_timeout=REDIS_TIMEOUT_SECONDS)


async def run_once(monitor: MonitorName, settings: Optional[Settings] = None,
                   policy: Optional[MonitorPolicy] = None) -> RunReport:
    """`bot monitor shipments|products|promises`: one run on the gateway's parts as `bot
    serve` wires them (channels from the environment, records, handoff desk, event bus,
    router) but not serving: only its channels are started, not the inbox, so this
    process takes no customer's message."""
    services = build_services(settings)
    router = services.router
    try:
        for channel in router.channels.values():
            await channel.start()
        outreach = Outreach.for_router(router, services.shop,
                                       policy or services.policies.outreach)
        return await outreach.run(monitor)
    finally:
        for channel in router.channels.values():
            await channel.stop()
        await services.close()
