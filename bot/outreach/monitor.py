"""Proactive outreach: `bot monitor shipments`, `bot monitor products` and `bot monitor
promises`, once from the CLI or on a schedule inside the gateway (policy/monitor.yml).

- Shipments: orders in transit that are late (days past the promised date) or have had
  no carrier scan for days. Their customer is messaged on the conversation they last
  used, at most once per order and exception, never when opted out.
- Products: when the conversations about orders with one SKU reach a threshold within a
  window, the team is alerted (stored, published on the handoff event bus for consoles,
  logged), at most once per SKU and window; optionally the SKU's recent buyers are
  messaged, once per alert and customer.
- Promises: what the bot promised when it opened a carrier trace ("if it hasn't moved
  by Mon 07 Dec, we'll send a replacement") or a not-received claim ("we'll update you
  by ..."), on or after that day (actions/policy.py promised_by). A trace whose parcel
  was scanned or delivered since is void; a promise whose order already has a
  replacement or refund is kept. Otherwise it is handed to a person (a handoff in the
  customer's last conversation, on the rule promise_due's queue, or on the team of the
  order's stop-the-line hold) and the customer is told a person is on it, once per
  promise. The monitor writes nothing to the store: the person makes the replacement.

Linking an order to a conversation: WhatsApp and Twilio (SMS, WhatsApp) senders are
phone numbers, compared with the customer's phone whole, as E.164 (as the bot verifies a
phone; numbers without a country code read in `identity.default_phone_region`).
Telegram and web chat carry no phone: such a conversation belongs to a customer only
when a handoff from it carries one of their orders, verified (the customer gave the
order number and its email or phone). The customer's conversation with the latest
inbound message is "the channel they last used".

Messages go through the router's `deliver`, the path of every bot reply: the channel
applies its rules (opt-out, WhatsApp's 24-hour window and its template, rate limits,
retries) and the router records the turns and deliveries. "At most once" is a row in
`monitor_outreach`, unique on (kind, subject), inserted in the transaction that decides
to send: a rerun or a second gateway finds it and sends nothing. A promise is claimed
the same way (kind "promise", subject the claim id) before its handoff is opened.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
)

import sqlalchemy as sa
from pydantic import conint, validator
from sqlalchemy.engine import Engine

from actions.identity import normalize_phone
from actions.policy import PROMISE_WINDOWS, EscalationPolicy
from actions.store.sql import Store
from actions.store.types import (
    ORDER_ID_PATTERN,
    REMEDY_WRITES,
    CarrierClaim,
    Customer,
    DeliveryException,
    Hold,
    Order,
    OrderStatus,
    Shipment,
)
from bot.handoff import store as handoff_tables
from bot.handoff.desk import HandoffDesk, Place, Send
from bot.handoff.events import EventBus
from bot.handoff.policy import BusinessHours, describe_opening
from bot.handoff.store import HandoffStore
from bot.messaging.records import GatewayRecords, conversations, insert_if_absent, turns
from bot.router import Router
from bot.services import build_services
from bot.settings import Settings
from common.policy_files import PolicyError, StrictModel, check_text, parse_yaml_model, policy_dir
from common.privacy import mask
from common.sql import create_tables
from common.timefmt import iso
from connectors.config import ChannelPolicy
from connectors.message import Delivery, Reply
from connectors.whatsapp import SERVICE_WINDOW_SECONDS

log = logging.getLogger("bot.outreach.monitor")

MonitorName = Literal["shipments", "products", "promises"]
MONITORS: Tuple[MonitorName, ...] = ("shipments", "products", "promises")
ALERT_EVENT = "monitor.alert"

SHIPMENT_PLACEHOLDERS = ("first_name", "order_id", "carrier", "tracking_number",
                         "tracking_url", "promised_date", "eta", "last_scan",
                         "days_without_scan")
BUYER_PLACEHOLDERS = ("first_name", "order_id", "product", "sku")
PROMISE_PLACEHOLDERS = ("first_name", "order_id", "claim_id", "carrier", "tracking_number",
                        "tracking_url", "opened_on", "due", "last_scan")
# An order on hold: the customer hears that a person looks at it, and nothing promised.
ON_HOLD_PLACEHOLDERS = ("first_name", "order_id")
NEXT_STEP_PLACEHOLDERS = (*PROMISE_PLACEHOLDERS, "hold_rule")
# The exceptions of a shipment, most specific first: when both apply, one message.
SHIPMENT_KINDS = ("no_scan", "late")
PRODUCT_KIND = "product"
# monitor_outreach.kind of a promise handed to a person; its subject is the claim id
PROMISE_KIND = "promise"
PROMISE_RULE = "promise_due"  # policy/escalation.yml
# A promise claimed this long ago whose handoff never opened (the run died in between)
# is claimed again: unlike a message, a promise must not be lost by a crash.
STALE_PROMISE_CLAIM_SECONDS = 600
# Buyers who have (or are about to have) the product; not cancelled or returned orders.
BUYER_STATUSES = (OrderStatus.SHIPPED, OrderStatus.DELIVERED)
PHONE_CONNECTORS = ("whatsapp", "twilio")
REACHED = ("sent", "delivered", "read")

# What became of one customer the monitor wanted to message.
Result = Literal[
    "sent",              # the text reached the channel
    "template",          # WhatsApp outside the 24-hour window: the template instead
    "already_messaged",  # this order (alert) and exception were handled before
    "already_handled",   # this promise was handed to a person before
    "no_conversation",   # no conversation of this customer is known
    "opted_out",         # their last conversation opted out (or blocked the bot)
    "with_agent",        # a person has the conversation; the monitor keeps out
    "window_closed",     # WhatsApp via Twilio outside the window: no template there
    "outside_hours",     # outside business hours, nothing is sent
    "blocked",           # the channel refused to send (opted out meanwhile)
    "failed",            # every attempt failed; not tried again (at most once)
    "not_attempted",     # nothing was tried (channel off): tried again next run
]
RESULTS: Tuple[Result, ...] = ("sent", "template", "already_messaged", "already_handled",
                               "no_conversation", "opted_out", "with_agent", "window_closed",
                               "outside_hours", "blocked", "failed", "not_attempted")


# --- policy (policy/monitor.yml) --------------------------------------------------------

class ShipmentTexts(StrictModel):
    late: str
    no_scan: str

    @validator("*")
    def _placeholders(cls, value: str) -> str:
        return check_text(value, SHIPMENT_PLACEHOLDERS, ("order_id",))


class ShipmentSettings(StrictModel):
    enabled: bool
    every_minutes: conint(ge=1)  # type: ignore[valid-type]
    late_after_days: conint(ge=1)  # type: ignore[valid-type]
    no_scan_days: conint(ge=1)  # type: ignore[valid-type]
    look_back_days: conint(ge=1)  # type: ignore[valid-type]
    texts: ShipmentTexts


class ProductTexts(StrictModel):
    buyers: str

    @validator("*")
    def _placeholders(cls, value: str) -> str:
        return check_text(value, BUYER_PLACEHOLDERS)


class ProductSettings(StrictModel):
    enabled: bool
    every_minutes: conint(ge=1)  # type: ignore[valid-type]
    # one contact is not a pattern
    threshold: conint(ge=2)  # type: ignore[valid-type]
    window_hours: conint(ge=1, le=24 * 31)  # type: ignore[valid-type]
    message_buyers: bool
    buyers_within_days: conint(ge=1)  # type: ignore[valid-type]
    texts: ProductTexts


class PromiseTexts(StrictModel):
    """What the customer hears when their promise is handed to a person, by claim kind
    (PROMISE_WINDOWS), or when the order is on hold."""

    trace: str
    not_received: str
    on_hold: str

    @validator("trace", "not_received")
    def _placeholders(cls, value: str) -> str:
        return check_text(value, PROMISE_PLACEHOLDERS, ("order_id",))

    @validator("on_hold")
    def _nothing_promised(cls, value: str) -> str:
        return check_text(value, ON_HOLD_PLACEHOLDERS, ("order_id",))


class PromiseNextSteps(StrictModel):
    """The handoff's next step: which promise, and what keeps it."""

    trace: str
    not_received: str
    on_hold: str

    @validator("*")
    def _placeholders(cls, value: str) -> str:
        return check_text(value, NEXT_STEP_PLACEHOLDERS, ("claim_id",))


