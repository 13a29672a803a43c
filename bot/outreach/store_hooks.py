"""The store platforms' webhooks: what Shopify or WooCommerce says changed of an order
ends what the order cache kept of it (actions/store/cache.py), and a parcel the
platform reports in trouble reaches the customer through the shipments' outreach, as
a carrier's report does (bot/outreach/carriers.py, Outreach.carrier_reported).

- `POST /webhooks/shopify` (SHOPIFY_WEBHOOK_SECRET): X-Shopify-Hmac-Sha256 is the
  base64 HMAC-SHA256 of the raw body, keyed with the app's secret; X-Shopify-Webhook-Id
  names the delivery (a retry has the same); X-Shopify-Topic says what it is;
  X-Shopify-Shop-Domain must be SHOPIFY_SHOP when that is set. Topics read:
  orders/* (updated, cancelled, fulfilled, …), fulfillments/create and /update,
  fulfillment_events/create, refunds/create, returns/*. Others are acknowledged and
  ignored.
- `POST /webhooks/woocommerce` (WOOCOMMERCE_WEBHOOK_SECRET): X-WC-Webhook-Signature is
  the base64 HMAC-SHA256 of the raw body, keyed with the webhook's secret;
  X-WC-Webhook-Delivery-ID names the delivery; X-WC-Webhook-Topic (order.updated, …)
  says what it is: order.* topics are read, others acknowledged and ignored. The ping
  WooCommerce sends when the webhook is saved (a form body `webhook_id=<id>`, unsigned)
  is answered 200 and nothing is kept (signed or not: it names no order).

A missing or wrong signature (or another shop) is refused with 401, a signed body that
is not such an event with 400; both are logged without the body. An event is kept
(`store_events`, unique on platform and delivery id) before it is acknowledged, and
handled in the background (kept_events.py: retried, then set aside).

Handling an event: the order's keys are deleted from Redis (with REDIS_URL; the
action server's in-process cache cannot be reached from here, and its TTL bounds how
long a changed order may be told as it was). A Shopify fulfilment whose shipment status
is a delivery exception (attempted delivery, failure, delayed) is told as the carrier's
report would be, on the platform's order (once per order, business hours, opt-outs).
Cancellations and refunds are not told: the bot made many of them itself and has no
message for the others; the next turn about the order reads them afresh.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from aiohttp import web
from redis import asyncio as aioredis

from actions.store.cache import id_key, order_keys
from actions.store.types import DeliveryException, Tracking, TrackingStatus
from bot.outreach.carriers import decode_tracking, encode_tracking
from bot.outreach.kept_events import (
    SWEEP_SECONDS,
    WAITING,
    KeptEvents,
    Malformed,
    read_body,
    refused,
    signed,
)
from bot.outreach.run import Outreach
from bot.outreach.tables import store_events

log = logging.getLogger("bot.outreach.store_hooks")

# Shopify's resources whose events name an order (the topic's first part)
SHOPIFY_RESOURCES = ("orders", "fulfillments", "fulfillment_events", "refunds", "returns")
# a Shopify fulfilment's shipment_status, in the tracking vocabulary
SHOPIFY_SHIPMENT_STATUSES = {
    "label_printed": TrackingStatus.PRE_TRANSIT,
    "label_purchased": TrackingStatus.PRE_TRANSIT,
    "confirmed": TrackingStatus.IN_TRANSIT,
    "in_transit": TrackingStatus.IN_TRANSIT,
    "out_for_delivery": TrackingStatus.OUT_FOR_DELIVERY,
    "ready_for_pickup": TrackingStatus.AVAILABLE_FOR_PICKUP,
    "attempted_delivery": TrackingStatus.ATTEMPTED_DELIVERY,
    "delayed": TrackingStatus.EXCEPTION,
    "failure": TrackingStatus.FAILURE,
    "delivered": TrackingStatus.DELIVERED,
}
PING = re.compile(rb"webhook_id=\d{1,20}")


def platform_signature(secret: str, body: bytes) -> str:
    """Shopify's and WooCommerce's: the base64 HMAC-SHA256 of the raw body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@dataclass(frozen=True)
