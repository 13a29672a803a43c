"""Product contacts: conversations about one SKU reaching a threshold, and the alert."""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import (
    Any,
    Dict,
    List,
    Optional,
    Set,
)

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from actions.store.types import (
    ORDER_ID_PATTERN,
    StoreSystems,
)
from bot.handoff import store as handoff_tables
from bot.messaging.records import insert_if_absent, turns
from bot.outreach.policy import ProductSettings
from bot.outreach.tables import alerts
from common.timefmt import iso


@dataclass
class SkuContacts:
    sku: str
    product: str
    conversations: Set[str] = field(default_factory=set)


def order_ids_in(text: str) -> List[str]:
    """Every order number in a message, spelled as the bot reads one."""
    return [f"{m.group(1).upper()}{m.group(2)}" for m in ORDER_ID_PATTERN.finditer(text or "")]


def contacts_by_sku(engine: Engine, shop: StoreSystems, since: float,
                    until: float) -> Dict[str, SkuContacts]:
    """A contact about a SKU: a conversation in which, within [since, until), the
    customer named an order containing it, or a handoff was opened with such an order.
    Each conversation counts once per SKU, however often it named the order."""
    t, h = turns.c, handoff_tables.handoffs.c
    with engine.connect() as db:
        said = db.execute(sa.select(t.conversation_id, t.text).where(
            t.role == "customer", t.at >= since, t.at < until)).all()
        handed = db.execute(sa.select(h.conversation_id, h.order_id).where(
            h.created_at >= since, h.created_at < until, h.order_id.is_not(None))).all()
    mentions: Dict[str, Set[str]] = defaultdict(set)
    for conversation_id, text in said:
        for order_id in order_ids_in(text):
            mentions[order_id].add(conversation_id)
    for conversation_id, order_id in handed:
        mentions[order_id].add(conversation_id)
    by_sku: Dict[str, SkuContacts] = {}
    for order_id, who in mentions.items():
        order = shop.orders.get_order(order_id)
        for item in order.items if order else ():
            entry = by_sku.setdefault(item.sku, SkuContacts(item.sku, item.name))
            entry.conversations |= who
    return by_sku


def record_alert(engine: Engine, found: SkuContacts, settings: ProductSettings,
                 now: float) -> Optional[Dict[str, Any]]:
    """Store the alert unless the SKU had one within the window; the new alert or None.
    The unique (sku, window_bucket) settles a race between two gateways."""
    window = settings.window_hours * 3600
    with engine.begin() as db:
        recent = db.execute(sa.select(alerts.c.id).where(
            alerts.c.sku == found.sku, alerts.c.fired_at > now - window)).first()
        if recent is not None:
            return None
        bucket = int(now // window)
        if not insert_if_absent(db, alerts, {
            "sku": found.sku, "product": found.product, "window_bucket": bucket,
            "window_hours": settings.window_hours, "contacts": len(found.conversations),
            "threshold": settings.threshold,
            "conversations": json.dumps(sorted(found.conversations)), "fired_at": now,
        }):
            return None
        row = db.execute(sa.select(alerts).where(alerts.c.sku == found.sku,
                                                 alerts.c.window_bucket == bucket)).one()
    return _alert(row)


def recent_alerts(engine: Engine, since: float, limit: int = 100) -> List[Dict[str, Any]]:
    """Alerts fired since then, newest first (the dashboard's list)."""
    with engine.connect() as db:
        rows = db.execute(sa.select(alerts).where(alerts.c.fired_at >= since)
                          .order_by(alerts.c.fired_at.desc(), alerts.c.id.desc()).limit(limit))
        return [_alert(row) for row in rows]


def _alert(row: Any) -> Dict[str, Any]:
    return {"id": row.id, "sku": row.sku, "product": row.product, "contacts": row.contacts,
            "threshold": row.threshold, "window_hours": row.window_hours,
            "fired_at": iso(row.fired_at), "fired_at_epoch": row.fired_at}
