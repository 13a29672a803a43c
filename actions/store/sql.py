"""The store systems on SQLAlchemy 1.4 (Core, 2.0-style `select()`).

One schema, one Engine shared by every system. SQLite under `var/store.db` by
default (no server to install), PostgreSQL when DATABASE_URL says so.
`open_store()` creates missing tables; `actions.store.seed` fills the demo data.
"""
from __future__ import annotations

import functools
import hmac
import json
import os
import re
import secrets
import string
from collections import defaultdict
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    FrozenSet,
    Mapping,
    Optional,
    ParamSpec,
    Sequence,
    TypeVar,
)

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from actions.store.types import (
    Address,
    CarrierClaim,
    CodeCheck,
    ContactLog,
    Customer,
    DeliveryException,
    DeliverySystem,
    Hold,
    OneTimeCodes,
    Order,
    OrderItem,
    OrderStatus,
    OrderSystem,
    Refund,
    RefundStatus,
    ReturnRecord,
    ReturnsSystem,
    ReturnStatus,
    Shipment,
    StoreError,
    StoreUnavailable,
    TrackingEvent,
    WriteLog,
    WriteRecord,
    normalize_order_id,
)
from common.paths import var_dir
from common.sql import create_store_engine, create_tables

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Clock = Callable[[], datetime]
T = TypeVar("T", bound="DataclassInstance")
P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_LABEL_BASE_URL = "https://returns.example-store.test"
# "trace" asks the carrier to find a stuck parcel; the others are claims for a loss.
CLAIM_KINDS = frozenset({"not_received", "lost", "damaged", "wrong_item", "trace"})
REFUND_METHODS = frozenset({"original_payment", "store_credit"})
REPLACEABLE = frozenset({OrderStatus.SHIPPED, OrderStatus.DELIVERED, OrderStatus.RETURNED})
REPLACEMENT_LEAD_DAYS = 5
ADDRESS_FIELDS = ("name", "line1", "line2", "city", "postal_code", "country")
ID_ALPHABET = string.ascii_uppercase + string.digits
CENT = Decimal("0.01")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values (SQLite gives them back) are UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class UtcDateTime(sa.types.TypeDecorator):
    """Stored in UTC on every backend, read back timezone-aware UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        return None if value is None else as_utc(value)


class Money(sa.types.TypeDecorator):
    """NUMERIC(12,2) read back as Decimal (SQLite has no decimal type: quantize here)."""

    impl = sa.Numeric(12, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Numeric(12, 2, asdecimal=False))
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: Any, dialect: Any) -> Optional[Decimal]:
        return None if value is None else Decimal(value).quantize(CENT)

    def process_result_value(self, value: Any, dialect: Any) -> Optional[Decimal]:
        return None if value is None else Decimal(str(value)).quantize(CENT)


# --- schema -----------------------------------------------------------------

metadata = sa.MetaData()


def _address_columns(prefix: str) -> list[sa.Column]:
    return [
        sa.Column(f"{prefix}_{name}", sa.String(200), nullable=False, default="")
        for name in ADDRESS_FIELDS
    ]


def _order_fk(**kwargs: Any) -> sa.Column:
    return sa.Column("order_id", sa.String(16), sa.ForeignKey("orders.order_id"), **kwargs)


def _bot_record_order_id() -> sa.Column:
    """The order a bot record (write log, hold) is about: no foreign key, since with
    another order platform (STORE_BACKEND) the order is not in this database."""
    return sa.Column("order_id", sa.String(16), nullable=False, index=True)


customers = sa.Table(
    "customers", metadata,
    sa.Column("customer_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("phone", sa.String(32), nullable=False),
    sa.Column("phone_digits", sa.String(20), nullable=False, index=True),
)
sa.Index("ix_customers_email_lower", sa.func.lower(customers.c.email))

orders = sa.Table(
    "orders", metadata,
    sa.Column("order_id", sa.String(16), primary_key=True),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.customer_id"),
              nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("placed_at", UtcDateTime, nullable=False),
    sa.Column("promised_date", sa.Date, nullable=False),
    sa.Column("total", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("payment_method", sa.String(32), nullable=False),
    *_address_columns("shipping"),
    *_address_columns("billing"),
    sa.Column("shipped_at", UtcDateTime),
    sa.Column("delivered_at", UtcDateTime),
    sa.Column("cancelled_at", UtcDateTime),
    sa.Column("cancel_reason", sa.String(500)),
    # a free replacement records the order it replaces (at most one per order)
    sa.Column("replaces_order_id", sa.String(16), sa.ForeignKey("orders.order_id"), unique=True),
    sa.Column("replacement_reason", sa.String(500)),
)

order_items = sa.Table(
    "order_items", metadata,
    sa.Column("item_id", sa.Integer, primary_key=True),
    _order_fk(nullable=False, index=True),
    sa.Column("sku", sa.String(32), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price", Money, nullable=False),
    sa.Column("returnable", sa.Boolean, nullable=False, default=True),
)

shipments = sa.Table(
    "shipments", metadata,
    _order_fk(primary_key=True),
    sa.Column("carrier", sa.String(16), nullable=False),
    sa.Column("tracking_number", sa.String(40), nullable=False),
    sa.Column("tracking_url", sa.String(300), nullable=False),
    sa.Column("shipped_at", UtcDateTime, nullable=False),
    sa.Column("eta", sa.Date, nullable=False),
    sa.Column("exception", sa.String(16), nullable=False, default=DeliveryException.NONE.value),
    sa.Column("delivered_at", UtcDateTime),
)

tracking_events = sa.Table(
    "tracking_events", metadata,
    sa.Column("event_id", sa.Integer, primary_key=True),
    sa.Column("order_id", sa.String(16), sa.ForeignKey("shipments.order_id"),
              nullable=False, index=True),
    sa.Column("time", UtcDateTime, nullable=False),
    sa.Column("location", sa.String(120), nullable=False),
    sa.Column("description", sa.String(300), nullable=False),
)

carrier_claims = sa.Table(
    "carrier_claims", metadata,
    sa.Column("claim_id", sa.String(16), primary_key=True),
    _order_fk(nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

returns = sa.Table(
    "returns", metadata,
    sa.Column("rma_id", sa.String(16), primary_key=True),
    _order_fk(nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("label_url", sa.String(300), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("shipped_at", UtcDateTime),
    sa.Column("received_at", UtcDateTime),
)

refunds = sa.Table(
    "refunds", metadata,
    sa.Column("refund_id", sa.String(16), primary_key=True),
    _order_fk(nullable=False, index=True),
    sa.Column("amount", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False, default=""),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("issued_at", UtcDateTime),
    sa.Column("method", sa.String(32), nullable=False, default="original_payment"),
)

# The bot's own record of every write it made or tried (actions/guarded.py), by
# idempotency key: the audit trail agents see, and what a retried turn finds.
guarded_writes = sa.Table(
    "guarded_writes", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("conversation_id", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    _bot_record_order_id(),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("before", sa.Text, nullable=False),
    sa.Column("after", sa.Text, nullable=False, default="{}"),
    sa.Column("reference", sa.String(64), nullable=False, default=""),
    sa.Column("error", sa.String(500), nullable=False, default=""),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
)

# Orders whose writes pause until a person reviews them (stop-the-line rules).
order_holds = sa.Table(
    "order_holds", metadata,
    sa.Column("hold_id", sa.Integer, primary_key=True),
    _bot_record_order_id(),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("conversation_id", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

contact_events = sa.Table(
    "contact_events", metadata,
    sa.Column("event_id", sa.Integer, primary_key=True),
    sa.Column("customer_key", sa.String(254), nullable=False),
    sa.Column("issue", sa.String(64), nullable=False),
    sa.Column("conversation_id", sa.String(128), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_contact_events_key_issue_time", "customer_key", "issue", "created_at"),
)

# Serial numbers of the units shipped, and of those the warehouse received back with a
# return: a different one back is a swapped item.
item_serials = sa.Table(
    "item_serials", metadata,
    _order_fk(primary_key=True),
    sa.Column("sku", sa.String(32), primary_key=True),
    sa.Column("shipped_serial", sa.String(64), nullable=False),
    sa.Column("returned_serial", sa.String(64)),
)

# One-time codes that prove a customer owns an email or phone (actions/codes.py): only
# a hash of the code is kept.
one_time_codes = sa.Table(
    "one_time_codes", metadata,
    sa.Column("code_id", sa.Integer, primary_key=True),
    sa.Column("conversation_id", sa.String(200), nullable=False, index=True),
    sa.Column("contact", sa.String(254), nullable=False),
    sa.Column("code_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("wrong_tries", sa.Integer, nullable=False, default=0),
    sa.Column("used_at", UtcDateTime),
)


# --- helpers shared by the systems and the seed ------------------------------------

def digits_only(text: str) -> str:
    return re.sub(r"\D", "", text or "")


def address_values(prefix: str, address: Address) -> dict[str, str]:
    """The column values of `address` stored under `prefix` ('shipping' or 'billing')."""
    return {f"{prefix}_{name}": getattr(address, name) for name in ADDRESS_FIELDS}


def label_url(rma_id: str) -> str:
    base = os.environ.get("RETURN_LABEL_BASE_URL") or DEFAULT_LABEL_BASE_URL
    return f"{base.rstrip('/')}/labels/{rma_id}.pdf"


def new_id(prefix: str) -> str:
    """`prefix` + 8 random uppercase alphanumerics, e.g. 'RMA-7Q2K9D4M'."""
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(8))


def _from_row(cls: type[T], row: Any, **overrides: Any) -> T:
    """Build a dataclass from the row columns of the same names (plus overrides)."""
    mapping: Mapping[str, Any] = row._mapping
    values = {f.name: mapping[f.name] for f in fields(cls) if f.name in mapping}
    return cls(**{**values, **overrides})


def _require_id(order_id: str) -> str:
    canonical = normalize_order_id(order_id)
    if canonical is None:
        raise StoreError(f"not an order number: {order_id!r}")
    return canonical


def _order_status(conn: Connection, order_id: str) -> OrderStatus:
    status = conn.execute(
        sa.select(orders.c.status).where(orders.c.order_id == order_id)
    ).scalar_one_or_none()
    if status is None:
        raise StoreError(f"unknown order {order_id}")
    return OrderStatus(status)


def _unused_id(conn: Connection, key: sa.Column, prefix: str) -> str:
    """A fresh random id (`new_id(prefix)`) not yet used in column `key`."""
    for _ in range(10):
        candidate = new_id(prefix)
        if conn.execute(sa.select(key).where(key == candidate)).first() is None:
            return candidate
    raise StoreError(f"could not allocate a new {prefix} id")


def _lock_order(conn: Connection, order_id: str) -> None:
    """Make concurrent writers of one order take turns until this transaction ends, so
    a sum read next (refunds against the total) is still true when it is acted on. A
    write, not SELECT ... FOR UPDATE, which SQLite ignores: it holds PostgreSQL's row
    lock and SQLite's database write lock alike."""
    conn.execute(orders.update().where(orders.c.order_id == order_id)
                 .values(status=orders.c.status))