class PromiseSettings(StrictModel):
    enabled: bool
    every_minutes: conint(ge=1)  # type: ignore[valid-type]
    look_back_days: conint(ge=1)  # type: ignore[valid-type]
    texts: PromiseTexts
    next_steps: PromiseNextSteps


class MonitorPolicy(StrictModel):
    version: Literal[1]
    only_in_business_hours: bool
    whatsapp_window_closed_template: str
    shipments: ShipmentSettings
    products: ProductSettings
    promises: PromiseSettings

    def check_channels(self, channels: ChannelPolicy, path: Path) -> None:
        """Outside WhatsApp's window the connector sends the template of channels.yml;
        naming another one here would promise what is not sent."""
        sent = channels.whatsapp.window_closed_template.name
        if self.whatsapp_window_closed_template != sent:
            raise PolicyError(
                f"{path}: whatsapp_window_closed_template: "
                f"{self.whatsapp_window_closed_template!r} is not the template the WhatsApp "
                f"connector sends outside the 24-hour window ({sent!r}, from "
                "policy/channels.yml whatsapp.window_closed_template); name that one")


def load_monitor_policy(channels: ChannelPolicy,
                        directory: Optional[Path] = None) -> MonitorPolicy:
    path = (directory or policy_dir()) / "monitor.yml"
    policy = parse_yaml_model(MonitorPolicy, path)
    policy.check_channels(channels, path)
    return policy


# --- tables (beside the gateway's records) ----------------------------------------------

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


# --- customers' conversations -----------------------------------------------------------

@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    connector: str
    channel: str
    sender: str
    last_inbound_at: float

    @property
    def masked(self) -> str:
        return f"{self.connector}:{mask(self.sender)}"


