"""Behaviour of the store systems and the demo seed. Tests taking `systems` hold for
every backend (the SQL store on SQLite and PostgreSQL, and a Shopify and a WooCommerce
shop through their stand-ins) unless marked `not_on` a platform that lacks what they
read (tests/actions/test_woocommerce.py says what WooCommerce does instead); those
taking `store` test what only the demo SQL store has (promised dates, return labels,
claims, replacements, serial numbers, store credit, the seed itself)."""
from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Optional

import pytest
import sqlalchemy as sa

from actions.store.seed import CATALOGUE, seed_demo_store
from actions.store.sql import Store, metadata, utc_now
from actions.store.sql import orders as orders_table
from actions.store.types import (
    Address,
    DeliveryException,
    OrderStatus,
    RefundStatus,
    ReturnStatus,
    StoreError,
    StoreSystems,
)

D = DeliveryException
S = OrderStatus
NEW_ADDRESS = Address(name="Jordan Lee", line1="9 Harbor Way", line2="Apt 3",
                      city="Seattle, WA", postal_code="98121", country="US")

# order, email, status, shipped / delivered (days before now), exception (None: no shipment)
DEMO_ORDERS = [
    ("A1001", "buyer1@example.com", S.SHIPPED, 1, None, D.NONE),
    ("A1002", "buyer1@example.com", S.DELIVERED, 8, 5, D.NONE),
    ("A1003", "buyer2@example.com", S.SHIPPED, 9, None, D.STUCK),
    ("A1004", "buyer3@example.com", S.PAID, None, None, None),
    ("A1005", "buyer3@example.com", S.DELIVERED, 48, 45, D.NONE),
    ("A1006", "buyer4@example.com", S.DELIVERED, 3, 1, D.NONE),
    ("A1007", "buyer4@example.com", S.DELIVERED, 15, 12, D.NONE),
    ("A1008", "buyer5@example.com", S.RETURNED, 23, 20, D.NONE),
    ("A1009", "buyer5@example.com", S.CANCELLED, None, None, None),
    ("A1010", "buyer2@example.com", S.SHIPPED, 14, None, D.LOST),
    ("A1011", "buyer6@example.com", S.DELIVERED, 5, 2, D.NONE),
    ("A1012", "buyer7@example.com", S.DELIVERED, 5, 3, D.NONE),
    ("A1013", "buyer7@example.com", S.DELIVERED, 23, 20, D.NONE),
    ("A1014", "buyer7@example.com", S.DELIVERED, 43, 40, D.NONE),
    ("A1015", "buyer8@example.com", S.DELIVERED, 6, 4, D.NONE),
    ("A1016", "buyer8@example.com", S.SHIPPED, 6, None, D.DELAYED),
]


WOO_NO_CARRIER_DATA = ("its Shipment Tracking extension keeps a carrier, number and day "
                       "shipped, no carrier events, delays or delivery times")
WOO_NO_RETURNS = "WooCommerce has no returns of its own: the bot refuses them there"


def days_ago(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)


def day(now: datetime, offset: int) -> date:
    return (now + timedelta(days=offset)).date()


def table_counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in metadata.sorted_tables}


# --- the demo orders ----------------------------------------------------------------

@pytest.mark.not_on("woocommerce", reason=WOO_NO_CARRIER_DATA)
@pytest.mark.parametrize(("order_id", "email", "status", "shipped", "delivered", "exception"),
                         DEMO_ORDERS, ids=[row[0] for row in DEMO_ORDERS])
def test_demo_order_state(systems: StoreSystems, now: datetime, order_id: str, email: str,
                          status: OrderStatus, shipped: Optional[int],
                          delivered: Optional[int], exception: Optional[DeliveryException]
                          ) -> None:
    order = systems.orders.get_order(order_id)
    assert order is not None
    assert order.order_id == order_id
    assert order.customer.email == email
    assert order.status is status
    assert order.total == sum(i.unit_price * i.quantity for i in order.items) > 0
    assert order.placed_at < now
    shipment = systems.delivery.get_shipment(order_id)
    if exception is None:
        assert shipment is None and order.shipped_at is None
        return
    assert shipment is not None and shipped is not None
    assert shipment.exception is exception
    assert shipment.shipped_at == order.shipped_at == days_ago(now, shipped)
    expected_delivery = None if delivered is None else days_ago(now, delivered)
    assert shipment.delivered_at == order.delivered_at == expected_delivery
    assert shipment.events and all(shipment.shipped_at <= e.time <= now for e in shipment.events)


