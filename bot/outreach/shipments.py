"""Shipment exceptions: orders in transit that are late or have had no carrier scan for days."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import (
    Dict,
    List,
    Tuple,
)

from actions.store.sql import Store
from actions.store.types import (
    Customer,
    DeliveryException,
    Order,
    OrderStatus,
    Shipment,
)
from bot.outreach.policy import ShipmentSettings


@dataclass(frozen=True)
class ShipmentException:
    order: Order
    shipment: Shipment
    kinds: Tuple[str, ...]  # of SHIPMENT_KINDS, in that order
    last_scan: datetime


def exception_kinds(order: Order, shipment: Shipment, settings: ShipmentSettings,
                    now: datetime) -> Tuple[Tuple[str, ...], datetime]:
    """Which exceptions apply now, and the parcel's last scan (pickup if none)."""
    latest = shipment.latest_event
    last_scan = latest.time if latest else shipment.shipped_at
    kinds: List[str] = []
    if now - last_scan >= timedelta(days=settings.no_scan_days):
        kinds.append("no_scan")
    if now.date() >= order.promised_date + timedelta(days=settings.late_after_days):
        kinds.append("late")
    return tuple(kinds), last_scan


def find_shipment_exceptions(shop: Store, settings: ShipmentSettings,
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
    }
