"""The store systems the bot queries, as small typed interfaces.

Actions depend only on these types and protocols; `actions.store.sql` implements
them on SQLAlchemy (SQLite under var/ by default, PostgreSQL via DATABASE_URL).
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, FrozenSet, Mapping, Optional, Protocol, Sequence

# Not inside a word: "order 1001" must not read as "R1001".
ORDER_ID_PATTERN = re.compile(r"(?<![A-Za-z0-9])#?\s*([A-Za-z])\s*-?\s*(\d{4,8})\b")


def normalize_order_id(text: str) -> Optional[str]:
    """Return the canonical order id ('A1001') found in free text, or None.

    Customers type order numbers in any case, with or without '#' and spaces.
    """
    match = ORDER_ID_PATTERN.search(text or "")
    if not match:
        return None
    return f"{match.group(1).upper()}{match.group(2)}"


class OrderStatus(str, enum.Enum):
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    RETURNED = "returned"


class Holdup(str, enum.Enum):
    """Why an order that has not shipped waits, when it is not simply being prepared."""

    NONE = "none"
    # its payment is not confirmed yet (a bank transfer, cash on delivery): WooCommerce's
    # pending and on-hold, Shopify's pending payment
    PAYMENT = "payment"
    # the shop holds its fulfilment (an address check, stock, a review): Shopify's on hold
    ON_HOLD = "on_hold"


class DeliveryException(str, enum.Enum):
    NONE = "none"
    DELAYED = "delayed"
    STUCK = "stuck"
    LOST = "lost"


class ReturnStatus(str, enum.Enum):
    # asked for, waiting for the shop to approve it and send the label (Shopify)
    REQUESTED = "requested"
    # approved, the label sent by the shop, no parcel on its way yet (Shopify)
    APPROVED = "approved"
    LABEL_ISSUED = "label_issued"
    IN_TRANSIT = "in_transit"
    RECEIVED = "received"
    REFUNDED = "refunded"


class RefundStatus(str, enum.Enum):
    PENDING = "pending"
    ISSUED = "issued"


@dataclass(frozen=True)
class Address:
    name: str
    line1: str
    city: str
    postal_code: str
    country: str
    line2: str = ""

    def one_line(self) -> str:
        parts = [self.line1, self.line2, f"{self.postal_code} {self.city}", self.country]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Customer:
    customer_id: int
    name: str
    email: str
    phone: str


@dataclass(frozen=True)
class OrderItem:
    sku: str
    name: str
    quantity: int
    unit_price: Decimal
    returnable: bool = True  # e.g. final-sale or hygiene items are not


@dataclass(frozen=True)
class Order:
    order_id: str
    customer: Customer
    status: OrderStatus
    placed_at: datetime
    promised_date: date
    total: Decimal
    currency: str
    payment_method: str
    shipping_address: Address
    billing_address: Address
    items: Sequence[OrderItem]
    shipped_at: Optional[datetime] = None
    delivered_at: Optional[datetime] = None
    cancelled_at: Optional[datetime] = None
    holdup: Holdup = Holdup.NONE
    # of an order shipped in part: the items still to ship, with the quantity left
    unshipped: Sequence[OrderItem] = ()

    @property
    def can_be_changed(self) -> bool:
        """Cancellation and address changes are possible only before shipping."""
        return self.status is OrderStatus.PAID


@dataclass(frozen=True)
class TrackingEvent:
    time: datetime
    location: str
    description: str


@dataclass(frozen=True)
class Shipment:
    order_id: str
    carrier: str
    tracking_number: str
    tracking_url: str
    shipped_at: datetime
    eta: date
    exception: DeliveryException
    events: Sequence[TrackingEvent] = field(default_factory=tuple)
    delivered_at: Optional[datetime] = None
    # whether the carrier's scans reach the store (or the tracking service): without
    # them a parcel without a scan is not known to be stuck (WooCommerce keeps none)
    scans_known: bool = True

    @property
    def latest_event(self) -> Optional[TrackingEvent]:
        return max(self.events, key=lambda e: e.time) if self.events else None


class TrackingStatus(str, enum.Enum):
    """Where a parcel is, as a carrier-tracking service says (actions/store/tracking/):
    EasyPost's and AfterShip's statuses in one vocabulary."""

    PRE_TRANSIT = "pre_transit"  # label made, not handed to the carrier yet
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    AVAILABLE_FOR_PICKUP = "available_for_pickup"  # waits at a pickup point
    DELIVERED = "delivered"
    ATTEMPTED_DELIVERY = "attempted_delivery"  # tried, nobody there: tried again
    EXCEPTION = "exception"  # held, damaged, customs, address problem: delayed
    RETURN_TO_SENDER = "return_to_sender"  # on its way back to the shop
    FAILURE = "failure"  # the carrier cannot deliver it (lost, destroyed)
    EXPIRED = "expired"  # no news from the carrier for a long time
    CANCELLED = "cancelled"  # the tracker (or the label) was cancelled
    UNKNOWN = "unknown"  # no information yet

    @property
    def exception(self) -> DeliveryException:
        """The delivery exception the playbooks act on: a parcel that will not reach
        the customer (failure, return to sender) is lost to them; one held up on its
        way (attempted delivery, exception) is delayed; one without news (expired) is
        stuck, for a trace."""
        return STATUS_EXCEPTIONS.get(self, DeliveryException.NONE)


STATUS_EXCEPTIONS = {
    TrackingStatus.FAILURE: DeliveryException.LOST,
    TrackingStatus.RETURN_TO_SENDER: DeliveryException.LOST,
    TrackingStatus.ATTEMPTED_DELIVERY: DeliveryException.DELAYED,
    TrackingStatus.EXCEPTION: DeliveryException.DELAYED,
    TrackingStatus.EXPIRED: DeliveryException.STUCK,
}


@dataclass(frozen=True)
class Tracking:
    """One parcel as a carrier-tracking service knows it: its status, the carrier's
    events (oldest first) and estimate. `reference` is the service's own id of it."""

    tracking_number: str
    carrier: str
    status: TrackingStatus
    events: Sequence[TrackingEvent] = field(default_factory=tuple)
    estimated_delivery: Optional[date] = None
    delivered_at: Optional[datetime] = None
    detail: str = ""  # the carrier's words for the status ("No one home")
    public_url: str = ""
    reference: str = ""
    # what the service called it: EasyPost's status (status_detail), AfterShip's tag
    # (subtag)
    provider_status: str = ""