def test_demo_customers_have_names_and_phones(systems: StoreSystems) -> None:
    for n in range(1, 9):
        (order, *_) = systems.orders.orders_for_contact(f"buyer{n}@example.com")
        assert order.customer.customer_id == n
        assert order.customer.phone == f"+1 415 555 01{n:02d}"
        assert order.customer.name and order.billing_address.name == order.customer.name


def test_a1001_in_transit_on_time(store: Store, now: datetime) -> None:
    order, shipment = store.orders.get_order("A1001"), store.delivery.get_shipment("A1001")
    assert order is not None and shipment is not None
    assert (shipment.carrier, shipment.tracking_number) == ("UPS", "1Z999AA10123456784")
    assert "1Z999AA10123456784" in shipment.tracking_url
    assert shipment.eta == day(now, 2)
    assert order.promised_date == day(now, 3)
    assert 2 <= len(shipment.events) <= 3
    latest = shipment.latest_event
    assert latest is not None and latest.time == max(e.time for e in shipment.events)
    assert days_ago(now, 1) < latest.time < now
    assert order.total == Decimal("98.00")
    assert order.placed_at.tzinfo is not None and order.placed_at.utcoffset() == timedelta(0)


def test_a1002_delivered_returnable(systems: StoreSystems) -> None:
    order = systems.orders.get_order("A1002")
    assert order is not None and order.total == Decimal("89.00")
    assert isinstance(order.total, Decimal)
    assert [i.returnable for i in order.items] == [True]
    assert systems.returns.get_return("A1002") is None


def test_a1003_stuck_after_last_scan_six_days_ago(store: Store, now: datetime) -> None:
    order, shipment = store.orders.get_order("A1003"), store.delivery.get_shipment("A1003")
    assert order is not None and shipment is not None
    assert shipment.latest_event is not None
    assert shipment.latest_event.time == days_ago(now, 6)
    assert order.promised_date == day(now, -2) < now.date()


def test_a1004_paid_not_shipped(systems: StoreSystems) -> None:
    order = systems.orders.get_order("A1004")
    assert order is not None and order.can_be_changed
    assert systems.delivery.get_shipment("A1004") is None


def test_a1006_and_a1011_high_value(systems: StoreSystems) -> None:
    laptop, phone = systems.orders.get_order("A1006"), systems.orders.get_order("A1011")
    assert laptop is not None and laptop.total == Decimal("1250.00")
    assert laptop.shipping_address == laptop.billing_address
    assert phone is not None and phone.total == Decimal("980.00")
    assert phone.shipping_address != phone.billing_address
    assert phone.shipping_address.city != phone.billing_address.city


def test_a1007_return_in_transit_refund_pending(store: Store, now: datetime) -> None:
    order, ret = store.orders.get_order("A1007"), store.returns.get_return("a1007")
    refund = store.returns.get_refund("A1007")
    assert order is not None and ret is not None and refund is not None
    assert ret.status is ReturnStatus.IN_TRANSIT and ret.rma_id.startswith("RMA-")
    assert ret.shipped_at == days_ago(now, 3) and ret.received_at is None
    assert refund.status is RefundStatus.PENDING and refund.issued_at is None
    assert refund.amount == order.total == Decimal("129.00")


def test_a1008_returned_and_refunded(store: Store, now: datetime) -> None:
    ret, refund = store.returns.get_return("A1008"), store.returns.get_refund("A1008")
    assert ret is not None and ret.status is ReturnStatus.RECEIVED
    assert ret.received_at is not None and ret.received_at < now
    assert refund is not None and refund.status is RefundStatus.ISSUED
    assert (refund.amount, refund.currency) == (Decimal("45.00"), "USD")
    assert refund.issued_at == days_ago(now, 3)