def _replaceable_order(conn: Connection, order_id: str) -> Any:
    """The row of a shipped/delivered/returned order that has no replacement yet."""
    original = conn.execute(sa.select(orders).where(orders.c.order_id == order_id)).first()
    if original is None:
        raise StoreError(f"unknown order {order_id}")
    if OrderStatus(original.status) not in REPLACEABLE:
        raise StoreError(f"order {order_id} is {original.status}: nothing to replace")
    if conn.execute(sa.select(orders.c.order_id)
                    .where(orders.c.replaces_order_id == order_id)).first():
        raise StoreError(f"order {order_id} already has a replacement")
    return original


def _next_order_id(conn: Connection, letter: str) -> str:
    """The order id after the highest one with this letter (A2200 -> A2201)."""
    highest = conn.execute(
        sa.select(orders.c.order_id).where(orders.c.order_id.like(f"{letter}%"))
        .order_by(sa.func.length(orders.c.order_id).desc(), orders.c.order_id.desc()).limit(1)
    ).scalar_one_or_none()
    return f"{letter}{int(highest[1:]) + 1 if highest else 1001}"


def _load_orders(conn: Connection, where: Any) -> list[Order]:
    """Orders matching `where`, newest first, with customer and items."""
    rows = conn.execute(
        sa.select(orders, customers.c.name.label("customer_name"),
                  customers.c.email, customers.c.phone)
        .join(customers)
        .where(where)
        .order_by(orders.c.placed_at.desc(), orders.c.order_id)
    ).all()
    items: dict[str, list[OrderItem]] = defaultdict(list)
    if rows:
        item_rows = conn.execute(
            sa.select(order_items)
            .where(order_items.c.order_id.in_([r.order_id for r in rows]))
            .order_by(order_items.c.item_id)
        )
        for item in item_rows:
            items[item.order_id].append(_from_row(OrderItem, item))
    return [_order(row, items[row.order_id]) for row in rows]


