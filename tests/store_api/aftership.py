"""A local stand-in for AfterShip's Tracking API (version 2026-07, at
`/tracking/2026-07`), answering as aftership.com/docs/tracking documents it:

- the header `as-api-key`; a missing or wrong key is a 401 with AfterShip's envelope
  `{meta: {code: 401, message, type: "Unauthorized"}, data: {}}`;
- `POST /trackings {tracking_number, slug}` creates a tracking (201); one that exists
  is refused, meta.code 4003 "Tracking already exists."; `GET /trackings?tracking_numbers=
  …&slug=…` lists them (`data.trackings`); `GET /trackings/{id}` reads one (404,
  meta.code 4004, for an unknown id);
- a tracking's `tag` and `subtag`, `checkpoints`, `courier_estimated_delivery_date`,
  `shipment_delivery_date`, `courier_tracking_link`, `order_number`: what a test sets
  with `parcel()`; a number nobody set is `Pending` with no checkpoints;
- switches: `throttle_next` requests answer 429 `TooManyRequests` with
  `X-RateLimit-Limit`, `-Remaining` 0 and `-Reset` (a Unix time, `reset_in` seconds
  ahead), `fail_next` answer 503;
- webhooks: `event()` is the `tracking_update` a tracking's change sends (`event_id`,
  `msg`: the tracking, `ts`), `sign()` its `aftership-hmac-sha256` header (base64
  HMAC-SHA256 of the raw body, keyed with the webhook secret), `fire()` posts it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Sequence, Tuple

from aiohttp import web

from tests.store_api.carrier import ThreadedStandIn, post_webhook

Obj = Dict[str, Any]
VERSION = "2026-07"
BASE = f"/tracking/{VERSION}"
Checkpoint = Tuple[str, str, str, str]  # tag, message, city, state


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def envelope(code: int, message: str, kind: str, status: int, data: Any = None,
             headers: Optional[Dict[str, str]] = None) -> web.Response:
    return web.json_response({"meta": {"code": code, "message": message, "type": kind},
                              "data": {} if data is None else data},
                             status=status, headers=headers)


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


class AfterShipStandIn(ThreadedStandIn):
    name = "aftership"

    def __init__(self, *, api_key: str = "asat_standin0123456789",
                 now: Optional[datetime] = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.now = now or datetime.now(timezone.utc)
        self.reset_in = 1
        self.trackings: Dict[str, Obj] = {}
        # what the carrier says of a (number, slug)
        self.parcels: Dict[Tuple[str, str], Obj] = {}

    @property
    def base_url(self) -> str:
        return f"{self.url}{BASE}"

    # -- what the carrier says ------------------------------------------------------

    def parcel(self, number: str, slug: str, tag: str, subtag: str = "",
               checkpoints: Sequence[Checkpoint] = (), estimate: Optional[date] = None,
               order_number: str = "", subtag_message: str = "") -> None:
        start = self.now - timedelta(days=len(checkpoints))
        state: Obj = {
            "tag": tag, "subtag": subtag or f"{tag}_001",
            "subtag_message": subtag_message or tag,
            "checkpoints": [{"checkpoint_time": iso(start + timedelta(days=n)),
                             "city": city, "state": region, "country_region": "USA",
                             "location": f"{city}, {region}", "message": message,
                             "tag": step, "subtag": f"{step}_001", "slug": slug}
                            for n, (step, message, city, region) in enumerate(checkpoints)],
            "courier_estimated_delivery_date": {
                "estimated_delivery_date": estimate.isoformat() if estimate else None,
                "estimated_delivery_date_min": None, "estimated_delivery_date_max": None},
            "shipment_delivery_date": iso(self.now) if tag == "Delivered" else None,
            "order_number": order_number, "updated_at": iso(self.now)}
        with self.lock:
            self.parcels[(number, slug)] = state
            for tracking in self.trackings.values():
                if (tracking["tracking_number"], tracking["slug"]) == (number, slug):
                    tracking.update(state)

    def tracking_of(self, number: str) -> Obj:
        with self.lock:
            return next(t for t in self.trackings.values() if t["tracking_number"] == number)

    # -- the API ----------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_post(f"{BASE}/trackings", self._create)
        app.router.add_get(f"{BASE}/trackings", self._list)
        app.router.add_get(f"{BASE}/trackings/{{id}}", self._get)

    def refusal(self, request: web.Request) -> Optional[web.Response]:
        if self.throttle_next > 0:
            self.throttle_next -= 1
            return envelope(429, "You have exceeded the API call rate limit. The default "
                            "limit is 10 requests per second.", "TooManyRequests", 429,
                            headers={"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0",
                                     "X-RateLimit-Reset": str(int(time.time())
                                                              + self.reset_in)})
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503, text="Service Unavailable")
        if request.headers.get("as-api-key", "") != self.api_key:
            return envelope(401, "Invalid API key.", "Unauthorized", 401)
        return None

    async def _create(self, request: web.Request) -> web.Response:
        try:
            given = await request.json()
        except ValueError:
            return envelope(400, "Invalid JSON.", "BadRequest", 400)
        number = str(given.get("tracking_number") or "").strip()
        slug = str(given.get("slug") or "").strip()
        if not number:
            return envelope(4007, "The value of `tracking_number` is invalid.",
                            "BadRequest", 400)
        with self.lock:
            if any((t["tracking_number"], t["slug"]) == (number, slug)
                   for t in self.trackings.values()):
                return envelope(4003, "Tracking already exists.", "BadRequest", 400)
            return envelope(201, "Created", "Created", 201, self.tracking(number, slug))

    def tracking(self, number: str, slug: str) -> Obj:
        """The number's tracking, created on first sight (as POST /trackings does)."""
        with self.lock:
            for tracking in self.trackings.values():
                if (tracking["tracking_number"], tracking["slug"]) == (number, slug):
                    return tracking
            tracking_id = uuid.uuid4().hex[:24]
            self.trackings[tracking_id] = {
                "id": tracking_id, "tracking_number": number, "slug": slug, "active": True,
                "created_at": iso(self.now), "order_id": "", "title": number,
                "courier_tracking_link": f"https://www.aftership.com/track/{slug}/{number}",
                **self.parcels.get((number, slug), {
                    "tag": "Pending", "subtag": "Pending_001",
                    "subtag_message": "Pending", "checkpoints": [],
                    "courier_estimated_delivery_date": None,
                    "shipment_delivery_date": None, "order_number": "",
                    "updated_at": iso(self.now)})}
            return self.trackings[tracking_id]

    async def _list(self, request: web.Request) -> web.Response:
        numbers = set(filter(None, request.query.get("tracking_numbers", "").split(",")))
        slug = request.query.get("slug", "")
        with self.lock:
            found: List[Obj] = [t for t in self.trackings.values()
                                if (not numbers or t["tracking_number"] in numbers)
                                and (not slug or t["slug"] == slug)]
        return envelope(200, "OK", "OK", 200, {
            "pagination": {"total": len(found), "next_cursor": None,
                           "has_next_page": False}, "trackings": found})

    async def _get(self, request: web.Request) -> web.Response:
        with self.lock:
            tracking = self.trackings.get(request.match_info["id"])
        if tracking is None:
            return envelope(4004, "Tracking does not exist.", "NotFound", 404)
        return envelope(200, "OK", "OK", 200, tracking)

    # -- webhooks ---------------------------------------------------------------------

    def event(self, number: str, event_id: Optional[str] = None) -> bytes:
        """The `tracking_update` webhook of the number's tracking, as sent."""
        return json.dumps({"event": "tracking_update",
                           "event_id": event_id or str(uuid.uuid4()),
                           "is_tracking_first_tag": False, "msg": self.tracking_of(number),
                           "ts": int(self.now.timestamp())}).encode()

    async def fire(self, url: str, body: bytes, secret: str,
                   signature: Optional[str] = None) -> int:
        return await post_webhook(url, body, {
            "aftership-hmac-sha256": sign(body, secret) if signature is None else signature})
