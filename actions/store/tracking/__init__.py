"""Where a parcel is, as a carrier-tracking service says, chosen by TRACKING_BACKEND:

- `store` (the default): whatever the store backend reports, unchanged;
- `easypost`: EasyPost Trackers (easypost.py);
- `aftership`: AfterShip Tracking (aftership.py).

With a service, the store's shipments (carrier, tracking number, when shipped) are told
with the service's view of them: its status as the delivery exception the playbooks act
on (TrackingStatus.exception), its events, its estimate, its delivery. Each parcel is
read from the service once per turn; a service that cannot be asked (down, throttled for
too long, the key refused) or cannot track the number leaves the store's view, logged.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Dict, FrozenSet, Mapping, Optional, Sequence, Tuple

from actions.store.tracking.aftership import AfterShipConfig, AfterShipTracking
from actions.store.tracking.easypost import EasyPostConfig, EasyPostTracking
from actions.store.types import (
    CarrierClaim,
    ContactLog,
    DeliverySystem,
    OneTimeCodes,
    OrderSystem,
    ReturnsSystem,
    Shipment,
    StoreConfigError,
    StoreSystems,
    StoreUnavailable,
    Tracking,
    TrackingNotFound,
    TrackingStatus,
    TrackingSystem,
    WriteLog,
)

log = logging.getLogger("actions.store.tracking")

BACKENDS = ("store", "easypost", "aftership")


def tracking_backend(env: Mapping[str, str]) -> str:
    name = (env.get("TRACKING_BACKEND") or "store").strip().lower()
    if name not in BACKENDS:
        raise StoreConfigError(f"TRACKING_BACKEND={name!r} is not a tracking backend; "
                               f"expected one of: {', '.join(BACKENDS)}")
    return name


def check_tracking_config(env: Mapping[str, str]) -> None:
    """Raise StoreConfigError, naming the variable, if the service cannot be used."""
    name = tracking_backend(env)
    if name == "easypost":
        EasyPostConfig.from_env(env)
    elif name == "aftership":
        AfterShipConfig.from_env(env)


def open_tracking(env: Mapping[str, str]) -> Optional[TrackingSystem]:
    """The service TRACKING_BACKEND names; None for `store`."""
    name = tracking_backend(env)
    if name == "easypost":
        return EasyPostTracking(EasyPostConfig.from_env(env))
    if name == "aftership":
        return AfterShipTracking(AfterShipConfig.from_env(env))
    return None


def tracked(shipment: Shipment, tracking: Tracking) -> Shipment:
    """The store's shipment told with the service's view. A service that knows nothing
    yet (unknown, no events) leaves the store's view."""
    if tracking.status is TrackingStatus.UNKNOWN and not tracking.events:
        return shipment
    exception = (shipment.exception if tracking.status is TrackingStatus.UNKNOWN
                 else tracking.status.exception)
    return dataclasses.replace(
        shipment, events=tuple(tracking.events) or shipment.events,
        eta=tracking.estimated_delivery or shipment.eta, exception=exception,
        delivered_at=tracking.delivered_at or shipment.delivered_at,
        tracking_url=shipment.tracking_url or tracking.public_url,
        carrier=shipment.carrier or tracking.carrier, scans_known=True)


class TrackedDelivery:
    """DeliverySystem: the store's, with its shipments as the tracking service sees
    them (once per turn and parcel)."""

    def __init__(self, store: DeliverySystem, service: TrackingSystem) -> None:
        self._store = store
        self.service = service
        self._turn = threading.local()

    def begin_turn(self) -> None:
        self._turn.kept = {}

    def end_turn(self) -> None:
        self._turn.kept = None

    def tracking(self, tracking_number: str, carrier: str) -> Optional[Tracking]:
        """The service's view of the parcel (None when it cannot give one), once a
        turn."""
        kept: Optional[Dict[Tuple[str, str], Optional[Tracking]]] = getattr(
            self._turn, "kept", None)
        key = (tracking_number, carrier)
        if kept is not None and key in kept:
            return kept[key]
        found: Optional[Tracking] = None
        try:
            found = self.service.track(tracking_number, carrier)
        except StoreUnavailable as error:
            log.warning("tracking service not asked, the store's view is told: %s", error)
        except TrackingNotFound as error:
            log.info("tracking service cannot track a %s parcel: %s", carrier or "carrier's",
                     error)
        if kept is not None:
            kept[key] = found
        return found

    def _told(self, shipment: Shipment) -> Shipment:
        if not shipment.tracking_number:
            return shipment
        found = self.tracking(shipment.tracking_number, shipment.carrier)
        return shipment if found is None else tracked(shipment, found)

    def get_shipment(self, order_id: str) -> Optional[Shipment]:
        shipment = self._store.get_shipment(order_id)
        return None if shipment is None else self._told(shipment)

    def shipments(self, order_id: str) -> list[Shipment]:
        return [self._told(s) for s in self._store.shipments(order_id)]

    def open_claim(self, order_id: str, kind: str) -> CarrierClaim:
        return self._store.open_claim(order_id, kind)

    def claims_by_customer(self, customer_id: int, since: Any) -> list[CarrierClaim]:
        return self._store.claims_by_customer(customer_id, since)

    def claims_for_order(self, order_id: str) -> list[CarrierClaim]:
        return self._store.claims_for_order(order_id)

    def claims_opened(self, since: Any, kinds: Sequence[str]) -> list[CarrierClaim]:
        return self._store.claims_opened(since, kinds)

    def order_shipped_as(self, tracking_number: str, since: Any) -> Optional[str]:
        return self._store.order_shipped_as(tracking_number, since)


class TrackedStore:
    """StoreSystems: the store backend's, its delivery told by the tracking service."""

    def __init__(self, store: StoreSystems, service: TrackingSystem) -> None:
        self.store = store
        self._delivery = TrackedDelivery(store.delivery, service)

    @property
    def orders(self) -> OrderSystem:
        return self.store.orders

    @property
    def delivery(self) -> TrackedDelivery:
        return self._delivery

    @property
    def returns(self) -> ReturnsSystem:
        return self.store.returns

    @property
    def contacts(self) -> ContactLog:
        return self.store.contacts

    @property
    def writes(self) -> WriteLog:
        return self.store.writes

    @property
    def codes(self) -> OneTimeCodes:
        return self.store.codes

    @property
    def left_to_people(self) -> FrozenSet[str]:
        return self.store.left_to_people

    def begin_turn(self) -> None:
        self.store.begin_turn()
        self._delivery.begin_turn()

    def end_turn(self) -> None:
        self.store.end_turn()
        self._delivery.end_turn()

    def read_fresh(self) -> None:
        self.store.read_fresh()

    def close(self) -> None:
        self._delivery.service.close()
        self.store.close()


def with_tracking(store: StoreSystems, env: Mapping[str, str]) -> StoreSystems:
    """The store as TRACKING_BACKEND tells its shipments."""
    service = open_tracking(env)
    return store if service is None else TrackedStore(store, service)