def _order(row: Any, items: list[OrderItem]) -> Order:
    customer = Customer(customer_id=row.customer_id, name=row.customer_name,
                        email=row.email, phone=row.phone)
    return _from_row(
        Order, row,
        customer=customer,
        status=OrderStatus(row.status),
        shipping_address=_address(row, "shipping"),
        billing_address=_address(row, "billing"),
        items=tuple(items),
    )


def _address(row: Any, prefix: str) -> Address:
    return Address(**{name: row._mapping[f"{prefix}_{name}"] for name in ADDRESS_FIELDS})


def _unavailable_on_database_errors(method: Callable[P, R]) -> Callable[P, R]:
    """A write whose database failed (gone, timed out) raises StoreUnavailable: whether
    the change was made is then unknown, and only reading the store again can tell."""

    @functools.wraps(method)
    def write(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
            raise StoreUnavailable(type(error.orig or error).__name__) from error

    return write


# --- the systems ------------------------------------------------------------------

class _System:
    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock


class SqlOrders(_System):
    """OrderSystem."""

    def get_order(self, order_id: str) -> Optional[Order]:
        canonical = normalize_order_id(order_id)
        if canonical is None:
            return None
        with self._engine.connect() as conn:
            found = _load_orders(conn, orders.c.order_id == canonical)
        return found[0] if found else None

    def orders_for_contact(self, contact: str) -> list[Order]:
        """Orders (newest first) of the customer with this email or E.164 phone number
        (`phone_digits` holds the number's E.164 digits), compared whole."""
        contact = (contact or "").strip()
        if "@" in contact:
            match = sa.func.lower(customers.c.email) == contact.lower()
        elif contact.startswith("+") and (digits := digits_only(contact)):
            match = customers.c.phone_digits == digits
        else:
            return []
        with self._engine.connect() as conn:
            return _load_orders(conn, match)

    def orders_since(self, since: datetime,
                     status: Optional[OrderStatus] = None) -> list[Order]:
        """Orders placed at or after `since`, newest first; only those in `status` when
        given."""
        match = orders.c.placed_at >= since
        if status is not None:
            match = sa.and_(match, orders.c.status == status.value)
        with self._engine.connect() as conn:
            return _load_orders(conn, match)

    @_unavailable_on_database_errors
    def cancel_order(self, order_id: str, reason: str) -> Order:
        """Cancel an unshipped order; what was paid is refunded to the payment method
        (a pending refund), in the same transaction."""
        canonical = _require_id(order_id)
        with self._engine.begin() as conn:
            cancelled = self._change_if_paid(conn, canonical, "cancelled",
                                             status=OrderStatus.CANCELLED.value,
                                             cancelled_at=self._clock(), cancel_reason=reason)
            if cancelled.total > 0:
                conn.execute(refunds.insert().values(
                    refund_id=_unused_id(conn, refunds.c.refund_id, "RF-"),
                    order_id=canonical, amount=cancelled.total, currency=cancelled.currency,
                    status=RefundStatus.PENDING.value, reason=f"cancelled: {reason}",
                    created_at=self._clock(), method="original_payment"))
            return cancelled

    @_unavailable_on_database_errors
    def change_shipping_address(self, order_id: str, address: Address) -> Order:
        with self._engine.begin() as conn:
            return self._change_if_paid(conn, _require_id(order_id), "redirected",
                                        **address_values("shipping", address))

    def customers_shipping_to(self, address: Address) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(
                sa.select(sa.func.count(sa.distinct(orders.c.customer_id))).where(
                    sa.func.lower(orders.c.shipping_line1) == address.line1.lower(),
                    orders.c.shipping_postal_code == address.postal_code)).scalar_one())

    def replacement_of(self, order_id: str) -> Optional[Order]:
        canonical = normalize_order_id(order_id)
        if canonical is None:
            return None
        with self._engine.connect() as conn:
            found = _load_orders(conn, orders.c.replaces_order_id == canonical)
        return found[0] if found else None

    @_unavailable_on_database_errors
    def create_replacement(self, order_id: str, reason: str) -> Order:
        """A new, free order with the same items, paid and ready to ship (one per order)."""
        canonical = _require_id(order_id)
        try:
            with self._engine.begin() as conn:
                original = _replaceable_order(conn, canonical)
                new_order_id, now = _next_order_id(conn, canonical[0]), self._clock()
                conn.execute(orders.insert().values(
                    **{name: value for name, value in original._mapping.items()
                       if name.startswith(("customer_id", "currency", "shipping_", "billing_"))},
                    order_id=new_order_id, status=OrderStatus.PAID.value, placed_at=now,
                    promised_date=(now + timedelta(days=REPLACEMENT_LEAD_DAYS)).date(),
                    total=Decimal("0"), payment_method="replacement",
                    replaces_order_id=canonical, replacement_reason=reason))
                conn.execute(order_items.insert().from_select(
                    ["order_id", "sku", "name", "quantity", "unit_price", "returnable"],
                    sa.select(sa.literal(new_order_id), order_items.c.sku, order_items.c.name,
                              order_items.c.quantity, sa.literal(Decimal("0"), Money),
                              order_items.c.returnable)
                    .where(order_items.c.order_id == canonical).order_by(order_items.c.item_id)))
                return _load_orders(conn, orders.c.order_id == new_order_id)[0]
        except sa.exc.IntegrityError as exc:  # a concurrent replacement or order id
            raise StoreError(f"order {canonical}: concurrent change, try again") from exc

    @staticmethod
    def _change_if_paid(conn: Connection, canonical: str, verb: str, **values: Any) -> Order:
        changed = conn.execute(
            orders.update()
            .where(orders.c.order_id == canonical, orders.c.status == OrderStatus.PAID.value)
            .values(**values)
        ).rowcount
        if not changed:
            status = _order_status(conn, canonical)
            raise StoreError(f"order {canonical} is {status.value} and can no longer be {verb}")
        return _load_orders(conn, orders.c.order_id == canonical)[0]


