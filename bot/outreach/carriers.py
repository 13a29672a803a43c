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

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
import unicodedata
from dataclasses import asdict
from datetime import date, datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import sqlalchemy as sa
from aiohttp import web

from actions.store.tracking import aftership, easypost
from actions.store.types import Tracking, TrackingEvent, TrackingStatus, normalize_order_id
from bot.messaging.records import insert_if_absent
from bot.outreach.run import Outreach
from bot.outreach.tables import carrier_events

log = logging.getLogger("bot.outreach.carriers")

MAX_BODY = 1024 * 1024
# how often kept events are looked at again (those waiting for business hours)
SWEEP_SECONDS = 300.0
BATCH = 50
# an event whose telling fails this many times is set aside (logged), not tried for ever
MAX_ATTEMPTS = 5
# told events are kept this long, so that a service's retry of one is still known
KEEP_DONE_SECONDS = 30 * 86400
EASYPOST_EVENTS = ("tracker.updated", "tracker.created")
AFTERSHIP_EVENTS = ("tracking_update",)


class Malformed(ValueError):
    pass


def easypost_signature(secret: str, body: bytes) -> str:
    key = unicodedata.normalize("NFKD", secret).encode()
    return "hmac-sha256-hex=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def aftership_signature(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _signed(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


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


class CarrierWebhooks:
    """The webhooks of the services whose secret is set, and the background work that
    tells what they report."""

    def __init__(self, outreach: Outreach, secrets: Mapping[str, str],
                 clock: Callable[[], float] = time.time,
                 sweep_seconds: float = SWEEP_SECONDS) -> None:
        self.outreach = outreach
        self.records = outreach.records
        self.secrets = {name: secret for name, secret in secrets.items() if secret}
        self.letter = outreach.escalation.identity.order_number_letter.upper()
        self.clock = clock
        self.sweep_seconds = sweep_seconds
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: Optional[asyncio.Task[None]] = None

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
        body = await _body(request)
        if not _signed(request.headers.get("X-Hmac-Signature", ""),
                       easypost_signature(self.secrets["easypost"], body)):
            return _refused("easypost")
        return await self._accept("easypost", body, easypost_report)

    async def receive_aftership(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if not _signed(request.headers.get("aftership-hmac-sha256", ""),
                       aftership_signature(self.secrets["aftership"], body)):
            return _refused("aftership")
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
        kept = await self.records.write(self._keep, provider, event_id[:120], tracking,
                                        order_ref)
        if not kept:
            log.info("%s event %s again: acknowledged, already kept", provider, event_id)
            return web.json_response({"ok": True, "duplicate": True})
        log.info("%s event %s kept: a parcel %s", provider, event_id,
                 tracking.status.value.replace("_", " "))
        self._wake.set()
        return web.json_response({"ok": True})

    def _keep(self, provider: str, event_id: str, tracking: Tracking, order_ref: str) -> bool:
        now = self.clock()
        with self.records.engine.begin() as db:
            return insert_if_absent(db, carrier_events, {
                "provider": provider, "event_id": event_id,
                "tracking_number": tracking.tracking_number[:64], "order_ref": order_ref,
                "tracking": encode_tracking(tracking), "state": "pending", "result": "",
                "attempts": 0, "received_at": now, "updated_at": now})

    # -- telling ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None and self.enabled:
            self._stopping = False
            self._wake.set()  # what an earlier run kept and did not tell
            self._task = asyncio.create_task(self._work(), name="carrier-events")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, grace_seconds)

    async def _work(self) -> None:
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sweep_seconds)
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self.tell_pending()
            except Exception as error:  # the next wake or sweep tries again
                log.error("carrier events not told: %s", type(error).__name__)

    async def tell_pending(self) -> List[str]:
        """Tell what the kept events report, oldest first; the results."""
        await self.records.write(self._forget_told)
        results: List[str] = []
        after = 0
        while batch := await self.records.read(self._pending, after):
            for row in batch:
                try:
                    results.append(await self._tell(row))
                except Exception as error:  # this event's, not the others'
                    gave_up = row["attempts"] + 1 >= MAX_ATTEMPTS
                    log.error("%s event %s not told: %s%s", row["provider"], row["event_id"],
                              type(error).__name__, "; set aside" if gave_up else "")
                    await self.records.write(self._settle, row["id"],
                                             "done" if gave_up else "pending", "failed")
                    results.append("failed")
                after = row["id"]
                if self._stopping:
                    return results
        return results

    def _forget_told(self) -> None:
        e = carrier_events.c
        with self.records.engine.begin() as db:
            db.execute(carrier_events.delete().where(
                e.state == "done", e.updated_at < self.clock() - KEEP_DONE_SECONDS))

    def _pending(self, after: int) -> List[Dict[str, Any]]:
        e = carrier_events.c
        with self.records.engine.connect() as db:
            rows = db.execute(sa.select(carrier_events).where(
                e.state == "pending", e.id > after).order_by(e.id).limit(BATCH)).all()
        return [dict(row._mapping) for row in rows]

    async def _tell(self, row: Mapping[str, Any]) -> str:
        tracking = decode_tracking(row["tracking"])
        order_id = self._order_named(row["order_ref"]) or await self.records.read(
            self.outreach.shop.delivery.order_shipped_as, row["tracking_number"])
        if order_id is None:
            result = "no_order"
        else:
            report = await self.outreach.carrier_reported(order_id, tracking)
            if report.outside_hours:
                await self.records.write(self._settle, row["id"], "pending", "outside_hours")
                return "outside_hours"
            result = ("lost" if report.lost else
                      report.attempts[0].result if report.attempts else "nothing_to_tell")
        await self.records.write(self._settle, row["id"], "done", result)
        log.info("%s event %s: %s", row["provider"], row["event_id"], result)
        return result

    def _order_named(self, ref: str) -> Optional[str]:
        ref = ref.strip()
        if not ref:
            return None
        canonical = normalize_order_id(ref)
        digits = "".join(c for c in ref if c.isdigit())
        return canonical or (f"{self.letter}{digits}" if digits else None)

    def _settle(self, event_row: int, state: str, result: str) -> None:
        """Only a pending event: of two gateways telling it at once, the first one's
        result stays (the outreach record let only one of them send)."""
        e = carrier_events.c
        with self.records.engine.begin() as db:
            db.execute(carrier_events.update().where(e.id == event_row,
                                                     e.state == "pending").values(
                state=state, result=result, attempts=e.attempts + 1,
                updated_at=self.clock()))


async def _body(request: web.Request) -> bytes:
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY, len(body))
    return body


def _refused(provider: str) -> web.Response:
    log.warning("refused a %s webhook: signature missing or wrong", provider)
    return web.json_response({"ok": False, "error": "signature missing or wrong"},
                             status=401)
