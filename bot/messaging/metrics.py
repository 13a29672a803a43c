"""The gateway's metrics in Prometheus format, served at `GET /metrics`.

`GatewayMetrics` owns its own registry (not prometheus_client's global one), so each
gateway app, and each app a test process starts, counts alone. The gateway reports
through a few typed methods: a webhook answered (the middleware below), a message
processed and a reply sent or refused (the router), a provider's delivery report (the
router). Queue depth and SLA breaches are read from the handoff desk at scrape time.

Labels are channel (connector) names, HTTP status codes, delivery statuses and queue
names only, all from small fixed sets: never an address, a chat or conversation id,
or text. A path no route matches is not counted, so a caller cannot invent labels.
"""
from __future__ import annotations

import hmac
import logging
import time
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from sqlalchemy.exc import SQLAlchemyError

from bot.web import bearer_token
from connectors.message import Delivery

# the handoff queues' figures at scrape time (HandoffDesk.queues), read from above
QueueFigures = Callable[[], Awaitable[List[Dict[str, Any]]]]

log = logging.getLogger("bot.messaging.metrics")

METRICS_PATH = "/metrics"
# Routes under this prefix are channels' webhooks: /webhooks/<channel>[/...].
WEBHOOK_PREFIX = "/webhooks/"

# What a send can end in (delivered and read come later, in provider reports).
SEND_OUTCOMES = ("sent", "failed", "blocked")
# Provider delivery reports counted by name; anything else counts as "other".
REPORTED_STATUSES = frozenset({"queued", "accepted", "sending", "sent", "delivered", "read",
                               "failed", "undelivered", "canceled"})
QUEUE_STATUSES = ("waiting", "active")

# An acknowledgement takes milliseconds, a REST turn waits on the bot; processing can
# wait on rate limits and, with the bot down, on bot_retry_seconds (20 s by default).
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROCESSING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


class GatewayMetrics:
    def __init__(self, channels: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        # the process_* and python_* series the global registry would have
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.webhook_requests = Counter(
            "gateway_webhook_requests_total",
            "Webhook requests answered, by channel and HTTP status code.",
            ["channel", "code"], registry=self.registry)
        self.webhook_seconds = Histogram(
            "gateway_webhook_duration_seconds",
            "Seconds the gateway took to answer a webhook (the acknowledgement; for REST, "
            "the bot's whole turn), by channel.",
            ["channel"], buckets=WEBHOOK_BUCKETS, registry=self.registry)
        self.processing_seconds = Histogram(
            "gateway_inbound_processing_seconds",
            "Seconds from a message's arrival to the bot's replies being handed to its "
            "channel, queueing included, by channel. Arrival is the webhook's (for the "
            "WhatsApp Cloud API, the provider's timestamp of the message).",
            ["channel"], buckets=PROCESSING_BUCKETS, registry=self.registry)
        self.outbound = Counter(
            "gateway_outbound_messages_total",
            "Provider messages the gateway sent to customers (bot and agent replies), by "
            "channel and outcome: sent, failed (every attempt failed), blocked (not tried: "
            "the customer opted out or blocked the bot).",
            ["channel", "status"], registry=self.registry)
        self.status_reports = Counter(
            "gateway_outbound_status_reports_total",
            "Providers' later reports on messages sent (delivered, read, failed, "
            "undelivered, ...), by channel and status.",
            ["channel", "status"], registry=self.registry)
        self.queue_depth = Gauge(
            "gateway_handoff_queue_depth",
            "Open handoffs per queue and status (waiting for an agent, active with one).",
            ["queue", "status"], registry=self.registry)
        self.sla_breaches = Gauge(
            "gateway_handoff_sla_breaches",
            "Open handoffs per queue past their SLA due time without a first response.",
            ["queue"], registry=self.registry)
        for channel in channels:  # known series exist from the start, at zero
            self.processing_seconds.labels(channel)
            for status in SEND_OUTCOMES:
                self.outbound.labels(channel, status)

    # what the gateway reports

    def webhook_answered(self, channel: str, code: int, seconds: float) -> None:
        self.webhook_requests.labels(channel, str(code)).inc()
        self.webhook_seconds.labels(channel).observe(seconds)

    def processed(self, channel: str, arrived_at: float) -> None:
        """A message's replies were handed to its channel; `arrived_at` is epoch seconds."""
        self.processing_seconds.labels(channel).observe(max(0.0, time.time() - arrived_at))

    def sent(self, channel: str, outcomes: Sequence[Delivery]) -> None:
        for outcome in outcomes:
            self.outbound.labels(channel, outcome.status).inc()

    def status_reported(self, channel: str, status: str) -> None:
        self.status_reports.labels(
            channel, status if status in REPORTED_STATUSES else "other").inc()

    # scraping

    async def exposition(self, read_queues: QueueFigures) -> bytes:
        """Everything, in the text format, with the handoff queues as they are now."""
        try:
            queues = await read_queues()
        except SQLAlchemyError as error:
            log.warning("metrics: handoff queues unreadable: %s", type(error).__name__)
            # absent rather than stale: an alert on absent() notices
            self.queue_depth.clear()
            self.sla_breaches.clear()
        else:
            for queue in queues:
                for status in QUEUE_STATUSES:
                    self.queue_depth.labels(queue["queue"], status).set(queue[status])
                self.sla_breaches.labels(queue["queue"]).set(queue["breached"])
        return generate_latest(self.registry)


def webhook_channel(request: web.Request) -> Optional[str]:
    """The channel of the matched route `/webhooks/<channel>[/...]`, else None (other
    routes, and paths no route matches: those must not create labels)."""
    resource = request.match_info.route.resource
    if resource is None or not resource.canonical.startswith(WEBHOOK_PREFIX):
        return None
    return resource.canonical[len(WEBHOOK_PREFIX):].split("/", 1)[0] or None


def webhook_middleware(metrics: GatewayMetrics) -> Middleware:
    """Counts every webhook's answer and times it, whatever the channel's handler."""
    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        channel = webhook_channel(request)
        if channel is None:
            return await handler(request)
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as error:  # the channels' 400s and 403s are raised
            metrics.webhook_answered(channel, error.status, time.perf_counter() - started)
            raise
        except Exception:  # aiohttp answers it with a 500
            metrics.webhook_answered(channel, 500, time.perf_counter() - started)
            raise
        metrics.webhook_answered(channel, response.status, time.perf_counter() - started)
        return response

    return measure


def install_metrics(app: web.Application, metrics: GatewayMetrics,
                    read_queues: QueueFigures, token: str) -> None:
    """`GET /metrics` and the webhook middleware. With a token, scrapes must present
    `Authorization: Bearer <token>`; without one the endpoint is open, for a gateway
    whose /metrics only the monitoring network can reach."""
    async def scrape(request: web.Request) -> web.Response:
        if token and not _bearer_matches(request, token):
            raise web.HTTPUnauthorized(text="a valid bearer token is required\n",
                                       headers={"WWW-Authenticate": "Bearer"})
        return web.Response(body=await metrics.exposition(read_queues),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.middlewares.append(webhook_middleware(metrics))
    app.router.add_get(METRICS_PATH, scrape)


def _bearer_matches(request: web.Request, token: str) -> bool:
    presented = bearer_token(request)
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())