class StoreEvent:
    """What a platform's webhook says, as kept: which order (its number as the
    platform names it, and/or the platform's id of it) and, for a Shopify fulfilment,
    its parcel."""

    event_id: str
    topic: str
    number: str
    platform_id: str
    tracking: Optional[Tracking] = None


def shopify_event(event_id: str, topic: str, body: bytes) -> Optional[StoreEvent]:
    resource = topic.split("/", 1)[0]
    if resource not in SHOPIFY_RESOURCES:
        return None
    payload = _json(body)
    number, platform_id = "", ""
    tracking = None
    if resource == "orders":
        number = _digits(payload.get("name") or payload.get("order_number"))
        platform_id = _digits(payload.get("id"))
    elif resource == "fulfillments":
        # "#1001.1": the order's name, then the fulfilment's number
        number = _digits(str(payload.get("name") or "").split(".", 1)[0])
        platform_id = _digits(payload.get("order_id"))
        tracking = _fulfilment_tracking(payload)
    elif resource == "returns":
        order = payload.get("order")
        order = order if isinstance(order, dict) else {}
        number = _digits(str(payload.get("name") or "").split("-R", 1)[0])
        platform_id = _digits(order.get("id") or payload.get("order_id"))
    else:  # refunds, fulfillment_events
        platform_id = _digits(payload.get("order_id"))
    if not number and not platform_id:
        raise Malformed(f"the {topic} body names no order")
    return StoreEvent(event_id, topic, number, platform_id, tracking)


def woocommerce_event(event_id: str, topic: str, body: bytes) -> Optional[StoreEvent]:
    if topic.split(".", 1)[0] != "order":
        return None
    payload = _json(body)
    number = _digits(payload.get("number") or payload.get("id"))
    if not number:
        raise Malformed(f"the {topic} body is not an order")
    return StoreEvent(event_id, topic, number, _digits(payload.get("id")))


def _fulfilment_tracking(payload: Mapping[str, Any]) -> Optional[Tracking]:
    status = SHOPIFY_SHIPMENT_STATUSES.get(str(payload.get("shipment_status") or ""))
    number = payload.get("tracking_number")
    if status is None or not isinstance(number, str) or not number:
        return None
    return Tracking(tracking_number=number[:64],
                    carrier=str(payload.get("tracking_company") or ""), status=status,
                    public_url=str(payload.get("tracking_url") or ""),
                    provider_status=str(payload.get("shipment_status")))


def _json(body: bytes) -> Dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError as error:
        raise Malformed("the body is not JSON") from error
    if not isinstance(payload, dict):
        raise Malformed("the body is not a JSON object")
    return payload


def _digits(value: Any) -> str:
    return "".join(c for c in str(value if value is not None else "") if c.isdigit())[:32]