class TrackingSystem(Protocol):
    """A carrier-tracking service (TRACKING_BACKEND): parcels by tracking number and
    carrier. Raises StoreUnavailable (transient: down, throttled for too long, the key
    refused) or TrackingNotFound (permanent: the service cannot track this number)."""

    def track(self, tracking_number: str, carrier: str) -> Tracking: ...

    def close(self) -> None: ...


class TrackingNotFound(Exception):
    """The tracking service cannot track this number with this carrier (an invalid
    number, an unknown carrier): asking again gives the same answer."""


@dataclass(frozen=True)
class CarrierClaim:
    claim_id: str
    order_id: str
    kind: str  # "trace" (of a stuck parcel) | "not_received" | "lost" | "damaged" | "wrong_item"
    created_at: datetime


@dataclass(frozen=True)
class ReturnRecord:
    rma_id: str  # always starts with "RMA-"
    order_id: str
    status: ReturnStatus
    label_url: str
    reason: str
    created_at: datetime
    shipped_at: Optional[datetime] = None
    received_at: Optional[datetime] = None


@dataclass(frozen=True)
class Refund:
    refund_id: str
    order_id: str
    amount: Decimal
    currency: str
    status: RefundStatus
    created_at: datetime
    issued_at: Optional[datetime] = None
    method: str = "original_payment"  # or "store_credit"
    reason: str = ""


class StoreError(Exception):
    """A change the store refuses (e.g. cancelling a shipped order): permanent, asking
    again gives the same answer. The message says why, in words a person can read."""


class StoreUnavailable(Exception):
    """The store could not be asked, or did not answer (down, timed out, throttled for
    too long, credentials refused): transient as far as the customer is concerned; a
    change may or may not have been made, and only a fresh read can tell."""