def sender_phone(connector: str, sender: str) -> Optional[str]:
    """The E.164 number of a phone channel's sender: Twilio's From ('+1415…',
    'whatsapp:+1415…') or a WhatsApp id (the number with its country code, no '+')."""
    number = sender.removeprefix("whatsapp:")
    if connector == "whatsapp" and number.isdigit():
        number = f"+{number}"
    return normalize_phone(number, "ZZ") if number.startswith("+") else None


@dataclass(frozen=True)
class Directory:
    """Which conversations belong to which customer, read once per run."""

    by_phone: Mapping[str, Sequence[Conversation]]
    by_customer: Mapping[int, Sequence[Conversation]]
    phone_region: str

    def conversations_of(self, customer: Customer) -> List[Conversation]:
        found = {c.conversation_id: c for c in self.by_customer.get(customer.customer_id, ())}
        key = normalize_phone(customer.phone, self.phone_region)
        for conversation in self.by_phone.get(key, ()) if key else ():
            found[conversation.conversation_id] = conversation
        return list(found.values())

    def last_used(self, customer: Customer) -> Optional[Conversation]:
        found = self.conversations_of(customer)
        if not found:
            return None
        return max(found, key=lambda c: (c.last_inbound_at, c.conversation_id))


def read_directory(engine: Engine, shop: Store, phone_region: str) -> Directory:
    """Phone conversations by phone key; any conversation whose handoff carries a
    verified order, by that order's customer."""
    c, h = conversations.c, handoff_tables.handoffs.c
    with engine.connect() as db:
        rows = db.execute(sa.select(c.conversation_id, c.connector, c.channel, c.sender,
                                    c.last_inbound_at)).all()
        verified = db.execute(sa.select(h.conversation_id, h.order_id).where(
            h.customer_verified.is_(True), h.order_id.is_not(None)).distinct()).all()
    known = {row.conversation_id: Conversation(row.conversation_id, row.connector, row.channel,
                                               row.sender, float(row.last_inbound_at))
             for row in rows}
    by_phone: Dict[str, List[Conversation]] = defaultdict(list)
    for conversation in known.values():
        key = sender_phone(conversation.connector, conversation.sender)
        if conversation.connector in PHONE_CONNECTORS and key:
            by_phone[key].append(conversation)
    by_customer: Dict[int, List[Conversation]] = defaultdict(list)
    owners: Dict[str, Optional[Order]] = {}
    for conversation_id, order_id in verified:
        if conversation_id not in known:
            continue
        if order_id not in owners:
            owners[order_id] = shop.orders.get_order(order_id)
        order = owners[order_id]
        if order is not None:
            by_customer[order.customer.customer_id].append(known[conversation_id])
    return Directory(dict(by_phone), dict(by_customer), phone_region)


# --- shipment exceptions ----------------------------------------------------------------

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


# --- promises ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DuePromise:
    claim: CarrierClaim
    order: Order
    shipment: Shipment
    due: date
    hold: Optional[Hold]

    @property
    def last_scan(self) -> datetime:
        latest = self.shipment.latest_event
        return latest.time if latest else self.shipment.shipped_at


# Why a promise needs nothing now, as `bot monitor promises` counts them.
NOTHING_DUE = {"not_yet": "not due yet", "moved": "void, the parcel moved",
               "kept": "kept, a replacement or refund exists"}


def moved_since(shipment: Shipment, since: datetime) -> bool:
    latest = shipment.latest_event
    return shipment.delivered_at is not None or (latest is not None and latest.time > since)


def remedied(shop: Store, order_id: str) -> bool:
    """The order has a replacement or a refund, or the bot's write of one is under way or
    unconfirmed (then a person already checks it: write_unconfirmed)."""
    if shop.orders.replacement_of(order_id) is not None or shop.returns.refunds(order_id):
        return True
    return any(w.kind in REMEDY_WRITES and w.status != "refused"
               for w in shop.writes.for_order(order_id))


def find_promises(shop: Store, escalation: EscalationPolicy, settings: PromiseSettings,
                  now: datetime) -> Tuple[List[DuePromise], Dict[str, List[str]]]:
    """The promises due today, oldest first, from fresh store state; and the claim ids
    of the others by why nothing is due (NOTHING_DUE)."""
    since = now - timedelta(days=settings.look_back_days)
    due: List[DuePromise] = []
    nothing: Dict[str, List[str]] = {reason: [] for reason in NOTHING_DUE}
    for claim in shop.delivery.claims_opened(since, tuple(PROMISE_WINDOWS)):
        order = shop.orders.get_order(claim.order_id)
        shipment = shop.delivery.get_shipment(claim.order_id)
        if order is None or shipment is None:  # the store opens claims on shipments only
            continue
        falls_due = escalation.promised_by(claim.kind, claim.created_at)
        if now.date() < falls_due:
            nothing["not_yet"].append(claim.claim_id)
        elif claim.kind == "trace" and moved_since(shipment, claim.created_at):
            nothing["moved"].append(claim.claim_id)
        elif remedied(shop, order.order_id):
            nothing["kept"].append(claim.claim_id)
        else:
            due.append(DuePromise(claim, order, shipment, falls_due,
                                  shop.writes.hold_on(order.order_id)))
    return due, nothing