def test_a1009_cancelled_four_days_ago(systems: StoreSystems, now: datetime) -> None:
    order = systems.orders.get_order("A1009")
    assert order is not None and order.cancelled_at == days_ago(now, 4)


@pytest.mark.not_on("woocommerce", reason=WOO_NO_CARRIER_DATA)
def test_a1010_declared_lost_two_days_ago(systems: StoreSystems, now: datetime) -> None:
    shipment = systems.delivery.get_shipment("A1010")
    assert shipment is not None and shipment.latest_event is not None
    assert shipment.latest_event.time == days_ago(now, 2)
    assert "lost" in shipment.latest_event.description.lower()


def test_a1012_to_a1015_totals_and_final_sale(store: Store) -> None:
    a1012, a1015 = store.orders.get_order("A1012"), store.orders.get_order("A1015")
    assert a1012 is not None and a1012.total == Decimal("39.00")
    assert a1015 is not None and [i.returnable for i in a1015.items] == [False]


def test_a1016_delayed_with_revised_eta(store: Store, now: datetime) -> None:
    order, shipment = store.orders.get_order("A1016"), store.delivery.get_shipment("A1016")
    assert order is not None and shipment is not None
    assert order.promised_date == day(now, -1)
    assert shipment.eta == day(now, 2)
    assert shipment.latest_event is not None
    assert "delay" in shipment.latest_event.description.lower()


# --- generated orders ------------------------------------------------------------------

def test_generated_orders_are_a_consistent_realistic_mix(store: Store, now: datetime) -> None:
    generated = [store.orders.get_order(f"A{n}") for n in range(2001, 2201)]
    assert store.orders.get_order("A2201") is None
    statuses, carriers = set(), set()
    for order in generated:
        assert order is not None and order.customer.customer_id >= 100
        assert order.customer.email == f"buyer{order.customer.customer_id}@example.com"
        assert order.total == sum(i.unit_price * i.quantity for i in order.items) > 0
        assert all(CATALOGUE[i.sku].price == i.unit_price for i in order.items)
        assert order.placed_at <= now
        statuses.add(order.status)
        shipment = store.delivery.get_shipment(order.order_id)
        assert (shipment is None) == (order.status in (S.PAID, S.CANCELLED))
        if shipment is not None:
            carriers.add(shipment.carrier)
            assert order.placed_at < shipment.shipped_at <= now
            assert (shipment.delivered_at is None) == (order.status is S.SHIPPED)
    assert statuses == set(OrderStatus)
    assert carriers == {"UPS", "FedEx", "DHL", "USPS"}


# --- order ids and contacts ------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["#a 1001", "a1001", " A1001 ", "A-1001", "order #A1001 pls"])
def test_order_id_spellings(systems: StoreSystems, spelling: str) -> None:
    order = systems.orders.get_order(spelling)
    assert order is not None and order.order_id == "A1001"
    shipment = systems.delivery.get_shipment(spelling)
    assert shipment is not None and shipment.order_id == "A1001"


@pytest.mark.parametrize("text", ["", "hello", "1001", "order 1001", "A9999", "Z1001"])
def test_unknown_or_garbage_order_ids(systems: StoreSystems, text: str) -> None:
    assert systems.orders.get_order(text) is None
    assert systems.delivery.get_shipment(text) is None
    assert systems.returns.get_return(text) is None
    assert systems.returns.get_refund(text) is None


@pytest.mark.parametrize("contact", ["buyer1@example.com", "BUYER1@Example.COM",
                                     "  buyer1@example.com "])
def test_orders_for_email_any_case_newest_first(systems: StoreSystems, contact: str) -> None:
    assert [o.order_id for o in systems.orders.orders_for_contact(contact)] == ["A1001", "A1002"]


def test_orders_for_an_e164_phone_number(systems: StoreSystems) -> None:
    found = systems.orders.orders_for_contact("+14155550107")
    assert [o.order_id for o in found] == ["A1012", "A1013", "A1014"]


@pytest.mark.parametrize("contact", ["nobody@example.com", "buyer1@example.co", "555",
                                     "+14155550199", "", "hello",
                                     # numbers are compared whole, never by their end
                                     "4155550107", "5550107", "+4155550107"])