@dataclass(frozen=True)
class PlatformPolicy:
    """What the policy (policy/escalation.yml) says of a store platform's orders
    (actions/store/backend.py platform_policy reads it)."""

    # identity.order_number_letter: the letter before a platform's bare order numbers
    order_letter: str = "A"
    # refunds.through_payment_gateway: whether a refund moves the money, where the
    # platform asks (WooCommerce's api_refund)
    refund_through_gateway: bool = True
    # order_cache.ttl_seconds: how long an order is kept across turns (0: not kept)
    cache_seconds: int = 0
    # windows.delivery_days: the delivery time the shop promises, counted from the order
    # (the platforms keep no promised date, nor an estimate before the carrier gives one)
    delivery_days: int = 5


class StoreConfigError(Exception):
    """The store backend cannot start: unknown STORE_BACKEND or a missing variable,
    which the message names."""


# The kinds of WriteRecord that put a problem right (a free replacement, money back).
REMEDY_WRITES = ("refund", "replacement")


@dataclass(frozen=True)
class WriteRecord:
    """One write the bot made or tried (actions/guarded.py): the audit trail, and the
    idempotency key a retried turn finds. `status` is started, done, refused or
    unconfirmed (the store did not say, or the change did not show on reading back)."""

    key: str
    conversation_id: str
    kind: str
    order_id: str
    params: Mapping[str, Any]
    status: str
    before: Mapping[str, Any]
    created_at: datetime
    after: Mapping[str, Any] = field(default_factory=dict)
    reference: str = ""
    error: str = ""
    finished_at: Optional[datetime] = None


class OrderSystem(Protocol):
    def get_order(self, order_id: str) -> Optional[Order]: ...

    def orders_for_contact(self, contact: str) -> list[Order]:
        """Orders, newest first, of the customer with this email or E.164 number."""
        ...

    def orders_since(self, since: datetime,
                     status: Optional[OrderStatus] = None) -> list[Order]:
        """Orders placed at or after `since`, newest first; only those in `status` when
        given (proactive outreach: orders in transit, recent buyers of a product)."""
        ...

    def cancel_order(self, order_id: str, reason: str) -> Order: ...

    def change_shipping_address(self, order_id: str, address: Address) -> Order: ...

    def create_replacement(self, order_id: str, reason: str) -> Order:
        """A new, free order with the same items, paid and ready to ship."""
        ...

    def replacement_of(self, order_id: str) -> Optional[Order]:
        """The free replacement sent for this order, if any."""
        ...

    def customers_shipping_to(self, address: Address) -> int:
        """How many customers have had orders shipped to this street and postcode."""
        ...


class DeliverySystem(Protocol):
    def get_shipment(self, order_id: str) -> Optional[Shipment]:
        """The order's latest shipment (the one shipped last), if any."""
        ...

    def shipments(self, order_id: str) -> list[Shipment]:
        """Every shipment of the order, oldest first (a platform may ship an order in
        several parcels)."""
        ...

    def open_claim(self, order_id: str, kind: str) -> CarrierClaim: ...

    def claims_by_customer(self, customer_id: int, since: datetime) -> list[CarrierClaim]: ...

    def claims_for_order(self, order_id: str) -> list[CarrierClaim]:
        """The order's claims and traces, newest first."""
        ...

    def claims_opened(self, since: datetime, kinds: Sequence[str]) -> list[CarrierClaim]:
        """Claims and traces of these kinds opened at or after `since`, oldest first
        (the monitor follows up what the bot promised when opening them)."""
        ...

    def order_shipped_as(self, tracking_number: str, since: datetime) -> Optional[str]:
        """The order, of those placed at or after `since`, whose parcel has this
        tracking number (a carrier's webhook names the parcel, not the order); the
        latest shipped, as carriers recycle numbers."""
        ...


def find_shipped_as(orders: OrderSystem, delivery: DeliverySystem, tracking_number: str,
                    since: datetime) -> Optional[str]:
    """DeliverySystem.order_shipped_as on a platform that cannot search by tracking
    number: the shipped orders placed since then, searched parcel by parcel."""
    found = [(shipment.shipped_at, order.order_id)
             for order in orders.orders_since(since, OrderStatus.SHIPPED)
             for shipment in delivery.shipments(order.order_id)
             if shipment.tracking_number == tracking_number]
    return max(found)[1] if found else None


