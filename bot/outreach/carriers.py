"""The carrier-tracking services' webhooks: what a carrier reports of a parcel reaches
the customer at once when it is a delivery exception, under the shipments' outreach
policy (bot/outreach/run.py `carrier_reported`).

- `POST /webhooks/easypost` (EASYPOST_WEBHOOK_SECRET): EasyPost's `tracker.updated`
  (and `tracker.created`) Events. X-Hmac-Signature is "hmac-sha256-hex=" and the hex
  HMAC-SHA256 of the raw body, keyed with the secret normalised to NFKD (as EasyPost's
  client libraries check it). The Event's `id` names the delivery.
- `POST /webhooks/aftership` (AFTERSHIP_WEBHOOK_SECRET): AfterShip Tracking's
  `tracking_update`. aftership-hmac-sha256 is the base64 HMAC-SHA256 of the raw body,
  keyed with the secret. `event_id` names the delivery.

A missing or wrong signature is refused with 401, a signed body that is not such an
event with 400; both are logged without any of the body. Other events are acknowledged
and ignored. An event is kept (`carrier_events`, unique on provider and event id) before
it is acknowledged: a provider's retry is acknowledged and not told twice, and an event
kept before a crash is taken up at the next start. Events are told in the background,
oldest first; one that comes outside business hours (only_in_business_hours) waits, kept,
until they open.

The order: the one the tracking names (AfterShip's `order_number`, which shops'
integrations fill), else the store's order shipped with that tracking number.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import unicodedata
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from aiohttp import web

from actions.store.tracking import aftership, easypost
from actions.store.types import Tracking, TrackingEvent, TrackingStatus, normalize_order_id
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
from bot.outreach.shipments import as_one_turn
from bot.outreach.tables import carrier_events

log = logging.getLogger("bot.outreach.carriers")

EASYPOST_EVENTS = ("tracker.updated", "tracker.created")
AFTERSHIP_EVENTS = ("tracking_update",)


def easypost_signature(secret: str, body: bytes) -> str:
    key = unicodedata.normalize("NFKD", secret).encode()
    return "hmac-sha256-hex=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def aftership_signature(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# A carrier's report, as kept: (event id, tracking, order reference), or None when the
# event is not one to tell (another kind of event).
Report = Optional[Tuple[str, Tracking, str]]


def easypost_report(body: bytes) -> Report:
    event = _json(body)
    event_id, kind = event.get("id"), event.get("description")
    if not isinstance(event_id, str) or not event_id or not isinstance(kind, str):
        raise Malformed("the body is not an EasyPost Event")
    if kind not in EASYPOST_EVENTS:
        return None
    tracker = event.get("result")
    if not isinstance(tracker, dict) or not isinstance(tracker.get("tracking_code"), str) \
            or not tracker["tracking_code"]:
        raise Malformed("the Event's result is not a Tracker")
    return event_id, easypost.tracking_of(tracker), ""


def aftership_report(body: bytes) -> Report:
    event = _json(body)
    event_id, kind = event.get("event_id"), event.get("event")
    if not isinstance(event_id, str) or not event_id or not isinstance(kind, str):
        raise Malformed("the body is not an AfterShip webhook")
    if kind not in AFTERSHIP_EVENTS:
        return None
    tracking = event.get("msg")
    if not isinstance(tracking, dict) or not isinstance(tracking.get("tracking_number"), str) \
            or not tracking["tracking_number"]:
        raise Malformed("the webhook's msg is not a tracking")
    order = tracking.get("order_number") or tracking.get("order_id") or ""
    return event_id, aftership.tracking_of(tracking), str(order)[:64]


def _json(body: bytes) -> Dict[str, Any]:
    try:
        event = json.loads(body)
    except ValueError as error:
        raise Malformed("the body is not JSON") from error
    if not isinstance(event, dict):
        raise Malformed("the body is not a JSON object")
    return event


def encode_tracking(tracking: Tracking) -> str:
    fields = asdict(tracking)
    fields["status"] = tracking.status.value
    fields["events"] = [{"time": e.time.isoformat(), "location": e.location,
                         "description": e.description} for e in tracking.events]
    fields["estimated_delivery"] = (tracking.estimated_delivery.isoformat()
                                    if tracking.estimated_delivery else None)
    fields["delivered_at"] = (tracking.delivered_at.isoformat()
                              if tracking.delivered_at else None)
    return json.dumps(fields)


def decode_tracking(raw: str) -> Tracking:
    fields = json.loads(raw)
    fields["status"] = TrackingStatus(fields["status"])
    fields["events"] = tuple(TrackingEvent(time=datetime.fromisoformat(e["time"]),
                                           location=e["location"],
                                           description=e["description"])
                             for e in fields["events"])
    if fields["estimated_delivery"]:
        fields["estimated_delivery"] = date.fromisoformat(fields["estimated_delivery"])
    if fields["delivered_at"]:
        fields["delivered_at"] = datetime.fromisoformat(fields["delivered_at"])
    return Tracking(**fields)


class CarrierWebhooks(KeptEvents):
    """The webhooks of the services whose secret is set, and the background work that
    tells what they report."""

    task_name = "carrier-events"
    what = "carrier events"

    def __init__(self, outreach: Outreach, secrets: Mapping[str, str],
                 clock: Callable[[], float] = time.time,
                 sweep_seconds: float = SWEEP_SECONDS) -> None:
        super().__init__(outreach.records, carrier_events, log, clock, sweep_seconds)
        self.outreach = outreach
        self.secrets = {name: secret for name, secret in secrets.items() if secret}
        self.letter = outreach.escalation.identity.order_number_letter.upper()

    @property
    def enabled(self) -> bool:
        return bool(self.secrets)

    def install(self, app: web.Application) -> None:
        if "easypost" in self.secrets:
            app.router.add_post("/webhooks/easypost", self.receive_easypost)
        if "aftership" in self.secrets:
            app.router.add_post("/webhooks/aftership", self.receive_aftership)

    # -- receiving --------------------------------------------------------------------

    async def receive_easypost(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        if not signed(request.headers.get("X-Hmac-Signature", ""),
                      easypost_signature(self.secrets["easypost"], body)):
            return refused(log, "easypost")
        return await self._accept("easypost", body, easypost_report)

    async def receive_aftership(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        if not signed(request.headers.get("aftership-hmac-sha256", ""),
                      aftership_signature(self.secrets["aftership"], body)):
            return refused(log, "aftership")
        return await self._accept("aftership", body, aftership_report)

    async def _accept(self, provider: str, body: bytes,
                      read: Callable[[bytes], Report]) -> web.Response:
        try:
            report = read(body)
        except Malformed as error:
            log.warning("refused a %s webhook: %s", provider, error)
            raise web.HTTPBadRequest(text=str(error)) from error
        if report is None:
            return web.json_response({"ok": True, "ignored": True})
        event_id, tracking, order_ref = report
        kept = await self.records.write(self.keep, provider, event_id, {
            "tracking_number": tracking.tracking_number[:64], "order_ref": order_ref,
            "tracking": encode_tracking(tracking)})
        if not kept:
            log.info("%s event %s again: acknowledged, already kept", provider, event_id)
            return web.json_response({"ok": True, "duplicate": True})
        log.info("%s event %s kept: a parcel %s", provider, event_id,
                 tracking.status.value.replace("_", " "))
        self.wake()
        return web.json_response({"ok": True})

    # -- telling ----------------------------------------------------------------------

    async def tell_pending(self) -> List[str]:
        """Tell what the kept events report, oldest first; the results."""
        return await self.handle_pending()

    async def handle(self, row: Mapping[str, Any]) -> str:
        tracking = decode_tracking(row["tracking"])
        order_id = self._order_named(row["order_ref"]) or await self._order_shipped_as(
            row["tracking_number"])
        if order_id is None:
            return "no_order"
        report = await self.outreach.carrier_reported(order_id, tracking)
        if report.outside_hours:
            return WAITING
        return ("lost" if report.lost else
                report.attempts[0].result if report.attempts else "nothing_to_tell")

    async def _order_shipped_as(self, tracking_number: str) -> Optional[str]:
        """Of the orders in the shipments' look-back, the one that shipped this parcel
        (on a platform: a scan of the recent shipped orders, read as one turn)."""
        outreach = self.outreach
        since = datetime.fromtimestamp(outreach.clock(), timezone.utc) - timedelta(
            days=outreach.policy.shipments.look_back_days)
        return await self.records.read(as_one_turn, outreach.shop,
                                       outreach.shop.delivery.order_shipped_as,
                                       tracking_number, since)

    def _order_named(self, ref: str) -> Optional[str]:
        ref = ref.strip()
        if not ref:
            return None
        canonical = normalize_order_id(ref)
        digits = "".join(c for c in ref if c.isdigit())
        return canonical or (f"{self.letter}{digits}" if digits else None)
