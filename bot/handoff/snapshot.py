"""The order as the agent needs to see it when a conversation is handed over: status,
items, total, carrier events, return and refund state, from the store's systems (the
order platform STORE_BACKEND names)."""
from __future__ import annotations

from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Dict, Optional

from actions.store.types import StoreSystems


def order_snapshot(store: StoreSystems, order_id: str) -> Optional[Dict[str, Any]]:
    order = store.orders.get_order(order_id)
    if order is None:
        return None
    shipment = store.delivery.get_shipment(order_id)
    return_record = store.returns.get_return(order_id)
    refund = store.returns.get_refund(order_id)
    return _plain({
        "order_id": order.order_id,
        # the store's id of the customer: what links this conversation to their other
        # conversations for the monitors (bot/outreach/directory.py)
        "customer_id": order.customer.customer_id,
        "status": order.status,
        "placed_at": order.placed_at,
        "promised_date": order.promised_date,
        "total": order.total,
        "currency": order.currency,
        "payment_method": order.payment_method,
        "items": [{"sku": i.sku, "name": i.name, "quantity": i.quantity,
                   "unit_price": i.unit_price} for i in order.items],
        "shipping_city": f"{order.shipping_address.city}, {order.shipping_address.country}",
        "shipment": shipment and {
            "carrier": shipment.carrier, "tracking_number": shipment.tracking_number,
            "eta": shipment.eta, "exception": shipment.exception,
            "delivered_at": shipment.delivered_at,
            "events": [{"time": e.time, "location": e.location, "description": e.description}
                       for e in shipment.events],
        },
        "return": return_record and asdict(return_record),
        "refund": refund and asdict(refund),
        # what the bot changed or tried to change (actions/guarded.py), oldest first
        "writes": [asdict(write) for write in store.writes.for_order(order.order_id)],
    })


def _plain(value: Any) -> Any:
    """JSON-ready: dates as ISO text, money as text (no float rounding), enums by value."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return value