def test_orders_for_unknown_contact(systems: StoreSystems, contact: str) -> None:
    assert systems.orders.orders_for_contact(contact) == []


def test_orders_since_newest_first_optionally_by_status(store: Store, now: datetime) -> None:
    since = days_ago(now, 10)
    with store.engine.connect() as conn:
        expected = conn.execute(sa.select(sa.func.count()).select_from(orders_table).where(
            orders_table.c.placed_at >= since)).scalar_one()
    recent = store.orders.orders_since(since)
    assert len(recent) == expected > 0
    assert all(o.placed_at >= since for o in recent)
    assert [o.placed_at for o in recent] == sorted((o.placed_at for o in recent), reverse=True)
    # the hand-written orders placed within 10 days (A1003 exactly 10 days ago: included),
    # with customer and items loaded
    demo = {o.order_id: o for o in recent if o.order_id < "A2000"}
    assert sorted(demo) == ["A1001", "A1002", "A1003", "A1004", "A1006", "A1009", "A1011",
                            "A1012", "A1015", "A1016", "A1019", "A1021"]
    assert demo["A1016"].customer.phone == "+1 415 555 0108"
    assert [i.sku for i in demo["A1003"].items] == ["BACKPACK-25"]

    in_transit = store.orders.orders_since(since, OrderStatus.SHIPPED)
    assert in_transit == [o for o in recent if o.status is S.SHIPPED]
    assert {"A1001", "A1003", "A1016"} <= {o.order_id for o in in_transit}
    assert "A1010" not in {o.order_id for o in in_transit}  # shipped, but placed 15 days ago
    assert store.orders.orders_since(now + timedelta(seconds=1)) == []


# --- changes ----------------------------------------------------------------------------

def test_cancel_paid_order(systems: StoreSystems, now: datetime) -> None:
    cancelled = systems.orders.cancel_order("a 1004", "changed my mind")
    assert cancelled.status is S.CANCELLED
    assert cancelled.cancelled_at is not None and now <= cancelled.cancelled_at <= utc_now()
    assert systems.orders.get_order("A1004") == cancelled
    with pytest.raises(StoreError):
        systems.orders.cancel_order("A1004", "again")


@pytest.mark.parametrize("order_id", ["A1001", "A1006", "A1008", "A1009", "A9999", "nonsense"])
def test_cancel_refused_unless_paid(systems: StoreSystems, order_id: str) -> None:
    before = systems.orders.get_order(order_id)
    with pytest.raises(StoreError):
        systems.orders.cancel_order(order_id, "please")
    assert systems.orders.get_order(order_id) == before


def test_change_address_of_paid_order(systems: StoreSystems) -> None:
    before = systems.orders.get_order("A1004")
    changed = systems.orders.change_shipping_address("A1004", NEW_ADDRESS)
    assert changed.shipping_address == NEW_ADDRESS
    assert before is not None and changed.billing_address == before.billing_address
    assert changed.status is S.PAID
    assert systems.orders.get_order("A1004") == changed


@pytest.mark.parametrize("order_id", ["A1001", "A1002", "A1009", "A9999"])
def test_change_address_refused_unless_paid(systems: StoreSystems, order_id: str) -> None:
    before = systems.orders.get_order(order_id)
    with pytest.raises(StoreError):
        systems.orders.change_shipping_address(order_id, NEW_ADDRESS)
    assert systems.orders.get_order(order_id) == before


def test_replacement_is_a_free_paid_copy_once(store: Store) -> None:
    original = store.orders.get_order("A1010")
    replacement = store.orders.create_replacement("A1010", "lost by carrier")
    assert original is not None and replacement.order_id not in ("A1010", "")
    assert store.orders.get_order(replacement.order_id) == replacement
    assert (replacement.status, replacement.total) == (S.PAID, Decimal("0.00"))
    assert replacement.customer == original.customer
    assert replacement.shipping_address == original.shipping_address
    assert [(i.sku, i.quantity) for i in replacement.items] == \
        [(i.sku, i.quantity) for i in original.items]
    with pytest.raises(StoreError):
        store.orders.create_replacement("A1010", "again")
    for not_shipped in ("A1004", "A1009", "A9999"):
        with pytest.raises(StoreError):
            store.orders.create_replacement(not_shipped, "lost")


