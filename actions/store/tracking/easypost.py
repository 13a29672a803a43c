"""EasyPost Trackers (TRACKING_BACKEND=easypost), as docs.easypost.com documents them:

- HTTP Basic authentication with the API key as the user name and no password
  (EASYPOST_API_KEY: a test key `EZTK…` tracks EasyPost's test codes, a production key
  `EZAK…` real parcels);
- `POST /v2/trackers {tracker: {tracking_code, carrier}}` creates the tracker, or answers
  the one that exists for that code and carrier; `GET /v2/trackers/{id}` reads it again;
- errors are `{error: {code, message, errors}}`; 429 when throttled (waited out as
  Retry-After says, else with backoff);
- a tracker's `status` is unknown, pre_transit, in_transit, out_for_delivery, delivered,
  available_for_pickup, return_to_sender, failure, cancelled or error, with a
  `status_detail`, `tracking_details[]` (the carrier's events), `est_delivery_date` and
  `public_url`. Webhook events (`tracker.updated`) carry the tracker as `result`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import httpx

from actions.store.tracking.http import (
    JsonApi,
    KnownParcels,
    base_url,
    failure,
    moment_of,
    required,
    retry_after,
)
from actions.store.types import (
    Tracking,
    TrackingEvent,
    TrackingStatus,
)

DEFAULT_BASE_URL = "https://api.easypost.com"
S = TrackingStatus
STATUSES = {
    "unknown": S.UNKNOWN, "pre_transit": S.PRE_TRANSIT, "in_transit": S.IN_TRANSIT,
    "out_for_delivery": S.OUT_FOR_DELIVERY, "delivered": S.DELIVERED,
    "available_for_pickup": S.AVAILABLE_FOR_PICKUP, "return_to_sender": S.RETURN_TO_SENDER,
    "failure": S.FAILURE, "cancelled": S.CANCELLED, "error": S.UNKNOWN,
}
# status_detail values that say a parcel still on its way is held up
HELD_UP = ("delivery_exception", "transit_exception", "weather_delay", "delayed", "held",
           "missorted", "address_correction", "awaiting_information")
# and those that say it will not arrive
NOT_ARRIVING = ("lost", "damaged")
# how EasyPost names the carriers the shops name
CARRIERS = {"ups": "UPS", "fedex": "FedEx", "usps": "USPS", "dhl": "DHLExpress",
            "dhl express": "DHLExpress", "canada post": "CanadaPost",
            "royal mail": "RoyalMail"}


@dataclass(frozen=True)
class EasyPostConfig:
    api_key: str
    base_url: str = DEFAULT_BASE_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EasyPostConfig:
        return cls(api_key=required(env, "EASYPOST_API_KEY", "easypost",
                                    "the API key, EZAK… or EZTK… for test mode"),
                   base_url=base_url(env, "EASYPOST_API_BASE_URL", DEFAULT_BASE_URL))


class EasyPostTracking:
    """TrackingSystem on EasyPost: the first read of a parcel creates (or finds) its
    tracker; later reads get it by id."""

    def __init__(self, config: EasyPostConfig,
                 sleep: Optional[Callable[[float], None]] = None) -> None:
        extra: Dict[str, Any] = {} if sleep is None else {"sleep": sleep}
        self._api = JsonApi("EasyPost", config.base_url,
                            auth=httpx.BasicAuth(config.api_key, ""),
                            wait_of=retry_after, **extra)
        self._known = KnownParcels()

    def track(self, tracking_number: str, carrier: str) -> Tracking:
        key = (tracking_number, easypost_carrier(carrier))
        known = self._known.read(self._api, key, "/v2/trackers")
        if known is not None:
            return self._tracking(key, known.status, known.body)
        tracker: Dict[str, Any] = {"tracking_code": key[0]}
        if key[1]:
            tracker["carrier"] = key[1]
        answer = self._api.call("POST", "/v2/trackers", json={"tracker": tracker})
        return self._tracking(key, answer.status, answer.body)

    def _tracking(self, key: Tuple[str, str], status: int, body: Any) -> Tracking:
        if status < 300 and isinstance(body, Mapping) and body.get("object") == "Tracker":
            self._known.remember(key, str(body.get("id") or ""))
            return tracking_of(body)
        code, message = _error_of(body)
        raise failure("EasyPost", "EASYPOST_API_KEY", status, code, message)

    def close(self) -> None:
        self._api.close()


def easypost_carrier(carrier: str) -> str:
    name = (carrier or "").strip()
    return CARRIERS.get(name.lower(), name)


def _error_of(body: Any) -> Tuple[str, str]:
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        return str(error.get("code") or ""), str(error.get("message") or "")
    return "", ""


def tracking_of(tracker: Mapping[str, Any]) -> Tracking:
    """An EasyPost Tracker object in the project's vocabulary."""
    detail = str(tracker.get("status_detail") or "")
    status = STATUSES.get(str(tracker.get("status") or ""), S.UNKNOWN)
    if status in (S.IN_TRANSIT, S.OUT_FOR_DELIVERY, S.PRE_TRANSIT):
        if detail in NOT_ARRIVING:
            status = S.FAILURE
        elif detail in HELD_UP:
            status = S.EXCEPTION
    details = [d for d in tracker.get("tracking_details") or () if isinstance(d, Mapping)]
    events = sorted((TrackingEvent(time=moment, location=_place(d.get("tracking_location")),
                                   description=str(d.get("message") or d.get("status") or ""))
                     for d in details if (moment := moment_of(d.get("datetime"))) is not None),
                    key=lambda e: e.time)
    delivered: Optional[datetime] = None
    if status is S.DELIVERED:
        times = [moment_of(d.get("datetime")) for d in details if d.get("status") == "delivered"]
        delivered = max((t for t in times if t is not None), default=None) or \
            moment_of(tracker.get("updated_at"))
    estimate = moment_of(tracker.get("est_delivery_date"))
    latest = max(details, key=lambda d: str(d.get("datetime") or ""), default={})
    return Tracking(
        tracking_number=str(tracker.get("tracking_code") or ""),
        carrier=str(tracker.get("carrier") or ""), status=status, events=tuple(events),
        estimated_delivery=estimate.date() if estimate else None, delivered_at=delivered,
        detail=str(latest.get("message") or detail.replace("_", " ")),
        public_url=str(tracker.get("public_url") or ""), reference=str(tracker.get("id") or ""),
        provider_status=f"{tracker.get('status') or ''}"
                        f"{' (' + detail + ')' if detail else ''}")


def _place(location: Any) -> str:
    if not isinstance(location, Mapping):
        return ""
    parts = [str(location.get(k) or "").strip() for k in ("city", "state")]
    return ", ".join(p for p in parts if p) or str(location.get("country") or "")