class SqlDelivery(_System):
    """DeliverySystem."""

    def get_shipment(self, order_id: str) -> Optional[Shipment]:
        canonical = normalize_order_id(order_id)
        if canonical is None:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(shipments).where(shipments.c.order_id == canonical)
            ).first()
            if row is None:
                return None
            events = conn.execute(
                sa.select(tracking_events)
                .where(tracking_events.c.order_id == canonical)
                .order_by(tracking_events.c.time, tracking_events.c.event_id)
            )
            return _from_row(Shipment, row, exception=DeliveryException(row.exception),
                             events=tuple(_from_row(TrackingEvent, e) for e in events))

    def order_shipped_as(self, tracking_number: str, since: datetime) -> Optional[str]:
        with self._engine.connect() as conn:
            found = conn.execute(
                sa.select(shipments.c.order_id)
                .join(orders, orders.c.order_id == shipments.c.order_id)
                .where(shipments.c.tracking_number == tracking_number,
                       orders.c.placed_at >= since)
                .order_by(shipments.c.shipped_at.desc()).limit(1)).scalar()
        return None if found is None else str(found)

    def shipments(self, order_id: str) -> list[Shipment]:
        """The demo store ships each order in one parcel."""
        shipment = self.get_shipment(order_id)
        return [] if shipment is None else [shipment]

    @_unavailable_on_database_errors
    def open_claim(self, order_id: str, kind: str) -> CarrierClaim:
        canonical = _require_id(order_id)
        if kind not in CLAIM_KINDS:
            raise StoreError(f"unknown claim kind {kind!r}; expected one of {sorted(CLAIM_KINDS)}")
        with self._engine.begin() as conn:
            _order_status(conn, canonical)
            if conn.execute(sa.select(shipments.c.order_id)
                            .where(shipments.c.order_id == canonical)).first() is None:
                raise StoreError(f"order {canonical} has not shipped: nothing to claim")
            claim_id = _unused_id(conn, carrier_claims.c.claim_id, "CLM-")
            conn.execute(carrier_claims.insert().values(
                claim_id=claim_id, order_id=canonical, kind=kind, created_at=self._clock()))
            return self._claims(conn, carrier_claims.c.claim_id == claim_id)[0]

    def claims_for_order(self, order_id: str) -> list[CarrierClaim]:
        canonical = normalize_order_id(order_id)
        if canonical is None:
            return []
        with self._engine.connect() as conn:
            return self._claims(conn, carrier_claims.c.order_id == canonical)

    def claims_opened(self, since: datetime, kinds: Sequence[str]) -> list[CarrierClaim]:
        c = carrier_claims.c
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(carrier_claims).where(
                c.created_at >= since, c.kind.in_(list(kinds))).order_by(c.created_at, c.claim_id))
            return [_from_row(CarrierClaim, row) for row in rows]

    def claims_by_customer(self, customer_id: int, since: datetime) -> list[CarrierClaim]:
        """The customer's carrier claims created at or after `since`, newest first."""
        with self._engine.connect() as conn:
            return self._claims(conn, sa.and_(orders.c.customer_id == customer_id,
                                              carrier_claims.c.created_at >= since))

    @staticmethod
    def _claims(conn: Connection, where: Any) -> list[CarrierClaim]:
        rows = conn.execute(
            sa.select(carrier_claims).join(orders).where(where)
            .order_by(carrier_claims.c.created_at.desc(), carrier_claims.c.claim_id)
        )
        return [_from_row(CarrierClaim, row) for row in rows]