class StoreWebhooks(KeptEvents):
    """The webhooks of the platforms whose secret is set, and the background work that
    handles what they say."""

    task_name = "store-events"
    what = "store events"

    def __init__(self, outreach: Outreach, secrets: Mapping[str, str],
                 redis: Optional[aioredis.Redis],
                 shopify_shop: str = "", clock: Callable[[], float] = time.time,
                 sweep_seconds: float = SWEEP_SECONDS) -> None:
        super().__init__(outreach.records, store_events, log, clock, sweep_seconds)
        self.outreach = outreach
        self.secrets = {name: secret for name, secret in secrets.items() if secret}
        self.redis = redis
        self.shopify_shop = shopify_shop.strip().lower()
        self.letter = outreach.escalation.identity.order_number_letter.upper()

    @property
    def enabled(self) -> bool:
        return bool(self.secrets)

    def install(self, app: web.Application) -> None:
        if "shopify" in self.secrets:
            app.router.add_post("/webhooks/shopify", self.receive_shopify)
        if "woocommerce" in self.secrets:
            app.router.add_post("/webhooks/woocommerce", self.receive_woocommerce)
        if self.secrets and self.redis is None:
            log.info("store webhooks without REDIS_URL: the action server's order cache "
                     "is in its memory, out of their reach (order_cache.ttl_seconds "
                     "bounds how long a changed order may be told as it was)")

    # -- receiving --------------------------------------------------------------------

    async def receive_shopify(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        headers = request.headers
        if not signed(headers.get("X-Shopify-Hmac-Sha256", ""),
                      platform_signature(self.secrets["shopify"], body)):
            return refused(log, "shopify")
        shop = headers.get("X-Shopify-Shop-Domain", "").strip().lower()
        if self.shopify_shop and shop != self.shopify_shop:
            return refused(log, "shopify", "not the shop SHOPIFY_SHOP names")
        return await self._accept("shopify", headers.get("X-Shopify-Webhook-Id", ""),
                                  headers.get("X-Shopify-Topic", ""), body, shopify_event)

    async def receive_woocommerce(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        headers = request.headers
        if PING.fullmatch(body.strip()):  # signed or not: nothing is kept of it
            log.info("woocommerce webhook ping: answered")
            return web.json_response({"ok": True, "ping": True})
        if not signed(headers.get("X-WC-Webhook-Signature", ""),
                      platform_signature(self.secrets["woocommerce"], body)):
            return refused(log, "woocommerce")
        return await self._accept("woocommerce",
                                  headers.get("X-WC-Webhook-Delivery-ID", ""),
                                  headers.get("X-WC-Webhook-Topic", ""), body,
                                  woocommerce_event)

    async def _accept(self, provider: str, event_id: str, topic: str, body: bytes,
                      read: Callable[[str, str, bytes], Optional[StoreEvent]]
                      ) -> web.Response:
        event_id, topic = event_id.strip(), topic.strip().lower()
        try:
            if not event_id or not topic:
                raise Malformed("the delivery id or the topic is missing")
            event = read(event_id, topic, body)
        except Malformed as error:
            log.warning("refused a %s webhook: %s", provider, error)
            raise web.HTTPBadRequest(text=str(error)) from error
        if event is None:
            log.info("%s webhook %s (%s): acknowledged, not read", provider, event_id,
                     topic[:64])
            return web.json_response({"ok": True, "ignored": True})
        kept = await self.records.write(self.keep, provider, event_id, {
            "topic": topic[:64], "order_number": event.number,
            "order_platform_id": event.platform_id,
            "tracking": encode_tracking(event.tracking) if event.tracking else ""})
        if not kept:
            log.info("%s event %s again: acknowledged, already kept", provider, event_id)
            return web.json_response({"ok": True, "duplicate": True})
        log.info("%s event %s kept: %s", provider, event_id, topic)
        self.wake()
        return web.json_response({"ok": True})

    # -- handling ---------------------------------------------------------------------

    async def handle(self, row: Mapping[str, Any]) -> str:
        provider, topic = row["provider"], row["topic"]
        forgotten, number = await self.forget(provider, row["order_number"],
                                              row["order_platform_id"])
        log.info("%s %s of order %s: %s", provider, topic, number or "?", forgotten)
        if not row["tracking"] or not number:
            return forgotten
        tracking = decode_tracking(row["tracking"])
        if tracking.status.exception is DeliveryException.NONE:
            return forgotten
        report = await self.outreach.carrier_reported(f"{self.letter}{number}", tracking)
        if report.outside_hours:
            return WAITING
        return ("lost" if report.lost else
                report.attempts[0].result if report.attempts else "nothing_to_tell")

    async def forget(self, provider: str, number: str, platform_id: str) -> Tuple[str, str]:
        """Delete what the order cache keeps of the order, in Redis: (what became of it,
        the order's number when known). forgotten: its keys are deleted; not_kept: a
        Shopify order named by id only, which the cache does not hold; no_shared_cache:
        without REDIS_URL (the action server's memory is out of reach)."""
        if self.redis is None:
            return "no_shared_cache", number
        if not number and platform_id:
            found = await self.redis.get(id_key(provider, platform_id))
            number = str(json.loads(found)) if found is not None else ""  # as kept: JSON
        if not number:
            return "not_kept", ""
        await self.redis.delete(*order_keys(provider, number))
        return "forgotten", number
