"""A local stand-in for EasyPost's Trackers API, answering as docs.easypost.com
documents it:

- HTTP Basic authentication with the API key as the user name (no password); a
  missing key or a wrong one is a 401 with EasyPost's error shape
  `{error: {code, message, errors: []}}`;
- `POST /v2/trackers {tracker: {tracking_code, carrier}}` answers the tracker of that
  code and carrier, created on first sight; without a tracking code, 422;
  `GET /v2/trackers/{id}` reads one (404 `NOT_FOUND` for an unknown id);
- test mode's tracking codes give fixed statuses: `EZ1000000001` pre_transit,
  `EZ2000000002` in_transit, `EZ3000000003` out_for_delivery, `EZ4000000004` delivered,
  `EZ5000000005` return_to_sender, `EZ6000000006` failure, `EZ7000000007` unknown,
  each with tracking details to match (carrier USPS unless named); any other code is
  a tracker the carrier knows nothing about yet (`unknown`), unless a test sets its
  parcel (`parcel()`);
- switches: `throttle_next` requests answer 429 `RATE_LIMITED` (with Retry-After
  `retry_after`), `fail_next` answer 503;
- webhooks: `event()` is the `tracker.updated` Event a tracker's change sends, `sign()`
  its `X-Hmac-Signature` (`hmac-sha256-hex=` and the hex HMAC-SHA256 of the raw body,
  keyed with the NFKD-normalised secret, as EasyPost's client libraries check it), and
  `fire()` posts it to a gateway.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import unicodedata
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Sequence, Tuple

from aiohttp import web

from tests.store_api.carrier import ThreadedStandIn, post_webhook

Obj = Dict[str, Any]
TEST_CODES = {
    "EZ1000000001": "pre_transit", "EZ2000000002": "in_transit",
    "EZ3000000003": "out_for_delivery", "EZ4000000004": "delivered",
    "EZ5000000005": "return_to_sender", "EZ6000000006": "failure",
    "EZ7000000007": "unknown",
}
# the journey of a test tracker, up to its status
JOURNEY = [
    ("pre_transit", "Pre-Shipment information received", "HOUSTON", "TX"),
    ("in_transit", "Arrived at USPS Origin Facility", "NORTH HOUSTON", "TX"),
    ("in_transit", "Arrived at USPS Facility", "COLUMBIA", "SC"),
    ("out_for_delivery", "Out for Delivery", "CHARLESTON", "SC"),
]
FINAL = {
    "delivered": ("delivered", "Delivered, In/At Mailbox", "CHARLESTON", "SC"),
    "return_to_sender": ("return_to_sender", "Return to Sender", "CHARLESTON", "SC"),
    "failure": ("failure", "Delivery failure: package damaged", "CHARLESTON", "SC"),
}
Step = Tuple[str, str, str, str]  # status, message, city, state


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def error(code: str, message: str, status: int,
          headers: Optional[Dict[str, str]] = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "errors": []}},
                             status=status, headers=headers)


def sign(body: bytes, secret: str) -> str:
    key = unicodedata.normalize("NFKD", secret).encode()
    return "hmac-sha256-hex=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class EasyPostStandIn(ThreadedStandIn):
    name = "easypost"

    def __init__(self, *, api_key: str = "EZTKstandin0123456789",
                 now: Optional[datetime] = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.now = now or datetime.now(timezone.utc)
        self.retry_after = "1"
        self.trackers: Dict[str, Obj] = {}
        self.by_code: Dict[Tuple[str, str], str] = {}
        # what the carrier says of codes other than the test ones: code -> (status,
        # status_detail, steps, estimate)
        self.parcels: Dict[str, Tuple[str, str, Sequence[Step], Optional[datetime]]] = {}

    # -- what the carrier says ------------------------------------------------------

    def parcel(self, code: str, status: str, steps: Sequence[Step] = (),
               status_detail: str = "", est_delivery: Optional[datetime] = None) -> None:
        """Set what the carrier says of a code; an existing tracker follows."""
        with self.lock:
            self.parcels[code] = (status, status_detail, tuple(steps), est_delivery)
            for (tracked, _), tracker_id in self.by_code.items():
                if tracked == code:
                    self.trackers[tracker_id].update(self._state(code))

    def tracker_of(self, code: str) -> Obj:
        with self.lock:
            return next(self.trackers[i] for (c, _), i in self.by_code.items() if c == code)

    def _state(self, code: str) -> Obj:
        if code in TEST_CODES:
            status = TEST_CODES[code]
            steps: List[Step] = []
            if status != "unknown":
                upto = {"pre_transit": 1, "in_transit": 3}.get(status, 4)
                steps = list(JOURNEY[:upto])
                if status in FINAL:
                    steps.append(FINAL[status])
            detail, estimate = "", self.now + timedelta(days=2)
        else:
            status, detail, given, estimate_or_none = self.parcels.get(
                code, ("unknown", "", (), None))
            steps, estimate = list(given), estimate_or_none  # type: ignore[assignment]
        start = self.now - timedelta(days=len(steps))
        details = [{"object": "TrackingDetail", "message": message, "description": "",
                    "status": step_status, "status_detail": "status_update",
                    "datetime": iso(start + timedelta(days=n)), "source": "USPS",
                    "carrier_code": "", "tracking_location": {
                        "object": "TrackingLocation", "city": city, "state": state,
                        "country": "US", "zip": None}}
                   for n, (step_status, message, city, state) in enumerate(steps)]
        return {"status": status, "status_detail": detail or
                (details[-1]["status_detail"] if details else "unknown"),
                "tracking_details": details,
                "est_delivery_date": iso(estimate) if estimate and status != "delivered"
                else None,
                "updated_at": iso(self.now)}

    # -- the API ----------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/trackers", self._create)
        app.router.add_get("/v2/trackers/{id}", self._get)

    def refusal(self, request: web.Request) -> Optional[web.Response]:
        if self.throttle_next > 0:
            self.throttle_next -= 1
            return error("RATE_LIMITED", "You have exceeded the rate limit. Please slow "
                         "down your requests.", 429, {"Retry-After": self.retry_after})
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503, text="Service Unavailable")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return error("APIKEY.REQUIRED", "No API key provided. Provide an API key as "
                         "the username of HTTP Basic authentication.", 401)
        try:
            key = base64.b64decode(auth[6:]).decode().partition(":")[0]
        except ValueError:
            key = ""
        if key != self.api_key:
            return error("APIKEY.INACTIVE", "This api key is no longer active. Please use "
                         "a different api key or reactivate this key.", 401)
        return None

    async def _create(self, request: web.Request) -> web.Response:
        try:
            given = (await request.json()).get("tracker") or {}
        except (ValueError, AttributeError):
            given = {}
        code = str(given.get("tracking_code") or "").strip()
        if not code:
            return error("TRACKER.CREATE.ERROR", "Invalid tracking code.", 422)
        return web.json_response(self.tracker(code, str(given.get("carrier") or "")))

    def tracker(self, code: str, carrier: str = "") -> Obj:
        """The code's tracker, created on first sight (as POST /v2/trackers does)."""
        carrier = carrier or ("USPS" if code in TEST_CODES else "")
        with self.lock:
            tracker_id = self.by_code.get((code, carrier))
            if tracker_id is None:
                tracker_id = f"trk_{uuid.uuid4().hex}"
                self.by_code[(code, carrier)] = tracker_id
                self.trackers[tracker_id] = {
                    "id": tracker_id, "object": "Tracker",
                    "mode": "test" if self.api_key.startswith("EZTK") else "production",
                    "tracking_code": code, "carrier": carrier, "signed_by": None,
                    "weight": None, "shipment_id": None, "fees": [],
                    "carrier_detail": None, "created_at": iso(self.now),
                    "public_url": f"https://track.easypost.com/djE6{tracker_id[4:20]}",
                    **self._state(code)}
            return self.trackers[tracker_id]

    async def _get(self, request: web.Request) -> web.Response:
        with self.lock:
            tracker = self.trackers.get(request.match_info["id"])
        if tracker is None:
            return error("NOT_FOUND", "The requested resource could not be found.", 404)
        return web.json_response(tracker)

    # -- webhooks ---------------------------------------------------------------------

    def event(self, code: str, previous_status: str = "in_transit",
              event_id: Optional[str] = None) -> bytes:
        """The `tracker.updated` Event of the code's tracker, as sent."""
        tracker = self.tracker_of(code)
        return json.dumps({
            "object": "Event", "id": event_id or f"evt_{uuid.uuid4().hex}",
            "mode": tracker["mode"], "description": "tracker.updated",
            "previous_attributes": {"status": previous_status}, "result": tracker,
            "status": "pending", "pending_urls": [], "completed_urls": [],
            "created_at": iso(self.now), "updated_at": iso(self.now)}).encode()

    async def fire(self, url: str, body: bytes, secret: str,
                   signature: Optional[str] = None) -> int:
        """POST the event to the gateway's /webhooks/easypost, signed with `secret`
        (or with the `signature` given); the status answered."""
        return await post_webhook(url, body, {
            "X-Hmac-Signature": sign(body, secret) if signature is None else signature})