class SqlReturns(_System):
    """ReturnsSystem."""

    def get_return(self, order_id: str) -> Optional[ReturnRecord]:
        canonical = normalize_order_id(order_id)
        if canonical is None:
            return None
        with self._engine.connect() as conn:
            return self._return(conn, canonical)

    @_unavailable_on_database_errors
    def create_return(self, order_id: str, reason: str) -> ReturnRecord:
        """Issue an RMA and a prepaid label; only delivered orders, one return per order."""
        canonical = _require_id(order_id)
        try:
            with self._engine.begin() as conn:
                status = _order_status(conn, canonical)
                if self._return(conn, canonical) is not None:
                    raise StoreError(f"order {canonical} already has a return")
                if status is not OrderStatus.DELIVERED:
                    raise StoreError(f"order {canonical} is {status.value}, not delivered")
                rma_id = _unused_id(conn, returns.c.rma_id, "RMA-")
                conn.execute(returns.insert().values(
                    rma_id=rma_id, order_id=canonical, status=ReturnStatus.LABEL_ISSUED.value,
                    label_url=label_url(rma_id), reason=reason, created_at=self._clock()))
                return _from_row(ReturnRecord, conn.execute(
                    sa.select(returns).where(returns.c.rma_id == rma_id)).one(),
                    status=ReturnStatus.LABEL_ISSUED)
        except sa.exc.IntegrityError as exc:  # a concurrent return for the same order
            raise StoreError(f"order {canonical} already has a return") from exc

    def get_refund(self, order_id: str) -> Optional[Refund]:
        """The most recent refund of the order."""
        found = self.refunds(order_id)
        return found[0] if found else None

    def refunds(self, order_id: str) -> list[Refund]:
        canonical = normalize_order_id(order_id)
        if canonical is None:
            return []
        with self._engine.connect() as conn:
            return self._refunds(conn, canonical)

    @_unavailable_on_database_errors
    def create_refund(self, order_id: str, amount: Decimal, reason: str,
                      method: str = "original_payment") -> Refund:
        """A pending refund; all refunds of an order together never exceed its total."""
        canonical = _require_id(order_id)
        if method not in REFUND_METHODS:
            raise StoreError(f"unknown refund method {method!r}")
        amount = Decimal(amount).quantize(CENT)
        with self._engine.begin() as conn:
            _lock_order(conn, canonical)
            order = conn.execute(sa.select(orders.c.total, orders.c.currency)
                                 .where(orders.c.order_id == canonical)).first()
            if order is None:
                raise StoreError(f"unknown order {canonical}")
            refunded = sum((r.amount for r in self._refunds(conn, canonical)), Decimal("0"))
            if not Decimal("0") < amount <= order.total - refunded:
                raise StoreError(f"refund of {amount} refused: order {canonical} total "
                                 f"{order.total}, already refunded {refunded}")
            refund_id = _unused_id(conn, refunds.c.refund_id, "RF-")
            conn.execute(refunds.insert().values(
                refund_id=refund_id, order_id=canonical, amount=amount, currency=order.currency,
                status=RefundStatus.PENDING.value, reason=reason, created_at=self._clock(),
                method=method))
            return next(r for r in self._refunds(conn, canonical) if r.refund_id == refund_id)

    def swapped_returns(self, customer_id: int, since: datetime) -> list[str]:
        with self._engine.connect() as conn:
            return list(conn.execute(
                sa.select(sa.distinct(returns.c.order_id))
                .join(item_serials, item_serials.c.order_id == returns.c.order_id)
                .join(orders, orders.c.order_id == returns.c.order_id)
                .where(orders.c.customer_id == customer_id, returns.c.received_at >= since,
                       item_serials.c.returned_serial != item_serials.c.shipped_serial)
                .order_by(returns.c.order_id)).scalars())

    @staticmethod
    def _return(conn: Connection, order_id: str) -> Optional[ReturnRecord]:
        row = conn.execute(sa.select(returns).where(returns.c.order_id == order_id)).first()
        return None if row is None else _from_row(ReturnRecord, row,
                                                  status=ReturnStatus(row.status))

    @staticmethod
    def _refunds(conn: Connection, order_id: str) -> list[Refund]:
        rows = conn.execute(
            sa.select(refunds).where(refunds.c.order_id == order_id)
            .order_by(refunds.c.created_at.desc(), refunds.c.refund_id)
        )
        return [_from_row(Refund, row, status=RefundStatus(row.status)) for row in rows]


