"""The gateway (aiohttp): every channel's webhooks, the web chat, the Rasa-compatible
REST channel, the agent API and console, the health check and the Prometheus metrics,
in front of Rasa.

`create_app` serves the parts bot/services.py wires, and starts and stops them.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Dict, Optional
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web
from redis import asyncio as aioredis
from sqlalchemy import text

from actions.notify import outbox_path
from actions.store.sql import Store
from bot.handoff.console import install_agent_console
from bot.messaging.metrics import install_metrics
from bot.outreach.carriers import CarrierWebhooks
from bot.outreach.schedule import Monitor
from bot.outreach.store_hooks import StoreWebhooks
from bot.privacy import Holdings, Privacy, install_privacy
from bot.reporting.dashboard import KpiSource, install_dashboard
from bot.router import Router
from bot.services import Services, build_services
from bot.settings import Settings
from connectors.channel import Channel
from connectors.config import ChannelPolicy

log = logging.getLogger("bot.app")

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
ROUTER = web.AppKey("router", Router)
REDIS: web.AppKey[Optional[aioredis.Redis]] = web.AppKey("redis")
HTTP = web.AppKey("http", aiohttp.ClientSession)
MONITOR = web.AppKey("monitor", Monitor)
CARRIERS = web.AppKey("carriers", CarrierWebhooks)
STORE_HOOKS = web.AppKey("store_hooks", StoreWebhooks)
SERVICES = web.AppKey("services", Services)



async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    router = app[ROUTER]
    for channel in router.channels.values():
        await channel.start()
    await router.desk.bus.start()
    await router.desk.live.start()
    await router.desk.target.start()
    await router.inbox.start(router.process)
    await app[MONITOR].start()
    await app[CARRIERS].start()
    await app[STORE_HOOKS].start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        app[HTTP] = session
        yield
    for channel in router.channels.values():
        await channel.stop()
    await app[SERVICES].close()


async def _stop_background_work(app: web.Application) -> None:
    """On shutdown, before aiohttp waits (up to its shutdown timeout) for every task to
    end: the monitors' schedule, the inbox (turns under way may finish, within its
    grace; the rest stays kept for the next start), the live queues and the event bus.
    Left to the cleanup, a monitor waiting for its first run held a stop for 30 s."""
    router = app[ROUTER]
    await app[MONITOR].stop()
    await app[CARRIERS].stop()
    await app[STORE_HOOKS].stop()
    await router.inbox.stop()
    await router.desk.target.stop()
    await router.desk.live.stop()
    await router.desk.bus.stop()


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


def create_app(settings: Optional[Settings] = None,
               channels: Optional[Dict[str, Channel]] = None,
               policy: Optional[ChannelPolicy] = None) -> web.Application:
    """The gateway app on `build_services`' parts."""
    services = build_services(settings, channels, policy)
    settings, store, records, router = (services.settings, services.store, services.records,
                                        services.router)
    desk, policies = services.desk, services.policies
    app = web.Application(client_max_size=1024 * 1024)
    app[SERVICES] = services
    app[SETTINGS], app[STORE], app[ROUTER], app[REDIS] = settings, store, router, services.redis
    app[MONITOR] = Monitor.for_router(router, services.shop, policies.outreach)
    # the carrier-tracking services' webhooks whose secret is set
    app[CARRIERS] = CarrierWebhooks(app[MONITOR].outreach, {
        "easypost": settings.easypost_webhook_secret,
        "aftership": settings.aftership_webhook_secret})
    app[CARRIERS].install(app)
    # the store platforms' webhooks whose secret is set: they end what the order cache
    # kept of an order (in Redis), and tell a parcel the platform reports in trouble
    app[STORE_HOOKS] = StoreWebhooks(app[MONITOR].outreach, {
        "shopify": settings.shopify_webhook_secret,
        "woocommerce": settings.woocommerce_webhook_secret}, services.redis,
        settings.shopify_shop)
    app[STORE_HOOKS].install(app)
    app.cleanup_ctx.append(_lifecycle)
    # aiosignal's generics disagree with aiohttp 3.9's annotation of on_shutdown
    app.on_shutdown.append(_stop_background_work)  # type: ignore[arg-type, unused-ignore]
    for channel in router.channels.values():
        channel.install(app, router)
    install_agent_console(app, desk, settings.agent_api_token)
    if services.helpdesk_webhook is not None:
        services.helpdesk_webhook.install(app)
    install_dashboard(app, KpiSource(records, settings.gateway_database_url,
                                     settings.tracker_database_url, policies.kpis,
                                     ZoneInfo(desk.policy.business_hours.timezone)))
    install_privacy(app, Privacy(
        Holdings(records.engine, store.engine, settings.tracker_database_url, outbox_path()),
        policies.privacy, policies.escalation.identity.default_phone_region), records)
    app.router.add_get("/health", health)
    install_metrics(app, services.metrics, desk.queues, settings.metrics_token)
    return app