# --- returns and refunds ---------------------------------------------------------------

def test_create_return_issues_rma_and_label(store: Store, now: datetime) -> None:
    ret = store.returns.create_return("#a1002", "too small")
    assert re.fullmatch(r"RMA-[A-Z0-9]{8}", ret.rma_id)
    assert ret.label_url == f"https://returns.example-store.test/labels/{ret.rma_id}.pdf"
    assert (ret.order_id, ret.status, ret.reason) == ("A1002", ReturnStatus.LABEL_ISSUED,
                                                       "too small")
    assert now <= ret.created_at <= utc_now() and ret.shipped_at is None
    assert store.returns.get_return("A1002") == ret


def test_create_return_label_base_from_environment(store: Store,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETURN_LABEL_BASE_URL", "https://labels.shop.test/")
    ret = store.returns.create_return("A1006", "damaged")
    assert ret.label_url == f"https://labels.shop.test/labels/{ret.rma_id}.pdf"


def test_rma_ids_are_unique(store: Store) -> None:
    delivered = ["A1002", "A1005", "A1006", "A1011", "A1012", "A1013", "A1014", "A1015"]
    rmas = {store.returns.create_return(o, "unwanted").rma_id for o in delivered}
    assert len(rmas) == len(delivered)


@pytest.mark.not_on("woocommerce", reason=WOO_NO_RETURNS)
@pytest.mark.parametrize("order_id", ["A1007", "A1008"])
def test_duplicate_return_refused(systems: StoreSystems, order_id: str) -> None:
    before = systems.returns.get_return(order_id)
    with pytest.raises(StoreError):
        systems.returns.create_return(order_id, "again")
    assert before is not None and systems.returns.get_return(order_id) == before


@pytest.mark.not_on("woocommerce", reason=WOO_NO_RETURNS)
def test_second_return_for_new_order_refused(systems: StoreSystems) -> None:
    first = systems.returns.create_return("A1012", "unwanted")
    with pytest.raises(StoreError):
        systems.returns.create_return("A1012", "again")
    assert systems.returns.get_return("A1012") == first


@pytest.mark.parametrize("order_id", ["A1001", "A1004", "A1009", "A9999"])
def test_return_refused_unless_delivered(systems: StoreSystems, order_id: str) -> None:
    with pytest.raises(StoreError):
        systems.returns.create_return(order_id, "unwanted")
    assert systems.returns.get_return(order_id) is None


@pytest.mark.not_on("woocommerce", reason="a refund its payment gateway made is issued")
def test_create_refund_pending(systems: StoreSystems, now: datetime) -> None:
    refund = systems.returns.create_refund("A1006", Decimal("1250.00"), "damaged")
    assert re.fullmatch(r"RF-[A-Z0-9]+", refund.refund_id)
    assert (refund.order_id, refund.amount, refund.currency) == ("A1006", Decimal("1250.00"),
                                                                 "USD")
    assert refund.status is RefundStatus.PENDING and refund.issued_at is None
    assert refund.method == "original_payment"
    assert now <= refund.created_at <= utc_now()
    assert systems.returns.get_refund("a1006") == refund


def test_refunds_never_exceed_the_order_total(store: Store) -> None:
    first = store.returns.create_refund("A1011", Decimal("900.00"), "partial",
                                        method="store_credit")
    assert first.method == "store_credit"
    with pytest.raises(StoreError):
        store.returns.create_refund("A1011", Decimal("80.01"), "too much")
    store.returns.create_refund("A1011", Decimal("80.00"), "the rest")
    for order_id in ("A1007", "A1008"):  # already fully refunded (pending or issued)
        with pytest.raises(StoreError):
            store.returns.create_refund(order_id, Decimal("1.00"), "more")


@pytest.mark.parametrize(("amount", "method"), [(Decimal("0"), "original_payment"),
                                                (Decimal("-5"), "original_payment"),
                                                (Decimal("5"), "cash")])
def test_invalid_refund_refused(systems: StoreSystems, amount: Decimal, method: str) -> None:
    with pytest.raises(StoreError):
        systems.returns.create_refund("A1006", amount, "x", method=method)
    assert systems.returns.get_refund("A1006") is None


# --- carrier claims --------------------------------------------------------------------

def test_claims_by_customer_counts_buyer7(store: Store, now: datetime) -> None:
    assert [c.order_id for c in store.delivery.claims_by_customer(7, days_ago(now, 30))] == \
        ["A1013"]
    claims = store.delivery.claims_by_customer(7, days_ago(now, 60))
    assert [(c.order_id, c.kind) for c in claims] == [("A1013", "not_received"),
                                                      ("A1014", "not_received")]
    assert claims[0].created_at == days_ago(now, 15)
    assert store.delivery.claims_by_customer(7, days_ago(now, 10)) == []
    assert store.delivery.claims_by_customer(1, days_ago(now, 60)) == []


def test_claims_since_in_another_timezone(store: Store, now: datetime) -> None:
    filed = days_ago(now, 15)  # A1013's claim, the newest of buyer7
    east, west = timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-7))
    just_before = (filed - timedelta(seconds=1)).astimezone(east)
    just_after = (filed + timedelta(seconds=1)).astimezone(west)
    assert [c.order_id for c in store.delivery.claims_by_customer(7, just_before)] == ["A1013"]
    assert store.delivery.claims_by_customer(7, just_after) == []