def promise_facts(promise: DuePromise) -> Dict[str, str]:
    order, shipment, claim = promise.order, promise.shipment, promise.claim
    return {
        "first_name": first_name(order.customer), "order_id": order.order_id,
        "claim_id": claim.claim_id, "carrier": shipment.carrier,
        "tracking_number": shipment.tracking_number, "tracking_url": shipment.tracking_url,
        "opened_on": day(claim.created_at.date()), "due": day(promise.due),
        "last_scan": day(promise.last_scan.date()),
    }


def promise_target(promise: DuePromise, settings: PromiseSettings,
                   escalation: EscalationPolicy) -> Target:
    """The customer to tell, with the handoff to open first. An order on hold goes to
    the team of its hold's rule, and the customer hears no promise."""
    facts = promise_facts(promise)
    hold = promise.hold
    which = "on_hold" if hold else promise.claim.kind
    reason = escalation.rule(PROMISE_RULE)
    team = escalation.rules.get(hold.rule, reason) if hold else reason
    what = (f"Promise due {facts['due']}: {promise.claim.kind.replace('_', '-')} claim "
            f"{facts['claim_id']} opened {facts['opened_on']}; last carrier scan "
            f"{facts['last_scan']}; no replacement or refund yet"
            + (f"; order on hold ({hold.rule}) since {day(hold.created_at.date())}" if hold
               else ""))
    handoff = {
        "reason_code": reason.reason, "rule": PROMISE_RULE, "tier": team.tier,
        "queue": team.team, "customer_name": promise.order.customer.name,
        # linked by the phone on the order, or by a verified handoff (read_directory)
        "customer_verified": True, "customer_contact": "",
        "order_id": promise.order.order_id, "slots": {}, "actions_attempted": [],
        "summary": {"what_happened": what,
                    "next": getattr(settings.next_steps, which).format(
                        **facts, hold_rule=hold.rule if hold else ""),
                    "eta": escalation.tiers[team.tier].team_reply},
    }
    return Target(subject=promise.claim.claim_id, kinds=(PROMISE_KIND,),
                  texts={PROMISE_KIND: getattr(settings.texts, which).format(**facts)},
                  customer=promise.order.customer, order_id=promise.order.order_id,
                  handoff=handoff)


# --- product contacts -------------------------------------------------------------------

@dataclass
class SkuContacts:
    sku: str
    product: str
    conversations: Set[str] = field(default_factory=set)


def order_ids_in(text: str) -> List[str]:
    """Every order number in a message, spelled as the bot reads one."""
    return [f"{m.group(1).upper()}{m.group(2)}" for m in ORDER_ID_PATTERN.finditer(text or "")]


