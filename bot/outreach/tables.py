"""What outreach keeps beside the gateway's records: who was messaged about what (at most
once), and product alerts."""
from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
# One row per message the monitor decided to send: unique on (kind, subject), so it is
# decided once. subject: the order id (late, no_scan), or "<alert id>:<customer id>".
outreach = sa.Table(
    "monitor_outreach", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("subject", sa.String(120), nullable=False),
    sa.Column("order_id", sa.String(32), nullable=False),
    sa.Column("sku", sa.String(32), nullable=False, default=""),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("conversation_id", sa.String(200), nullable=False),
    # sending (claimed; stays so if the process died mid-send), sent, template, blocked,
    # failed, or covered (another exception's message covered this one); a promise:
    # handed_over (its handoff is open; then what became of the message), detail.handoff
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default="{}"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("kind", "subject", name="uq_monitor_outreach_kind_subject"),
)
# Product alerts: one per SKU and window (window_bucket = fired_at // window), and none
# while an earlier one of the SKU is younger than the window.
alerts = sa.Table(
    "monitor_alerts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sku", sa.String(32), nullable=False),
    sa.Column("product", sa.String(200), nullable=False),
    sa.Column("window_bucket", sa.Integer, nullable=False),
    sa.Column("window_hours", sa.Integer, nullable=False),
    sa.Column("contacts", sa.Integer, nullable=False),
    sa.Column("threshold", sa.Integer, nullable=False),
    sa.Column("conversations", sa.Text, nullable=False),
    sa.Column("fired_at", sa.Float, nullable=False, index=True),
    sa.UniqueConstraint("sku", "window_bucket", name="uq_monitor_alerts_sku_window"),
)
# What the carriers' tracking webhooks reported (bot/outreach/carriers.py), kept before
# the webhook is answered and unique on (provider, event_id): a provider's retry finds
# its event and is not told twice, and an event acknowledged before a crash is taken up
# at the next start. `tracking` is the parcel as the project reads it (no customer
# data); state: pending (to tell), done (told, or nothing to tell: `result` says).
carrier_events = sa.Table(
    "carrier_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(16), nullable=False),
    sa.Column("event_id", sa.String(120), nullable=False),
    sa.Column("tracking_number", sa.String(64), nullable=False),
    sa.Column("order_ref", sa.String(64), nullable=False, default=""),
    sa.Column("tracking", sa.Text, nullable=False),
    sa.Column("state", sa.String(12), nullable=False, index=True),
    sa.Column("result", sa.String(32), nullable=False, default=""),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("provider", "event_id", name="uq_carrier_events_provider_event"),
)
# What the store platforms' webhooks said (bot/outreach/store_hooks.py), kept before the
# webhook is answered and unique on (provider, event_id: the delivery's id). The order is
# its number as the platform names it and/or the platform's id of it; `tracking` the
# parcel of a Shopify fulfilment ("" for other events). state: pending, done.
store_events = sa.Table(
    "store_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(16), nullable=False),
    sa.Column("event_id", sa.String(120), nullable=False),
    sa.Column("topic", sa.String(64), nullable=False),
    sa.Column("order_number", sa.String(32), nullable=False, default=""),
    sa.Column("order_platform_id", sa.String(32), nullable=False, default=""),
    sa.Column("tracking", sa.Text, nullable=False, default=""),
    sa.Column("state", sa.String(12), nullable=False, index=True),
    sa.Column("result", sa.String(32), nullable=False, default=""),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("provider", "event_id", name="uq_store_events_provider_event"),
)