def test_open_claim(store: Store, now: datetime) -> None:
    claim = store.delivery.open_claim("a1012", "not_received")
    assert re.fullmatch(r"CLM-[A-Z0-9]{8}", claim.claim_id)
    assert (claim.order_id, claim.kind) == ("A1012", "not_received")
    assert now <= claim.created_at <= utc_now()
    recent = store.delivery.claims_by_customer(7, days_ago(now, 30))
    assert [c.order_id for c in recent] == ["A1012", "A1013"]


def test_claims_opened_in_a_window_oldest_first_of_the_kinds_asked(store: Store,
                                                                    now: datetime) -> None:
    trace = store.delivery.open_claim("A1003", "trace")
    store.delivery.open_claim("A1002", "damaged")
    opened = store.delivery.claims_opened(days_ago(now, 30), ["trace", "not_received"])
    assert [(c.claim_id, c.kind) for c in opened] == [("CLM-8R4T6Y2U", "not_received"),
                                                      (trace.claim_id, "trace")]
    assert opened[0].created_at == days_ago(now, 15)
    assert [c.claim_id for c in store.delivery.claims_opened(days_ago(now, 15), ["not_received"])] \
        == ["CLM-8R4T6Y2U"]  # at or after `since`
    assert store.delivery.claims_opened(days_ago(now, 14), ["not_received"]) == []
    assert [c.claim_id for c in store.delivery.claims_opened(days_ago(now, 60), ["trace"])] == \
        [trace.claim_id]


@pytest.mark.parametrize(("order_id", "kind"), [("A1004", "not_received"), ("A1012", "stolen"),
                                                ("A9999", "lost")])
def test_open_claim_refused(store: Store, now: datetime, order_id: str, kind: str) -> None:
    with pytest.raises(StoreError):
        store.delivery.open_claim(order_id, kind)
    assert len(store.delivery.claims_by_customer(7, days_ago(now, 60))) == 2


# --- contacts ---------------------------------------------------------------------------

def test_contact_log_count_since_excludes_a_conversation(store: Store, now: datetime) -> None:
    key, issue = "buyer1@example.com", "not_received"
    for conversation in ("c1", "c2", "c1"):
        store.contacts.record(key, issue, conversation)
    store.contacts.record(key, "refund_status", "c4")
    store.contacts.record("buyer2@example.com", issue, "c5")
    hour_ago = now - timedelta(hours=1)
    assert store.contacts.count_since(key, issue, hour_ago, excluding_conversation="c3") == 3
    assert store.contacts.count_since(key, issue, hour_ago, excluding_conversation="c1") == 1
    assert store.contacts.count_since(key, issue, hour_ago, excluding_conversation="c2") == 2
    assert store.contacts.count_since(key, "refund_status", hour_ago, "c3") == 1
    later = utc_now() + timedelta(hours=1)
    assert store.contacts.count_since(key, issue, later, excluding_conversation="c3") == 0


