"""Shipment exceptions: orders in transit that are late or have had no carrier scan for days."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Tuple,
    TypeVar,
    Union,
)

from actions.store.tracking import tracked
from actions.store.types import (
    Customer,
    DeliveryException,
    Order,
    OrderStatus,
    Shipment,
    StoreSystems,
    Tracking,
)
from bot.outreach.policy import CARRIER_KIND, ShipmentSettings

R = TypeVar("R")


@dataclass(frozen=True)
class ShipmentException:
    order: Order
    shipment: Shipment
    kinds: Tuple[str, ...]  # of SHIPMENT_KINDS, in that order (CARRIER_KIND first)
    last_scan: datetime
    carrier_status: str = ""  # the carrier's words, when it reported the exception


def exception_kinds(order: Order, shipment: Shipment, settings: ShipmentSettings,
                    now: datetime) -> Tuple[Tuple[str, ...], datetime]:
    """Which exceptions apply now, and the parcel's last scan (pickup if none)."""
    latest = shipment.latest_event
    last_scan = latest.time if latest else shipment.shipped_at
    kinds: List[str] = []
    if shipment.scans_known and now - last_scan >= timedelta(days=settings.no_scan_days):
        kinds.append("no_scan")
    if now.date() >= order.promised_date + timedelta(days=settings.late_after_days):
        kinds.append("late")
    return tuple(kinds), last_scan


def find_shipment_exceptions(shop: StoreSystems, settings: ShipmentSettings,
                             now: datetime) -> Tuple[List[ShipmentException], List[str]]:
    """Orders in transit with an exception, oldest promise first; and the orders the
    carrier declared lost, which are for people (a claim, a remedy), not a heads-up."""
    since = now - timedelta(days=settings.look_back_days)
    found: List[ShipmentException] = []
    lost: List[str] = []
    for order in shop.orders.orders_since(since, OrderStatus.SHIPPED):
        shipment = shop.delivery.get_shipment(order.order_id)
        if shipment is None or shipment.delivered_at is not None:
            continue
        if shipment.exception is DeliveryException.LOST:
            lost.append(order.order_id)
            continue
        kinds, last_scan = exception_kinds(order, shipment, settings, now)
        if kinds:
            found.append(ShipmentException(order, shipment, kinds, last_scan))
    found.sort(key=lambda e: (e.order.promised_date, e.order.order_id))
    return found, sorted(lost)


def as_one_turn(shop: StoreSystems, scan: Callable[..., R], *args: Any) -> R:
    """Run a scan of the store as one turn: an order its search found is not asked for
    again (on a platform, one request per page of orders instead of one more per order:
    the shop's rate limit is shared with the conversations)."""
    shop.begin_turn()
    try:
        return scan(*args)
    finally:
        shop.end_turn()


class Lost(str):
    """An order whose parcel the carrier reported lost or sent back: for people."""


def carrier_exception(shop: StoreSystems, order_id: str, tracking: Tracking,
                      settings: ShipmentSettings, now: datetime
                      ) -> Union[ShipmentException, Lost, None]:
    """The shipment exception a carrier's report makes of the order's parcel: its
    delivery exception first, with the late and no-scan exceptions that apply then;
    Lost when it will not reach the customer; None when there is nothing to tell (on
    its way, delivered, an order not in transit, or another parcel of the order)."""
    order = shop.orders.get_order(order_id)
    if order is None or order.status is not OrderStatus.SHIPPED:
        return None
    stored = shop.delivery.get_shipment(order_id)
    if stored is None or stored.tracking_number != tracking.tracking_number:
        return None
    shipment = tracked(stored, tracking)
    if shipment.delivered_at is not None:
        return None
    if shipment.exception is DeliveryException.LOST:
        return Lost(order_id)
    if tracking.status.exception is DeliveryException.NONE:
        return None
    kinds, last_scan = exception_kinds(order, shipment, settings, now)
    status = tracking.detail or tracking.status.value.replace("_", " ")
    return ShipmentException(order, shipment, (CARRIER_KIND, *kinds), last_scan,
                             carrier_status=status)


def day(value: date) -> str:
    return f"{value:%a %d %b}"


def first_name(customer: Customer) -> str:
    parts = customer.name.split()
    return parts[0] if parts else "there"


def shipment_facts(found: ShipmentException, now: datetime) -> Dict[str, str]:
    order, shipment = found.order, found.shipment
    return {
        "first_name": first_name(order.customer), "order_id": order.order_id,
        "carrier": shipment.carrier, "tracking_number": shipment.tracking_number,
        "tracking_url": shipment.tracking_url, "promised_date": day(order.promised_date),
        # a carrier estimate already past is no estimate
        "eta": day(shipment.eta) if shipment.eta >= now.date() else "not available yet",
        "last_scan": day(found.last_scan.date()),
        "days_without_scan": str((now - found.last_scan).days),
        "carrier_status": found.carrier_status,
    }