class SqlContactLog(_System):
    """ContactLog."""

    def record(self, customer_key: str, issue: str, conversation_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(contact_events.insert().values(
                customer_key=customer_key, issue=issue, conversation_id=conversation_id,
                created_at=self._clock()))

    def count_since(self, customer_key: str, issue: str, since: datetime,
                    excluding_conversation: str) -> int:
        """Contacts about `issue` at or after `since` in other conversations."""
        c = contact_events.c
        with self._engine.connect() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(contact_events).where(
                    c.customer_key == customer_key, c.issue == issue, c.created_at >= since,
                    c.conversation_id != excluding_conversation)
            ).scalar_one())


class SqlCodes(_System):
    """OneTimeCodes."""

    def issue(self, conversation_id: str, contact: str, code_hash: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(one_time_codes.insert().values(
                conversation_id=conversation_id, contact=contact, code_hash=code_hash,
                created_at=self._clock(), wrong_tries=0))

    def redeem(self, conversation_id: str, code_hash: str, since: datetime,
               wrong_tries_allowed: int) -> CodeCheck:
        """Check a code typed in the conversation against the newest one sent to it."""
        c = one_time_codes.c
        with self._engine.begin() as conn:
            row = conn.execute(
                sa.select(one_time_codes).where(c.conversation_id == conversation_id)
                .order_by(c.code_id.desc()).limit(1).with_for_update()).first()
            if (row is None or row.used_at is not None or row.created_at < since
                    or row.wrong_tries >= wrong_tries_allowed):
                return CodeCheck(live=False)
            if not hmac.compare_digest(row.code_hash, code_hash):
                conn.execute(one_time_codes.update().where(c.code_id == row.code_id)
                             .values(wrong_tries=c.wrong_tries + 1))
                return CodeCheck(live=row.wrong_tries + 1 < wrong_tries_allowed)
            conn.execute(one_time_codes.update().where(c.code_id == row.code_id)
                         .values(used_at=self._clock()))
            return CodeCheck(live=False, contact=row.contact)


class SqlWriteLog(_System):
    """WriteLog."""

    def claim(self, record: WriteRecord) -> Optional[WriteRecord]:
        values = {"key": record.key, "conversation_id": record.conversation_id,
                  "kind": record.kind, "order_id": record.order_id,
                  "params": json.dumps(dict(record.params), default=str),
                  "status": record.status,
                  "before": json.dumps(dict(record.before), default=str),
                  "after": "{}", "reference": "", "error": "",
                  "created_at": record.created_at}
        try:
            with self._engine.begin() as conn:
                conn.execute(guarded_writes.insert().values(**values))
        except sa.exc.IntegrityError:  # the key is taken: a retried or concurrent turn
            return self.get(record.key)
        return None

    def finish(self, key: str, status: str, after: Mapping[str, Any], reference: str = "",
               error: str = "") -> None:
        with self._engine.begin() as conn:
            conn.execute(guarded_writes.update().where(guarded_writes.c.key == key).values(
                status=status, after=json.dumps(dict(after), default=str),
                reference=reference, error=error[:500], finished_at=self._clock()))

    def get(self, key: str) -> Optional[WriteRecord]:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(guarded_writes)
                               .where(guarded_writes.c.key == key)).first()
        return _write_record(row) if row else None

    def for_order(self, order_id: str) -> list[WriteRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(guarded_writes)
                                .where(guarded_writes.c.order_id == order_id)
                                .order_by(guarded_writes.c.created_at, guarded_writes.c.key))
            return [_write_record(row) for row in rows]


    def hold(self, order_id: str, rule: str, conversation_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(order_holds.insert().values(order_id=order_id, rule=rule,
                                                     conversation_id=conversation_id,
                                                     created_at=self._clock()))

    def hold_on(self, order_id: str) -> Optional[Hold]:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(order_holds).where(order_holds.c.order_id == order_id)
                               .order_by(order_holds.c.hold_id).limit(1)).first()
        return _from_row(Hold, row) if row else None

    def release(self, order_id: str) -> int:
        with self._engine.begin() as conn:
            return int(conn.execute(order_holds.delete()
                                    .where(order_holds.c.order_id == order_id)).rowcount)