def contacts_by_sku(engine: Engine, shop: Store, since: float,
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


# --- one customer to reach ---------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A customer to message about one subject: the first of `kinds` not claimed yet
    is the message; the other unclaimed ones count as covered by it."""

    subject: str
    kinds: Tuple[str, ...]
    texts: Mapping[str, str]
    customer: Customer
    order_id: str
    sku: str = ""
    # a promise: the handoff (HandoffDesk.follow_up values) opened before the message
    handoff: Optional[Mapping[str, Any]] = None

    @property
    def label(self) -> str:
        if self.kinds[0] == PRODUCT_KIND:
            return f"{self.order_id} {self.sku}".strip()
        if self.kinds[0] == PROMISE_KIND:
            return f"{self.order_id} {self.subject}"
        return self.order_id


@dataclass(frozen=True)
class Attempt:
    label: str  # order id (with the SKU or claim id); never a contact
    kind: str
    result: Result
    handoff: str = ""  # a promise's handoff reference (H-12) once handed over


@dataclass
class RunReport:
    monitor: MonitorName
    at: float
    outside_hours: bool = False
    opens: str = ""  # when outside business hours: "today at 08:00"
    attempts: List[Attempt] = field(default_factory=list)
    lost: List[str] = field(default_factory=list)
    alerts: List[Dict[str, Any]] = field(default_factory=list)
    contacts: Dict[str, int] = field(default_factory=dict)
    nothing_due: Dict[str, List[str]] = field(default_factory=dict)  # promises

    def counts(self) -> Dict[str, int]:
        counted: Dict[str, int] = {result: 0 for result in RESULTS}
        for attempt in self.attempts:
            counted[attempt.result] += 1
        return counted

    def labels(self, result: Result) -> List[str]:
        return [a.label for a in self.attempts if a.result == result]

    def handed_over(self) -> List[str]:
        return [f"{a.label} ({a.handoff})" for a in self.attempts if a.handoff]

    def summary(self) -> str:
        """One line for the log: counts only."""
        counts = ", ".join(f"{result} {n}" for result, n in self.counts().items() if n)
        found = f"{len(self.attempts)} to reach ({counts or 'none'})"
        extra = f"; {len(self.alerts)} new alerts" if self.monitor == "products" else ""
        if self.monitor == "promises":
            found = f"{len(self.attempts)} due ({counts or 'none'}), " \
                    f"{len(self.handed_over())} handed to a person"
            extra = "".join(f"; {NOTHING_DUE[reason]} {len(ids)}"
                            for reason, ids in self.nothing_due.items() if ids)
        hours = (f"; outside business hours (open again {self.opens}), nothing sent"
                 if self.outside_hours else "")
        return f"monitor {self.monitor}: {found}{extra}{hours}"

    def lines(self) -> List[str]:
        """What `bot monitor` prints: counts, then which orders need a look."""
        lines = [self.summary()]
        for alert in self.alerts:
            lines.append(f"ALERT {alert['sku']} ({alert['product']}): {alert['contacts']} "
                         f"conversations in {alert['window_hours']} h "
                         f"(threshold {alert['threshold']})")
        if self.handed_over():
            lines.append(f"handed to a person: {_listed(self.handed_over())}")
        for result, meaning in (PROMISE_NOTED if self.monitor == "promises" else NOTED).items():
            labels = self.labels(result)
            if labels:
                lines.append(f"{meaning}: {_listed(labels)}")
        if self.lost:
            lines.append(f"declared lost by the carrier (left to people): {_listed(self.lost)}")
        return lines


# The results `bot monitor` lists order by order, with what they mean.
NOTED: Dict[Result, str] = {
    "no_conversation": "not messaged, no conversation of the customer is known",
    "opted_out": "not messaged, opted out",
    "with_agent": "not messaged, a person has the conversation",
    "window_closed": "not messaged, WhatsApp via Twilio outside the 24-hour window",
    "failed": "failed, not tried again (bot deliveries --status failed)",
    "not_attempted": "not sent, the channel is off here; tried again next run",
}


# The same for promises: whether a person has it, and whether the customer heard.
PROMISE_NOTED: Dict[Result, str] = {
    "no_conversation": "due, NOT handed over: no conversation of the customer is known "
                       "(a person must take it up; tried again next run)",
    "with_agent": "due, left to the person who has the conversation (handed over once "
                  "they resolve it, unless the promise is kept by then)",
    "opted_out": "handed over, the customer not messaged (opted out)",
    "window_closed": "handed over, the customer not messaged (WhatsApp via Twilio outside "
                     "the 24-hour window)",
    "failed": "handed over, the message to the customer failed",
    "not_attempted": "handed over, the customer not messaged (the channel is off here)",
}


def _listed(labels: Sequence[str], most: int = 30) -> str:
    shown = ", ".join(labels[:most])
    return f"{shown} and {len(labels) - most} more" if len(labels) > most else shown


def outcome(deliveries: Sequence[Delivery]) -> Result:
    if any(d.status in REACHED and not d.template for d in deliveries):
        return "sent"
    if any(d.status in REACHED for d in deliveries):
        return "template"
    if deliveries and all(d.status == "failed" and d.attempts == 0 for d in deliveries):
        return "not_attempted"
    if any(d.status == "blocked" for d in deliveries):
        return "blocked"
    return "failed"


# --- the runs -----------------------------------------------------------------------------

class Outreach:
    """One run of a monitor. Database work runs on the records' threads; sends go
    through `send`, the router's delivery."""

    def __init__(self, policy: MonitorPolicy, records: GatewayRecords, shop: Store,
                 desk: HandoffDesk, send: Send, bus: EventBus,
                 hours: Optional[BusinessHours] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.escalation = desk.escalation
        # customers' phone numbers are read as the bot reads them (escalation.yml)
        self.phone_region = self.escalation.identity.default_phone_region
        self.records = records
        self.shop = shop
        self.desk = desk
        self.handoffs: HandoffStore = desk.store
        self.send = send
        self.bus = bus
        self.hours = hours
        self.clock = clock
        create_tables(metadata, records.engine)

    @classmethod
    def for_router(cls, router: Router, shop: Store, policy: MonitorPolicy) -> Outreach:
        """Through the gateway's router: its delivery, records, handoffs, event bus and
        business hours."""
        desk = router.desk
        return cls(policy, router.records, shop, desk, router.deliver, desk.bus,
                   desk.policy.business_hours, desk.clock)

    async def run(self, monitor: MonitorName) -> RunReport:
        runs = {"shipments": self.shipments, "products": self.products,
                "promises": self.promises}
        return await runs[monitor]()

    def _report(self, monitor: MonitorName, now: float) -> RunReport:
        """An empty report, which says whether this is outside business hours."""
        report = RunReport(monitor, now)
        if self.policy.only_in_business_hours and self.hours is not None:
            moment = datetime.fromtimestamp(now, timezone.utc)
            opens = self.hours.next_open(moment)
            if opens > moment:
                report.outside_hours = True
                report.opens = describe_opening(opens, moment, self.hours.timezone)
        return report

    # shipments

    async def shipments(self) -> RunReport:
        now = self.clock()
        moment = datetime.fromtimestamp(now, timezone.utc)
        settings = self.policy.shipments
        report = self._report("shipments", now)
        found, report.lost = await self.records.read(find_shipment_exceptions, self.shop,
                                                     settings, moment)
        targets = [Target(subject=f.order.order_id, kinds=f.kinds,
                          texts={kind: getattr(settings.texts, kind).format(
                              **shipment_facts(f, moment)) for kind in f.kinds},
                          customer=f.order.customer, order_id=f.order.order_id)
                   for f in found]
        report.attempts = await self._reach_all(targets, report.outside_hours)
        log.info("%s", report.summary())
        return report

    # products

    async def products(self) -> RunReport:
        now = self.clock()
        settings = self.policy.products
        report = self._report("products", now)
        window = settings.window_hours * 3600
        by_sku = await self.records.read(contacts_by_sku, self.records.engine, self.shop,
                                         now - window, now)
        report.contacts = {sku: len(c.conversations) for sku, c in sorted(by_sku.items())}
        for found in sorted(by_sku.values(), key=lambda c: c.sku):
            if len(found.conversations) < settings.threshold:
                continue
            alert = await self.records.write(record_alert, self.records.engine, found,
                                             settings, now)
            if alert is not None:
                report.alerts.append(alert)
                await self._announce(alert)
        if settings.message_buyers:
            report.attempts = await self._reach_all(await self._buyer_targets(now),
                                                    report.outside_hours)
        log.info("%s", report.summary())
        return report

    async def _announce(self, alert: Dict[str, Any]) -> None:
        """Consoles hear it on the handoff event bus (through Redis, every gateway's);
        operators in the log."""
        log.warning("monitor alert: %s (%s): %d conversations in %d h, threshold %d",
                    alert["sku"], alert["product"], alert["contacts"], alert["window_hours"],
                    alert["threshold"])
        public = {k: v for k, v in alert.items() if k != "fired_at_epoch"}
        await self.bus.publish({"type": ALERT_EVENT, "alert": {
            **public, "message_buyers": self.policy.products.message_buyers}})

    async def _buyer_targets(self, now: float) -> List[Target]:
        """The buyers of every SKU alerted within the window, one message per alert and
        customer (about their newest order with it); an alert whose buyers were not all
        reachable on its first run is taken up again on the next ones."""
        settings = self.policy.products
        fired = await self.records.read(recent_alerts, self.records.engine,
                                        now - settings.window_hours * 3600)
        if not fired:
            return []
        since = datetime.fromtimestamp(now, timezone.utc) - timedelta(
            days=settings.buyers_within_days)
        recent = await self.records.read(self.shop.orders.orders_since, since)
        targets: List[Target] = []
        for alert in sorted(fired, key=lambda a: a["id"]):
            newest: Dict[int, Tuple[Order, str]] = {}
            for order in recent:  # newest first
                if order.status not in BUYER_STATUSES:
                    continue
                for item in order.items:
                    if item.sku == alert["sku"]:
                        newest.setdefault(order.customer.customer_id, (order, item.name))
            for customer_id, (order, product) in sorted(newest.items()):
                text = settings.texts.buyers.format(
                    first_name=first_name(order.customer), order_id=order.order_id,
                    product=product, sku=alert["sku"])
                targets.append(Target(subject=f"{alert['id']}:{customer_id}",
                                      kinds=(PRODUCT_KIND,), texts={PRODUCT_KIND: text},
                                      customer=order.customer, order_id=order.order_id,
                                      sku=alert["sku"]))
        return targets

    # promises

    async def promises(self) -> RunReport:
        now = self.clock()
        settings = self.policy.promises
        report = self._report("promises", now)
        due, report.nothing_due = await self.records.read(
            find_promises, self.shop, self.escalation, settings,
            datetime.fromtimestamp(now, timezone.utc))
        targets = [promise_target(promise, settings, self.escalation) for promise in due]
        report.attempts = await self._reach_all(targets, report.outside_hours)
        for attempt in report.attempts:
            if attempt.result == "no_conversation":  # nobody has it: say so every run
                log.warning("monitor: promise %s is due and no conversation of the customer "
                            "is known; a person must take it up", attempt.label)
        log.info("%s", report.summary())
        return report

    # reaching customers

    async def _reach_all(self, targets: Sequence[Target], outside_hours: bool) -> List[Attempt]:
        if outside_hours:
            return [Attempt(t.label, t.kinds[0], "outside_hours") for t in targets]
        directory = await self.records.read(read_directory, self.records.engine, self.shop,
                                            self.phone_region)
        # one at a time: the channels' rate limits pace them anyway
        return [await (self._hand_over(target, directory) if target.handoff is not None
                       else self._reach(target, directory)) for target in targets]

    async def _reach(self, target: Target, directory: Directory) -> Attempt:
        claimed = await self.records.read(self._claimed_kinds, target)
        unclaimed = [kind for kind in target.kinds if kind not in claimed]
        if not unclaimed:
            return Attempt(target.label, target.kinds[0], "already_messaged")
        where = await self._where_to_send(unclaimed[0], target,
                                          directory.last_used(target.customer))
        if isinstance(where, Attempt):
            return where
        conversation = where
        kinds = await self.records.write(self._claim, target, conversation)
        if not kinds:  # another gateway (or run) got there first
            return Attempt(target.label, unclaimed[0], "already_messaged")
        result = await self._send_claimed(target, kinds, conversation)
        log.info("monitor: %s %s to %s: %s", kinds[0], target.label, conversation.masked,
                 result)
        return Attempt(target.label, kinds[0], result)

    async def _hand_over(self, target: Target, directory: Directory) -> Attempt:
        """A due promise: claimed like a message (once across runs and gateways), then
        handed to a person in the customer's last conversation, then the customer is
        told. Nothing is claimed while no conversation is known or a person has it, so
        a later run hands it over. Once the handoff is open the promise is handled,
        whether or not the message reaches the customer: the person writes to them."""
        kind = target.kinds[0]
        assert target.handoff is not None

        def attempt(result: Result, handoff: str = "") -> Attempt:
            return Attempt(target.label, kind, result, handoff)

        await self.records.write(self._drop_stale_claim, target)
        if await self.records.read(self._claimed_kinds, target):
            return attempt("already_handled")
        conversation = directory.last_used(target.customer)
        if conversation is None:
            return attempt("no_conversation")
        if await self._with_agent(conversation):
            return attempt("with_agent")
        if not await self.records.write(self._claim, target, conversation):
            return attempt("already_handled")
        place = Place(conversation.connector, conversation.channel, conversation.sender)
        opened = await self.desk.follow_up(place, dict(target.handoff))
        if opened is None:  # the customer reached a person meanwhile: theirs for now
            await self.records.write(self._release, target, [kind])
            return attempt("with_agent")
        handoff = f"H-{opened['id']}"
        await self.records.write(self._settle, target, kind, "handed_over", [], handoff)
        unsendable = await self._unsendable(conversation)
        if unsendable is not None:
            await self.records.write(self._settle, target, kind, unsendable, [], handoff)
            result = unsendable
        else:
            result = await self._send_claimed(target, [kind], conversation, handoff)
        log.info("monitor: promise %s handed over as %s in %s; customer: %s", target.label,
                 handoff, conversation.masked, result)
        return attempt(result, handoff)

    async def _send_claimed(self, target: Target, kinds: Sequence[str],
                            conversation: Conversation, handoff: str = "") -> Result:
        """Send the claimed message and record what became of it."""
        deliveries = await self.send(conversation.connector, conversation.sender,
                                     [Reply(text=target.texts[kinds[0]])], "bot")
        result = outcome(deliveries)
        if result == "not_attempted" and target.handoff is None:
            await self.records.write(self._release, target, kinds)
        else:  # a promise's handoff is open: it is not handed over again
            await self.records.write(self._settle, target, kinds[0], result, deliveries,
                                     handoff)
        return result

    async def _where_to_send(self, kind: str, target: Target,
                    conversation: Optional[Conversation]) -> Conversation | Attempt:
        """The conversation to send on, or why not (nothing is claimed then, so a later
        run sends once the reason is gone)."""
        if conversation is None:
            return Attempt(target.label, kind, "no_conversation")
        if await self._with_agent(conversation):
            return Attempt(target.label, kind, "with_agent")
        unsendable = await self._unsendable(conversation)
        return conversation if unsendable is None else Attempt(target.label, kind, unsendable)

    async def _with_agent(self, conversation: Conversation) -> bool:
        return await self.records.read(self.handoffs.open_for,
                                       conversation.conversation_id) is not None

    async def _unsendable(self, conversation: Conversation) -> Optional[Result]:
        """Why the monitor may not write on the conversation now, if it may not."""
        if await self.records.read(self._opted_out, conversation):
            return "opted_out"
        if conversation.connector == "twilio" and conversation.channel == "whatsapp" and \
                self.clock() - conversation.last_inbound_at >= SERVICE_WINDOW_SECONDS:
            # the Twilio connector has no template to send instead of free text
            return "window_closed"
        return None

    def _opted_out(self, conversation: Conversation) -> bool:
        since = self.records.opted_out_since(conversation.connector, conversation.sender)
        if since is None:
            return False
        # a Telegram chat that blocked the bot receives again once it writes
        # (connectors/telegram.py); other opt-outs last until the customer opts in
        return not (conversation.connector == "telegram"
                    and conversation.last_inbound_at > since)

    def _claimed_kinds(self, target: Target) -> Set[str]:
        with self.records.engine.connect() as db:
            return set(db.execute(sa.select(outreach.c.kind).where(
                outreach.c.subject == target.subject,
                outreach.c.kind.in_(target.kinds))).scalars())

    def _claim(self, target: Target, conversation: Conversation) -> List[str]:
        """Claim the target's unclaimed kinds in one transaction: the first one claimed
        is the message ("sending"), the rest are covered by it. [] when none was left."""
        now = self.clock()
        claimed: List[str] = []
        with self.records.engine.begin() as db:
            for kind in target.kinds:
                if insert_if_absent(db, outreach, {
                    "kind": kind, "subject": target.subject, "order_id": target.order_id,
                    "sku": target.sku, "customer_id": target.customer.customer_id,
                    "conversation_id": conversation.conversation_id,
                    "status": "covered" if claimed else "sending",
                    "detail": json.dumps({"by": claimed[0]} if claimed else {}),
                    "created_at": now, "updated_at": now,
                }):
                    claimed.append(kind)
        return claimed

    def _settle(self, target: Target, kind: str, result: str,
                deliveries: Sequence[Delivery], handoff: str = "") -> None:
        detail: Dict[str, Any] = {"deliveries": [{"status": d.status, "error": d.error[:200],
                                                  "template": d.template} for d in deliveries]}
        if handoff:
            detail["handoff"] = handoff
        with self.records.engine.begin() as db:
            db.execute(outreach.update().where(
                outreach.c.kind == kind, outreach.c.subject == target.subject).values(
                status=result, detail=json.dumps(detail), updated_at=self.clock()))

    def _drop_stale_claim(self, target: Target) -> None:
        """Forget the promise's claim if it is still "sending" long after it was made:
        its handoff never opened. Only that row, so of two gateways finding it stale,
        the one that claims it afresh first keeps it."""
        with self.records.engine.begin() as db:
            db.execute(outreach.delete().where(
                outreach.c.kind == PROMISE_KIND, outreach.c.subject == target.subject,
                outreach.c.status == "sending",
                outreach.c.updated_at < self.clock() - STALE_PROMISE_CLAIM_SECONDS))

    def _release(self, target: Target, kinds: Sequence[str]) -> None:
        """Nothing was done (the channel is off here, or a person took the conversation
        before the promise's handoff opened): the next run may do it."""
        with self.records.engine.begin() as db:
            db.execute(outreach.delete().where(outreach.c.subject == target.subject,
                                               outreach.c.kind.in_(list(kinds))))

    async def alerts(self, days: int = 7) -> List[Dict[str, Any]]:
        return await self.records.read(recent_alerts, self.records.engine,
                                       self.clock() - days * 86400)


# --- on a schedule inside the gateway ----------------------------------------------------

class Monitor:
    """Runs the enabled monitors every `every_minutes`, each in its own task. A failed
    run is logged (without personal data) and the next one comes as planned; `stop`
    lets a run under way finish its sends for up to `grace_seconds`."""

    def __init__(self, outreach: Outreach, first_run_after_seconds: float = 30.0) -> None:
        self.outreach = outreach
        self.first_run_after = first_run_after_seconds
        self._stopping = asyncio.Event()
        self._tasks: List[asyncio.Task[None]] = []
        self.runs: Dict[MonitorName, int] = {name: 0 for name in MONITORS}

    @classmethod
    def for_router(cls, router: Router, shop: Store, policy: MonitorPolicy) -> Monitor:
        return cls(Outreach.for_router(router, shop, policy))

    def enabled(self) -> List[Tuple[MonitorName, float]]:
        policy = self.outreach.policy
        schedule: List[Tuple[MonitorName, float]] = []
        for name in MONITORS:
            settings = getattr(policy, name)
            if settings.enabled:
                schedule.append((name, settings.every_minutes * 60.0))
        return schedule

    async def start(self) -> None:
        if self._tasks:
            return
        self._stopping.clear()
        for name, every in self.enabled():
            log.info("monitor %s: every %.0f minutes", name, every / 60)
            self._tasks.append(asyncio.create_task(self._every(name, every),
                                                   name=f"monitor-{name}"))

    async def stop(self, grace_seconds: float = 10.0) -> None:
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _every(self, name: MonitorName, seconds: float) -> None:
        if await self._stopped_within(self.first_run_after):
            return
        while True:
            try:
                await self.outreach.run(name)
            except Exception as error:  # a run's failure must not end the schedule
                log.error("monitor %s run failed: %s at %s; next run in %.0f s", name,
                          type(error).__name__, _where(error), seconds)
            self.runs[name] += 1
            if await self._stopped_within(seconds):
                return

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()


def _where(error: BaseException) -> str:
    """Where it was raised: file and line, no values (an SQL error's message can quote
    a phone number)."""
    frames = traceback.extract_tb(error.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


# --- once, from the CLI --------------------------------------------------------------------

async def run_once(monitor: MonitorName, settings: Optional[Settings] = None,
                   policy: Optional[MonitorPolicy] = None) -> RunReport:
    """`bot monitor shipments|products|promises`: one run on the gateway's parts as `bot
    serve` wires them (channels from the environment, records, handoff desk, event bus,
    router) but not serving: only its channels are started, not the inbox, so this
    process takes no customer's message."""
    services = build_services(settings)
    router = services.router
    try:
        for channel in router.channels.values():
            await channel.start()
        outreach = Outreach.for_router(router, services.store, policy or load_monitor_policy(
            router.policy))
        return await outreach.run(monitor)
    finally:
        for channel in router.channels.values():
            await channel.stop()
        await services.close()
