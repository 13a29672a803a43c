"""AfterShip Tracking (TRACKING_BACKEND=aftership), as aftership.com/docs/tracking
documents it:

- the header `as-api-key` (AFTERSHIP_API_KEY) on every request, at a dated version's
  base (AFTERSHIP_API_BASE_URL, `https://api.aftership.com/tracking/2026-07` by
  default);
- `POST /trackings {tracking_number, slug}` creates a tracking; one that exists already
  is refused (meta.code 4003), and found with `GET /trackings?tracking_numbers=…&slug=…`;
  `GET /trackings/{id}` reads it again;
- answers are `{meta: {code, message, type}, data}`; over an endpoint's rate limit, 429
  with `X-RateLimit-Reset` (the Unix time it resets), `-Limit` and `-Remaining`;
- a tracking's `tag` is Pending, InfoReceived, InTransit, OutForDelivery, AttemptFail,
  Delivered, AvailableForPickup, Exception or Expired, with a `subtag`
  (Exception_010/011: back to the sender, Exception_013: lost), its `checkpoints`, and
  the carrier's estimate. Webhooks (`tracking_update`) carry the tracking as `msg`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime
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

DEFAULT_BASE_URL = "https://api.aftership.com/tracking/2026-07"
S = TrackingStatus
TAGS = {
    "Pending": S.UNKNOWN, "InfoReceived": S.PRE_TRANSIT, "InTransit": S.IN_TRANSIT,
    "OutForDelivery": S.OUT_FOR_DELIVERY, "AttemptFail": S.ATTEMPTED_DELIVERY,
    "Delivered": S.DELIVERED, "AvailableForPickup": S.AVAILABLE_FOR_PICKUP,
    "Exception": S.EXCEPTION, "Expired": S.EXPIRED,
}
SUBTAGS = {"Exception_010": S.RETURN_TO_SENDER, "Exception_011": S.RETURN_TO_SENDER,
           "Exception_013": S.FAILURE}
ALREADY_EXISTS = 4003


@dataclass(frozen=True)
class AfterShipConfig:
    api_key: str
    base_url: str = DEFAULT_BASE_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AfterShipConfig:
        return cls(api_key=required(env, "AFTERSHIP_API_KEY", "aftership",
                                    "an API key of the AfterShip organisation"),
                   base_url=base_url(env, "AFTERSHIP_API_BASE_URL", DEFAULT_BASE_URL))


def rate_limit_wait(response: httpx.Response, clock: Callable[[], float] = time.time) -> float:
    """Until X-RateLimit-Reset (a Unix time; a small number is taken as seconds from
    now), else Retry-After."""
    try:
        reset = float(response.headers["X-RateLimit-Reset"])
    except (KeyError, ValueError):
        return retry_after(response)
    return max(0.0, reset - clock() if reset > 1e9 else reset)


class AfterShipTracking:
    """TrackingSystem on AfterShip: the first read of a parcel creates (or finds) its
    tracking; later reads get it by id."""

    def __init__(self, config: AfterShipConfig,
                 sleep: Optional[Callable[[float], None]] = None) -> None:
        extra: Dict[str, Any] = {} if sleep is None else {"sleep": sleep}
        self._api = JsonApi("AfterShip", config.base_url,
                            headers={"as-api-key": config.api_key},
                            wait_of=rate_limit_wait, **extra)
        self._known = KnownParcels()

    def track(self, tracking_number: str, carrier: str) -> Tracking:
        key = (tracking_number, slug_of(carrier))
        known = self._known.read(self._api, key, "/trackings")
        if known is not None:
            return self._tracking(key, known.status, known.body)
        body: Dict[str, Any] = {"tracking_number": key[0]}
        if key[1]:
            body["slug"] = key[1]
        answer = self._api.call("POST", "/trackings", json=body)
        if _meta(answer.body)[0] == ALREADY_EXISTS:
            params = {"tracking_numbers": key[0], **({"slug": key[1]} if key[1] else {})}
            found = self._api.call("GET", "/trackings", params=params)
            listed = _data(found.body).get("trackings") if found.status < 300 else None
            if isinstance(listed, list) and listed:
                return self._tracking(key, found.status, {"data": listed[0]})
            return self._tracking(key, found.status if found.status >= 300 else 404,
                                  found.body)
        return self._tracking(key, answer.status, answer.body)

    def _tracking(self, key: Tuple[str, str], status: int, body: Any) -> Tracking:
        data = _data(body)
        found = data.get("tracking", data)
        if status < 300 and isinstance(found, Mapping) and found.get("tracking_number"):
            self._known.remember(key, str(found.get("id") or ""))
            return tracking_of(found)
        code, message = _meta(body)
        raise failure("AfterShip", "AFTERSHIP_API_KEY", status, str(code or ""), message)

    def close(self) -> None:
        self._api.close()


def slug_of(carrier: str) -> str:
    """AfterShip's courier slug of a carrier's name ('Royal Mail' -> 'royal-mail')."""
    return "-".join((carrier or "").strip().lower().split())


def _data(body: Any) -> Mapping[str, Any]:
    data = body.get("data") if isinstance(body, Mapping) else None
    return data if isinstance(data, Mapping) else {}


def _meta(body: Any) -> Tuple[int, str]:
    meta = body.get("meta") if isinstance(body, Mapping) else None
    if not isinstance(meta, Mapping):
        return 0, ""
    code = meta.get("code")
    return (code if isinstance(code, int) else 0), str(meta.get("message") or "")


def tracking_of(tracking: Mapping[str, Any]) -> Tracking:
    """An AfterShip tracking object in the project's vocabulary."""
    tag, subtag = str(tracking.get("tag") or ""), str(tracking.get("subtag") or "")
    status = SUBTAGS.get(subtag) or TAGS.get(tag, S.UNKNOWN)
    checkpoints = [c for c in tracking.get("checkpoints") or () if isinstance(c, Mapping)]
    events = sorted((TrackingEvent(time=moment, location=_place(c),
                                   description=str(c.get("message") or c.get("tag") or ""))
                     for c in checkpoints
                     if (moment := moment_of(c.get("checkpoint_time"))) is not None),
                    key=lambda e: e.time)
    delivered: Optional[datetime] = None
    if status is S.DELIVERED:
        delivered = moment_of(tracking.get("shipment_delivery_date")) or \
            (events[-1].time if events else None)
    return Tracking(
        tracking_number=str(tracking.get("tracking_number") or ""),
        carrier=str(tracking.get("slug") or ""), status=status, events=tuple(events),
        estimated_delivery=_estimate(tracking), delivered_at=delivered,
        detail=str(tracking.get("subtag_message") or (events[-1].description if events
                                                      else "")),
        public_url=str(tracking.get("courier_tracking_link") or ""),
        reference=str(tracking.get("id") or ""),
        provider_status=f"{tag}{' (' + subtag + ')' if subtag else ''}")


def _estimate(tracking: Mapping[str, Any]) -> Optional[date]:
    """The carrier's estimate, else AfterShip's own (newer versions), else the older
    `expected_delivery`."""
    for name in ("courier_estimated_delivery_date", "aftership_estimated_delivery_date"):
        part = tracking.get(name)
        if isinstance(part, Mapping):
            moment = moment_of(part.get("estimated_delivery_date")
                             or part.get("estimated_delivery_date_max"))
            if moment is not None:
                return moment.date()
    moment = moment_of(tracking.get("expected_delivery"))
    return moment.date() if moment else None


def _place(checkpoint: Mapping[str, Any]) -> str:
    parts = [str(checkpoint.get(k) or "").strip() for k in ("city", "state")]
    return ", ".join(p for p in parts if p) or str(checkpoint.get("location") or "")