def _write_record(row: Any) -> WriteRecord:
    return _from_row(WriteRecord, row, params=json.loads(row.params),
                     before=json.loads(row.before), after=json.loads(row.after))


# --- the store ----------------------------------------------------------------------

@dataclass(frozen=True)
class Store:
    """All store systems on one Engine."""

    engine: Engine
    orders: SqlOrders
    delivery: SqlDelivery
    returns: SqlReturns
    contacts: SqlContactLog
    writes: SqlWriteLog
    codes: SqlCodes

    @property
    def left_to_people(self) -> FrozenSet[str]:
        return frozenset()  # the demo store takes every write

    def begin_turn(self) -> None:
        """Nothing kept between reads: the database is near and cheap to ask."""

    def end_turn(self) -> None:
        """Nothing was kept."""

    def read_fresh(self) -> None:
        """Every read is fresh."""

    def reset_schema(self) -> None:
        """Drop and recreate every table (tests, demo resets)."""
        metadata.drop_all(self.engine)
        create_tables(metadata, self.engine)

    def close(self) -> None:
        self.engine.dispose()


def default_url() -> str:
    """DATABASE_URL, else SQLite at var/store.db (VAR_DIR; created)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    var = var_dir()
    var.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{var / 'store.db'}"


def open_store(url: Optional[str] = None, clock: Clock = utc_now) -> Store:
    """Open (and create the tables of) the store at `url`, DATABASE_URL or var/store.db."""
    engine = create_store_engine(url or default_url())
    create_tables(metadata, engine)
    return Store(
        engine=engine,
        orders=SqlOrders(engine, clock),
        delivery=SqlDelivery(engine, clock),
        returns=SqlReturns(engine, clock),
        contacts=SqlContactLog(engine, clock),
        writes=SqlWriteLog(engine, clock),
        codes=SqlCodes(engine, clock),
    )


def _implements_protocols(
    store: Store,
) -> tuple[OrderSystem, DeliverySystem, ReturnsSystem, ContactLog, WriteLog, OneTimeCodes]:
    """Never called: makes mypy check that the Sql* classes implement the protocols."""
    return (store.orders, store.delivery, store.returns, store.contacts, store.writes,
            store.codes)