class ReturnsSystem(Protocol):
    def get_return(self, order_id: str) -> Optional[ReturnRecord]: ...

    def create_return(self, order_id: str, reason: str) -> ReturnRecord: ...

    def swapped_returns(self, customer_id: int, since: datetime) -> list[str]:
        """The customer's orders whose return, received at or after `since`, held a unit
        with another serial number than the one shipped."""
        ...

    def get_refund(self, order_id: str) -> Optional[Refund]: ...

    def refunds(self, order_id: str) -> list[Refund]:
        """Every refund of the order, newest first."""
        ...

    def create_refund(
        self, order_id: str, amount: Decimal, reason: str, method: str = "original_payment"
    ) -> Refund: ...


# Every kind of write the bot makes (actions/guarded.py's changes; a refund as store
# credit is its own kind here, since a platform may make one and not the other).
WRITE_KINDS = frozenset({"cancel", "change_address", "return", "refund", "store_credit",
                         "replacement", "claim"})


class StoreSystems(Protocol):
    """Every system the actions use, whatever the order platform (actions/store/backend.py
    chooses by STORE_BACKEND). The bot's own records (writes, codes, contacts) always live
    in the bot's SQL database."""

    @property
    def orders(self) -> OrderSystem: ...

    @property
    def delivery(self) -> DeliverySystem: ...

    @property
    def returns(self) -> ReturnsSystem: ...

    @property
    def contacts(self) -> ContactLog: ...

    @property
    def writes(self) -> WriteLog: ...

    @property
    def codes(self) -> OneTimeCodes: ...

    @property
    def left_to_people(self) -> FrozenSet[str]:
        """The writes this platform does not take from the bot (of WRITE_KINDS): the bot
        says so and offers a person before asking the customer to confirm one."""
        ...

    def begin_turn(self) -> None:
        """A new action run starts on this thread: orders it reads may be kept until the
        next run, so that one turn reads each order once (writes always read afresh)."""
        ...

    def end_turn(self) -> None:
        """The run that began a turn on this thread is over: reads ask the platform
        again (a monitor's scan reads as one turn, then ends it)."""
        ...

    def read_fresh(self) -> None:
        """From now until the next turn, orders are read from the platform as it has them
        now, never from what an earlier turn kept (actions/store/cache.py): a write's
        eligibility, the write and its read-back (actions/guarded.py)."""
        ...

    def close(self) -> None: ...


class WriteLog(Protocol):
    """The bot's record of its writes, kept by idempotency key."""

    def claim(self, record: WriteRecord) -> Optional[WriteRecord]:
        """Keep a new attempt under its key; returns the record already kept under that
        key instead, if there is one (then nothing is written)."""
        ...

    def finish(self, key: str, status: str, after: Mapping[str, Any], reference: str = "",
               error: str = "") -> None: ...

    def get(self, key: str) -> Optional[WriteRecord]: ...

    def for_order(self, order_id: str) -> list[WriteRecord]:
        """Every write tried on the order, oldest first."""
        ...

    def hold(self, order_id: str, rule: str, conversation_id: str) -> None:
        """Pause the bot's writes on the order until a person releases it."""
        ...

    def hold_on(self, order_id: str) -> Optional[Hold]: ...

    def release(self, order_id: str) -> int:
        """Lift the order's holds; how many there were."""
        ...


@dataclass(frozen=True)
class Hold:
    """An order whose writes pause until a person reviews it (a stop-the-line rule)."""

    order_id: str
    rule: str
    conversation_id: str
    created_at: datetime


@dataclass(frozen=True)
class CodeCheck:
    """A typed one-time code: `contact` is what it proved (None if it proved nothing);
    `live` is whether the code sent can still be tried."""

    live: bool
    contact: Optional[str] = None


class OneTimeCodes(Protocol):
    def issue(self, conversation_id: str, contact: str, code_hash: str) -> None: ...

    def redeem(self, conversation_id: str, code_hash: str, since: datetime,
               wrong_tries_allowed: int) -> CodeCheck:
        """The newest code sent in the conversation, if sent at or after `since`, unused
        and tried wrongly fewer times than allowed, is used up when it matches."""
        ...


class ContactLog(Protocol):
    """Which customer wrote about which issue when: repeat-contact detection."""

    def record(self, customer_key: str, issue: str, conversation_id: str) -> None: ...

    def count_since(self, customer_key: str, issue: str, since: datetime,
                    excluding_conversation: str) -> int: ...