# --- seeding ----------------------------------------------------------------------------

def test_seed_is_idempotent_and_clears_runtime_data(store: Store, now: datetime) -> None:
    counts = table_counts(store)
    orders = [store.orders.get_order(f"A{n}") for n in (*range(1001, 1017), 2001, 2100, 2200)]
    assert counts["orders"] == 221 and counts["contact_events"] == 0
    store.contacts.record("buyer1@example.com", "order_status", "conv-1")
    store.returns.create_return("A1002", "too small")
    store.orders.cancel_order("A1004", "no longer needed")
    store.orders.create_replacement("A1010", "lost")
    assert seed_demo_store(store, now) == 221
    assert table_counts(store) == counts
    assert [store.orders.get_order(o.order_id) for o in orders if o] == orders
    assert store.returns.get_return("A1002") is None


def test_seed_is_fast(store: Store, now: datetime) -> None:
    started = time.perf_counter()
    assert seed_demo_store(store, now) == 221
    assert time.perf_counter() - started < 2.0


def test_processes_starting_at_once_on_postgresql_create_the_tables_once(
        postgres_url: str) -> None:
    """Gateways and the action server start together on an empty database: each creates
    what is missing, in turn, instead of two finding a table missing and one failing."""
    from concurrent.futures import ThreadPoolExecutor

    from common.sql import create_store_engine, create_tables

    schema = f"race_{int(time.time() * 1000) % 10**9}"
    url = sa.engine.make_url(postgres_url).update_query_dict(
        {"options": f"-csearch_path={schema}"})
    admin = create_store_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engines = [create_store_engine(url.render_as_string(hide_password=False))
               for _ in range(6)]
    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            list(pool.map(lambda engine: create_tables(metadata, engine), engines))
        with admin.connect() as connection:
            created = set(connection.execute(sa.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema}).scalars())
        assert created == set(metadata.tables)
    finally:
        for engine in engines:
            engine.dispose()
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_two_refunds_at_the_same_moment_never_exceed_the_order_total(
        store: Store, store_url: str) -> None:
    """Two conversations refund one order at once, each within what is left: the second
    must see the first. Each writer stops just before its insert, after reading the sum,
    until the other arrives or a second passes; without the order lock both would pass."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import suppress
    from threading import Barrier, BrokenBarrierError

    from actions.store.sql import open_store

    both_read = Barrier(2, timeout=1.0)

    def clock_after_the_other_read() -> datetime:
        with suppress(BrokenBarrierError):
            both_read.wait()
        return utc_now()

    racing = open_store(store_url, clock=clock_after_the_other_read)
    total = store.orders.get_order("A1011").total  # type: ignore[union-attr]

    def refund(_: int) -> str:
        try:
            return racing.returns.create_refund("A1011", Decimal("600.00"), "race").refund_id
        except StoreError:
            return "refused"

    try:
        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(refund, range(2)))
    finally:
        racing.close()
    assert total < Decimal("1200.00")
    assert outcomes[1] == "refused" and outcomes[0].startswith("RF-")
    assert sum(r.amount for r in store.returns.refunds("A1011")) == Decimal("600.00")


def test_a_return_with_another_serial_than_shipped_is_a_swap_of_its_customer(
        store: Store, now: datetime) -> None:
    assert store.returns.swapped_returns(12, now - timedelta(days=90)) == ["A1020"]
    assert store.returns.swapped_returns(12, now - timedelta(days=10)) == []  # received before
    assert store.returns.swapped_returns(4, now - timedelta(days=90)) == []  # A1007: in transit
    with store.engine.begin() as conn:  # the warehouse receives A1007's unit as shipped
        conn.execute(sa.text("UPDATE item_serials SET returned_serial = shipped_serial "
                             "WHERE order_id = 'A1007'"))
        conn.execute(sa.text("UPDATE returns SET received_at = shipped_at "
                             "WHERE order_id = 'A1007'"))
    assert store.returns.swapped_returns(4, now - timedelta(days=90)) == []
