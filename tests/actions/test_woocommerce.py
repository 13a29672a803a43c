"""The WooCommerce backend against the stand-in of WooCommerce's REST API v3
(tests/store_api/woocommerce.py): credentials, pages, throttling and failures, refused
refunds, `api_refund`, the Shipment Tracking extension, and the bot's flows through the
guarded write path."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterator, Optional

import pytest

from actions.conversation import shared_store
from actions.policy import current_policy
from actions.store.backend import check_config, open_systems
from actions.store.types import (
    Address,
    DeliveryException,
    Holdup,
    OrderStatus,
    PlatformPolicy,
    RefundStatus,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
)
from actions.store.woocommerce import WooStore
from actions.store.woocommerce import systems as woo_systems
from actions.store.woocommerce.client import WooConfig
from tests.conftest import woocommerce_env
from tests.store_api.woocommerce import WooCommerceStandIn

from .test_actions import answer, escalation, resolve

NEW_ADDRESS = Address(name="Jordan Lee", line1="9 Harbor Way", line2="Apt 3",
                      city="Seattle, WA", postal_code="98121", country="US")
ORDER = r"/wp-json/wc/v3/orders/\d+"
S = OrderStatus


def open_shop(shop: WooCommerceStandIn, tmp_path: Path, refund_through_gateway: bool = True,
              **env: str) -> WooStore:
    systems = open_systems({**woocommerce_env(shop, **env),
                            "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}"},
                           PlatformPolicy(refund_through_gateway=refund_through_gateway))
    assert isinstance(systems, WooStore)
    return systems


@pytest.fixture
def woo(woocommerce_shop: WooCommerceStandIn, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[WooStore]:
    monkeypatch.setattr("actions.store.woocommerce.client.FIRST_BACKOFF_SECONDS", 0.01)
    systems = open_shop(woocommerce_shop, tmp_path)
    yield systems
    systems.close()


def days_ago(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)


# --- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "named"), [
    ({}, "WOOCOMMERCE_URL"),
    ({"WOOCOMMERCE_URL": "https://shop.example.com"}, "WOOCOMMERCE_KEY"),
    ({"WOOCOMMERCE_URL": "https://shop.example.com", "WOOCOMMERCE_KEY": "ck_x"},
     "WOOCOMMERCE_SECRET"),
    ({"WOOCOMMERCE_URL": "http://shop.example.com", "WOOCOMMERCE_KEY": "ck_x",
      "WOOCOMMERCE_SECRET": "cs_x"}, "https://"),
    ({"WOOCOMMERCE_URL": "shop.example.com", "WOOCOMMERCE_KEY": "ck_x",
      "WOOCOMMERCE_SECRET": "cs_x"}, "WOOCOMMERCE_URL"),
    ({"WOOCOMMERCE_URL": "https://shop.example.com", "WOOCOMMERCE_KEY": "ck_x",
      "WOOCOMMERCE_SECRET": "cs_x", "WOOCOMMERCE_TIMEOUT_SECONDS": "0"},
     "WOOCOMMERCE_TIMEOUT_SECONDS"),
    ({"WOOCOMMERCE_URL": "https://shop.example.com", "WOOCOMMERCE_KEY": "ck_x",
      "WOOCOMMERCE_SECRET": "cs_x", "WOOCOMMERCE_COMPLETED_MEANS": "paid"},
     "WOOCOMMERCE_COMPLETED_MEANS"),
])
def test_a_shop_that_cannot_be_used_names_the_variable(env: dict, named: str) -> None:
    with pytest.raises(StoreConfigError, match=named):
        check_config({"STORE_BACKEND": "woocommerce", **env})


def test_plain_http_only_for_this_machine() -> None:
    for url in ("http://localhost:8080", "http://127.0.0.1:9000/shop/"):
        config = WooConfig.from_env({"WOOCOMMERCE_URL": url, "WOOCOMMERCE_KEY": "ck_x",
                                     "WOOCOMMERCE_SECRET": "cs_x"})
        assert config.api_url == f"{url.rstrip('/')}/wp-json/wc/v3"
    config = WooConfig.from_env({"WOOCOMMERCE_URL": "https://shop.example.com/",
                                 "WOOCOMMERCE_KEY": " ck_x ", "WOOCOMMERCE_SECRET": "cs_x"})
    assert (config.api_url, config.key) == ("https://shop.example.com/wp-json/wc/v3", "ck_x")
    assert config.tracking_url == "https://shop.example.com/wp-json/wc-shipment-tracking/v3"


# --- credentials ------------------------------------------------------------------------------

def test_a_wrong_key_is_store_unavailable_with_a_clear_log_line(
        woocommerce_shop: WooCommerceStandIn, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    systems = open_shop(woocommerce_shop, tmp_path, WOOCOMMERCE_SECRET="cs_revoked")
    try:
        with (caplog.at_level(logging.ERROR, "actions.store.woocommerce"),
              pytest.raises(StoreUnavailable, match="refused the credentials \\(HTTP 401, "
                                                    "woocommerce_rest_authentication_error")):
            systems.orders.get_order("A1001")
        assert "check WOOCOMMERCE_KEY and WOOCOMMERCE_SECRET" in caplog.text
        with pytest.raises(StoreUnavailable):  # a write as much as a read
            systems.orders.cancel_order("A1004", "changed my mind")
        assert woocommerce_shop.calls("PUT", ORDER) == []
        assert [r.status for r in woocommerce_shop.received] == [401, 401]  # never retried
    finally:
        systems.close()


def test_a_read_only_key_reads_but_cannot_write(now: datetime, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    shop = WooCommerceStandIn.from_demo(now, tmp_path, permissions="read")
    shop.start()
    systems = open_shop(shop, tmp_path)
    try:
        assert systems.orders.get_order("A1004") is not None
        with (caplog.at_level(logging.ERROR, "actions.store.woocommerce"),
              pytest.raises(StoreUnavailable, match="refused the credentials")):
            systems.orders.cancel_order("A1004", "changed my mind")
        assert "Read/Write permission" in caplog.text
        assert shop.order("1004")["status"] == "processing"
    finally:
        systems.close()
        shop.stop()


# --- reading ---------------------------------------------------------------------------------

# order, status, WooCommerce's status, shipped, delivered (days before now), carrier
WOO_ORDERS = [
    ("A1001", S.SHIPPED, "completed", 1, None, "UPS"),
    ("A1002", S.DELIVERED, "delivered", 8, 5, "FedEx"),
    ("A1003", S.SHIPPED, "completed", 9, None, "FedEx"),
    ("A1004", S.PAID, "processing", None, None, None),
    ("A1006", S.DELIVERED, "delivered", 3, 1, "UPS"),
    # refunded in full while its return is on the way: WooCommerce says refunded
    ("A1007", S.RETURNED, "refunded", 15, None, "DHL"),
    ("A1008", S.RETURNED, "refunded", 23, None, "USPS"),
    ("A1009", S.CANCELLED, "cancelled", None, None, None),
    ("A1010", S.SHIPPED, "completed", 14, None, "USPS"),
    ("A1016", S.SHIPPED, "completed", 6, None, "DHL"),
]


@pytest.mark.parametrize(("order_id", "status", "woo_status", "shipped", "delivered",
                          "carrier"), WOO_ORDERS, ids=[row[0] for row in WOO_ORDERS])
def test_the_demo_orders_as_woocommerce_keeps_them(
        woo: WooStore, woocommerce_shop: WooCommerceStandIn, now: datetime, order_id: str,
        status: OrderStatus, woo_status: str, shipped: Optional[int],
        delivered: Optional[int], carrier: Optional[str]) -> None:
    assert woocommerce_shop.order(order_id)["status"] == woo_status
    order = woo.orders.get_order(order_id)
    assert order is not None and (order.order_id, order.status) == (order_id, status)
    assert order.total == sum(i.unit_price * i.quantity for i in order.items) > 0
    assert order.customer.name == order.billing_address.name != ""
    shipment = woo.delivery.get_shipment(order_id)
    if carrier is None:
        assert shipment is None and order.shipped_at is None
        return
    assert shipment is not None and shipped is not None
    assert shipment.carrier == carrier and shipment.tracking_number in shipment.tracking_url
    assert shipment.shipped_at == order.shipped_at == days_ago(now, shipped)
    assert shipment.events == () and shipment.exception is DeliveryException.NONE
    assert not shipment.scans_known  # no carrier scans reach WooCommerce
    expected = None if delivered is None else days_ago(now, delivered)
    assert shipment.delivered_at == order.delivered_at == expected


def test_completed_may_mean_delivered(woocommerce_shop: WooCommerceStandIn,
                                      tmp_path: Path, now: datetime) -> None:
    systems = open_shop(woocommerce_shop, tmp_path, WOOCOMMERCE_COMPLETED_MEANS="delivered")
    try:
        order = systems.orders.get_order("A1001")
        assert order is not None and order.status is S.DELIVERED
        assert order.delivered_at == order.shipped_at == days_ago(now, 1)
    finally:
        systems.close()


def test_a_customers_orders_are_read_across_pages(
        woo: WooStore, woocommerce_shop: WooCommerceStandIn,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(woo_systems, "PER_PAGE", 2)
    found = woo.orders.orders_for_contact("+14155550107")
    assert [o.order_id for o in found] == ["A1012", "A1013", "A1014"]
    asked = woocommerce_shop.calls("GET", "/wp-json/wc/v3/orders")
    # the search finds more than buyer7's orders (other numbers hold 0107): all pages read
    assert len(asked) >= 2
    assert [(r.query["page"], r.query["per_page"]) for r in asked] == [
        (str(n), "2") for n in range(1, len(asked) + 1)]
    assert {r.query["search"] for r in asked} == {"0107"}


def test_orders_since_reads_every_page(woo: WooStore, woocommerce_shop: WooCommerceStandIn,
                                       now: datetime) -> None:
    since = days_ago(now, 30)
    expected = sorted((o for o in woocommerce_shop.orders.values()
                       if o["date_created_gmt"] >= since.strftime("%Y-%m-%dT%H:%M:%S")),
                      key=lambda o: (o["date_created_gmt"], o["id"]), reverse=True)
    assert len(expected) > woo_systems.PER_PAGE  # more than one page
    recent = woo.orders.orders_since(since)
    assert [o.order_id for o in recent] == [f"A{o['id']}" for o in expected]
    pages = woocommerce_shop.calls("GET", "/wp-json/wc/v3/orders")
    assert len(pages) == -(-len(expected) // woo_systems.PER_PAGE)
    shipped = woo.orders.orders_since(since, OrderStatus.SHIPPED)
    assert shipped and all(o.status is S.SHIPPED for o in shipped)


def test_an_order_number_of_a_numbering_plugin_is_found_by_search(
        woo: WooStore, woocommerce_shop: WooCommerceStandIn) -> None:
    """Sequential-number plugins give orders a number other than their id."""
    order = woocommerce_shop.orders.pop(1004)
    order["id"] = 5521
    woocommerce_shop.orders[5521] = order
    for part in (woocommerce_shop.trackings, woocommerce_shop.refunds, woocommerce_shop.notes):
        part[5521] = part.pop(1004)
    order["number"] = "1004"
    found = woo.orders.get_order("A1004")
    assert found is not None and found.order_id == "A1004"
    moved = woo.orders.change_shipping_address("A1004", NEW_ADDRESS)
    assert moved.shipping_address == NEW_ADDRESS
    assert woocommerce_shop.calls("PUT", ORDER)[0].path.endswith("/orders/5521")


def test_without_the_tracking_extension_orders_have_no_tracking(
        now: datetime, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shop = WooCommerceStandIn.from_demo(now, tmp_path, tracking_extension=False)
    shop.start()
    systems = open_shop(shop, tmp_path)
    try:
        with caplog.at_level(logging.INFO, "actions.store.woocommerce"):
            assert systems.delivery.get_shipment("A1001") is None
            assert systems.delivery.shipments("A1002") == []
        order = systems.orders.get_order("A1001")
        assert order is not None and order.status is S.SHIPPED
        assert [r.status for r in shop.received if "shipment-trackings" in r.path] == [404, 404]
        assert caplog.text.count("no Shipment Tracking routes") == 1
    finally:
        systems.close()
        shop.stop()


def test_one_turn_reads_each_order_once(woo: WooStore,
                                        woocommerce_shop: WooCommerceStandIn) -> None:
    woo.begin_turn()
    for _ in range(2):
        assert woo.orders.get_order("A1001") is not None
        assert woo.delivery.get_shipment("A1001") is not None
        assert woo.returns.get_refund("A1001") is None
    assert len(woocommerce_shop.calls("GET", ORDER)) == 1
    assert len(woocommerce_shop.received) == 3  # the order, its trackings, its refunds
    woo.begin_turn()
    assert woo.orders.get_order("A1001") is not None
    assert len(woocommerce_shop.calls("GET", ORDER)) == 2


# --- throttling and failures -------------------------------------------------------------------

def test_throttled_reads_are_retried(woo: WooStore, woocommerce_shop: WooCommerceStandIn,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(woo.client, "_sleep", waits.append)
    woocommerce_shop.throttle_next, woocommerce_shop.retry_after = 2, "0.5"
    order = woo.orders.get_order("A1001")
    assert order is not None and order.order_id == "A1001"
    assert [r.status for r in woocommerce_shop.received] == [429, 429, 200]
    assert waits == [0.5, 0.5]  # Retry-After, when longer than the backoff


def test_throttled_for_too_long_is_store_unavailable(
        woo: WooStore, woocommerce_shop: WooCommerceStandIn) -> None:
    woocommerce_shop.throttle_next = 10
    woocommerce_shop.retry_after = "0"
    with pytest.raises(StoreUnavailable, match="kept throttling"):
        woo.orders.get_order("A1001")
    assert len(woocommerce_shop.received) == 3  # a bounded number of tries


def test_a_failing_shop_is_retried_on_reads_never_on_writes(
        woo: WooStore, woocommerce_shop: WooCommerceStandIn) -> None:
    woocommerce_shop.fail_next = 1
    assert woo.orders.get_order("A1004") is not None
    assert [r.status for r in woocommerce_shop.received] == [503, 200]
    woocommerce_shop.received.clear()
    woocommerce_shop.before_next_write = lambda: setattr(woocommerce_shop, "fail_next", 1)
    with pytest.raises(StoreUnavailable, match="HTTP 503"):
        woo.orders.change_shipping_address("A1004", NEW_ADDRESS)
    # the PUT may have been made for all the bot knows: not sent again
    assert [r.status for r in woocommerce_shop.calls("PUT", ORDER)] == [503]


def test_a_shop_that_does_not_answer_in_time_is_store_unavailable(
        now: datetime, tmp_path: Path) -> None:
    shop = WooCommerceStandIn.from_demo(now, tmp_path, delay=1.0)
    shop.start()
    systems = open_shop(shop, tmp_path, WOOCOMMERCE_TIMEOUT_SECONDS="0.3")
    try:
        with pytest.raises(StoreUnavailable, match="ReadTimeout"):
            systems.orders.get_order("A1001")
    finally:
        systems.close()
        shop.stop()


# --- writes ----------------------------------------------------------------------------------

def test_cancel_refunds_what_was_paid_and_leaves_a_note(
        woo: WooStore, woocommerce_shop: WooCommerceStandIn) -> None:
    cancelled = woo.orders.cancel_order("A1004", "changed my mind [k1]")
    assert cancelled.status is S.CANCELLED and cancelled.cancelled_at is not None
    (put,) = woocommerce_shop.calls("PUT", ORDER)
    assert put.body == {"status": "cancelled"}
    (posted,) = woocommerce_shop.calls("POST", ORDER + "/refunds")
    assert posted.body["amount"] == "149.00" and posted.body["api_refund"] is True
    refund = woo.returns.get_refund("A1004")
    assert refund is not None and refund.amount == Decimal("149.00")
    assert "[k1]" in refund.reason
    assert woocommerce_shop.order("1004")["status"] == "refunded"  # WooCommerce, refunded in full
    notes = [n["note"] for n in woocommerce_shop.notes[1004] if n["author"] == "API"]
    assert notes[0] == "Cancelled by the support bot: changed my mind [k1]"
    assert notes[1].startswith("Refund of 149.00 made by the support bot (through the "
                               "payment gateway)")
    assert all(not n["customer_note"] for n in woocommerce_shop.notes[1004])
    with pytest.raises(StoreError, match="cancelled"):
        woo.orders.cancel_order("A1004", "again")


def test_a_cancel_whose_refund_the_gateway_declines_is_unconfirmed(
        woo: WooStore, woocommerce_shop: WooCommerceStandIn) -> None:
    """Cancelled, but not refunded: not a refusal ("nothing was changed") but a change
    a person must finish."""
    woocommerce_shop.gateway_refunds_fail = True
    with pytest.raises(StoreUnavailable, match="was cancelled but WooCommerce refused its "
                                               "refund of 149.00: Refund failed"):
        woo.orders.cancel_order("A1004", "changed my mind")
    assert woocommerce_shop.order("1004")["status"] == "cancelled"


def test_an_unpaid_order_is_cancelled_without_a_refund(
        woo: WooStore, woocommerce_shop: WooCommerceStandIn) -> None:
    order = woocommerce_shop.order("1004")
    order.update(status="on-hold", date_paid=None, date_paid_gmt=None)  # bank transfer
    cancelled = woo.orders.cancel_order("A1004", "changed my mind")
    assert cancelled.status is S.CANCELLED
    assert woocommerce_shop.calls("POST", ORDER + "/refunds") == []
    assert woo.returns.refunds("A1004") == []


def test_a_shipped_order_is_not_cancelled(woo: WooStore,
                                          woocommerce_shop: WooCommerceStandIn) -> None:
    """WooCommerce would take the status change: the bot checks the order first."""
    woocommerce_shop.ship("A1004")
    with pytest.raises(StoreError, match="shipped: it cannot be cancelled"):
        woo.orders.cancel_order("A1004", "changed my mind")
    assert woocommerce_shop.calls("PUT", ORDER) == []


def test_the_address_change_is_sent_and_read_back(
        woo: WooStore, woocommerce_shop: WooCommerceStandIn) -> None:
    before = woo.orders.get_order("A1004")
    changed = woo.orders.change_shipping_address("A1004", NEW_ADDRESS)
    assert changed.shipping_address == NEW_ADDRESS
    assert before is not None and changed.billing_address == before.billing_address
    (put,) = woocommerce_shop.calls("PUT", ORDER)
    assert put.body["shipping"] == {"first_name": "Jordan", "last_name": "Lee", "company": "",
                                    "address_1": "9 Harbor Way", "address_2": "Apt 3",
                                    "city": "Seattle", "state": "WA", "postcode": "98121",
                                    "country": "US"}
    assert woocommerce_shop.notes[1004][-1]["note"] == (
        "Shipping address changed by the support bot to: 9 Harbor Way, Apt 3, "
        "98121 Seattle, WA, US")


def test_an_address_change_that_does_not_show_is_read_back_unchanged(
        woo: WooStore, woocommerce_shop: WooCommerceStandIn) -> None:
    woocommerce_shop.ignore_address_updates = True
    before = woo.orders.get_order("A1004")
    after = woo.orders.change_shipping_address("A1004", NEW_ADDRESS)
    assert before is not None and after.shipping_address == before.shipping_address
    assert len(woocommerce_shop.calls("PUT", ORDER)) == 1


@pytest.mark.parametrize("through_gateway", [True, False])
def test_api_refund_is_sent_as_the_policy_says(
        woocommerce_shop: WooCommerceStandIn, tmp_path: Path, now: datetime,
        through_gateway: bool) -> None:
    systems = open_shop(woocommerce_shop, tmp_path, refund_through_gateway=through_gateway)
    try:
        refund = systems.returns.create_refund("A1006", Decimal("40.00"), "scratched [k2]")
        (posted,) = woocommerce_shop.calls("POST", ORDER + "/refunds")
        assert posted.body == {"amount": "40.00", "reason": "scratched [k2]",
                               "api_refund": through_gateway, "api_restock": False}
        assert (refund.amount, refund.reason, refund.order_id) == (
            Decimal("40.00"), "scratched [k2]", "A1006")
        if through_gateway:  # the gateway paid it back
            assert refund.status is RefundStatus.ISSUED and refund.issued_at is not None
        else:  # recorded for the shop to pay back by hand
            assert refund.status is RefundStatus.PENDING and refund.issued_at is None
        assert now <= refund.created_at
        assert systems.returns.get_refund("A1006") == refund
    finally:
        systems.close()


def test_the_policy_decides_api_refund_by_default_money_moves() -> None:
    assert current_policy().refunds.through_payment_gateway is True


def test_refunds_never_exceed_what_was_paid_less_refunded(
        woo: WooStore, woocommerce_shop: WooCommerceStandIn) -> None:
    woo.returns.create_refund("A1011", Decimal("900.00"), "partial")
    with pytest.raises(StoreError, match="at most 80.00"):
        woo.returns.create_refund("A1011", Decimal("80.01"), "too much")
    woo.returns.create_refund("A1011", Decimal("80.00"), "the rest")
    assert [r.amount for r in woo.returns.refunds("A1011")] == [Decimal("80.00"),
                                                                Decimal("900.00")]
    for invalid in (Decimal("0"), Decimal("-5")):
        with pytest.raises(StoreError):
            woo.returns.create_refund("A1006", invalid, "x")
    with pytest.raises(StoreError, match="store_credit"):
        woo.returns.create_refund("A1006", Decimal("5.00"), "x", method="store_credit")
    assert len(woocommerce_shop.calls("POST", ORDER + "/refunds")) == 2


def test_a_refund_woocommerce_refuses_is_store_error_with_its_message(
        woo: WooStore, woocommerce_shop: WooCommerceStandIn) -> None:
    def refunded_meanwhile() -> None:  # staff refunded most of it in WooCommerce's admin
        woocommerce_shop._refund(1006, Decimal("1200.00"), "", datetime.now(timezone.utc),
                                 paid_back=True)

    woocommerce_shop.before_next_write = refunded_meanwhile
    with pytest.raises(StoreError, match="^Invalid refund amount.$"):
        woo.returns.create_refund("A1006", Decimal("100.00"), "damaged")
    # WooCommerce answers that with HTTP 500: a refusal, not asked again
    assert [r.status for r in woocommerce_shop.calls("POST", ORDER + "/refunds")] == [500]


def test_a_refund_the_gateway_declines_is_store_error(
        woo: WooStore, woocommerce_shop: WooCommerceStandIn) -> None:
    woocommerce_shop.gateway_refunds_fail = True
    with pytest.raises(StoreError, match="Refund failed"):
        woo.returns.create_refund("A1006", Decimal("10.00"), "damaged")
    assert woo.returns.refunds("A1006") == []


def test_returns_claims_and_replacements_go_to_a_person(woo: WooStore) -> None:
    assert woo.returns.get_return("A1007") is None
    with pytest.raises(StoreError, match="no returns of its own"):
        woo.returns.create_return("A1002", "too small")
    with pytest.raises(StoreError, match="a person"):
        woo.delivery.open_claim("A1010", "lost")
    with pytest.raises(StoreError, match="a person"):
        woo.orders.create_replacement("A1010", "lost")


# --- the bot's flows on WooCommerce, through the guarded write path ---------------------------

@pytest.fixture
def woo_actions(woocommerce_shop: WooCommerceStandIn, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[WooCommerceStandIn]:
    """The actions open the WooCommerce backend (STORE_BACKEND=woocommerce) on the stand-in."""
    for name, value in woocommerce_env(woocommerce_shop).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'bot.db'}")
    shared_store.cache_clear()
    yield woocommerce_shop
    shared_store().close()
    shared_store.cache_clear()


async def test_status_of_a_shipped_order_from_woocommerce(
        woo_actions: WooCommerceStandIn) -> None:
    outcome = await resolve("order_status", "A1001")
    assert outcome.responses[0] == "utter_status_in_transit"
    assert outcome.facts("utter_status_in_transit")["tracking_number"] == "1Z999AA10123456784"
    assert len(woo_actions.calls("GET", ORDER)) == 1  # the turn read the order once


@pytest.mark.parametrize(("status", "holdup", "told"), [
    ("pending", Holdup.PAYMENT, "utter_status_awaiting_payment"),
    ("on-hold", Holdup.PAYMENT, "utter_status_awaiting_payment"),
    ("processing", Holdup.NONE, "utter_status_paid")])
async def test_an_order_awaiting_its_payment_is_not_told_as_paid(
        woo_actions: WooCommerceStandIn, status: str, holdup: Holdup, told: str) -> None:
    woo_actions.order("1004").update(status=status)
    order = shared_store().orders.get_order("A1004")
    assert order is not None and (order.status, order.holdup) == (S.PAID, holdup)
    outcome = await resolve("order_status", "A1004")
    assert outcome.responses == [told]


async def test_a_parcel_without_carrier_scans_is_told_late_by_its_date_not_stuck(
        woo_actions: WooCommerceStandIn) -> None:
    """A1003 left 9 days ago; WooCommerce keeps no carrier scans, so nothing says it
    stopped moving: no trace is offered, only the date it was due is told."""
    outcome = await resolve("order_status", "A1003")
    # WooCommerce has no estimate either: the 5 days it is given are long past
    assert outcome.responses == ["utter_status_late", "utter_next_step_no_estimate"]
    assert outcome.slot("pending_offer") is None


async def test_cancel_on_woocommerce_asks_first_then_cancels_once(
        woo_actions: WooCommerceStandIn) -> None:
    question = await resolve("cancel_order", "A1004")
    assert question.responses == ["utter_confirm_cancel"]
    assert woo_actions.calls("PUT", ORDER) == []  # asking changes nothing
    done = await answer(question, "A1004")
    assert done.responses == ["utter_cancelled"]
    refund = shared_store().returns.get_refund("A1004")
    assert refund is not None and done.facts("utter_cancelled")["refund_id"] == refund.refund_id
    retried = await answer(question, "A1004")  # the same answer again: nothing twice
    assert retried.responses == ["utter_cancelled"]
    assert len(woo_actions.calls("PUT", ORDER)) == 1
    assert len(woo_actions.calls("POST", ORDER + "/refunds")) == 1
    (write,) = shared_store().writes.for_order("A1004")
    assert (write.kind, write.status, write.before["status"]) == ("cancel", "done", "paid")


async def test_an_address_change_that_does_not_show_goes_to_a_person(
        woo_actions: WooCommerceStandIn) -> None:
    woo_actions.ignore_address_updates = True
    question = await resolve("change_address", "A1004",
                             new_address="9 Harbor Way, Apt 3, Seattle, WA 98121")
    assert question.responses[-1] == "utter_confirm_address"
    outcome = await answer(question, "A1004")
    assert "utter_write_unconfirmed" in outcome.responses
    assert escalation(outcome)["rule"] == "write_unconfirmed"
    (write,) = shared_store().writes.for_order("A1004")
    assert write.status == "unconfirmed"


async def test_an_address_change_on_woocommerce_is_made_and_told(
        woo_actions: WooCommerceStandIn) -> None:
    question = await resolve("change_address", "A1004",
                             new_address="9 Harbor Way, Apt 3, Seattle, WA 98121")
    outcome = await answer(question, "A1004")
    assert outcome.responses == ["utter_address_changed"]
    assert woo_actions.order("1004")["shipping"]["address_1"] == "9 Harbor Way"
    (write,) = shared_store().writes.for_order("A1004")
    assert (write.kind, write.status) == ("change_address", "done")


async def test_a_return_on_woocommerce_goes_to_a_person_without_asking_for_a_yes(
        woo_actions: WooCommerceStandIn) -> None:
    """WooCommerce has no returns: the customer is not asked to confirm one the store
    would then refuse, but told a person makes it, and offered one."""
    question = await resolve("return_item", "A1002")
    assert question.responses[-2:] == ["utter_made_by_people", "utter_offer_person"]
    outcome = await answer(question, "A1002")
    assert escalation(outcome)["rule"] == "made_by_people"
    assert woo_actions.calls("PUT", ORDER) == []
    assert shared_store().writes.for_order("A1002") == []


async def test_a_refund_that_needs_a_return_on_woocommerce_says_why_a_person_makes_it(
        woo_actions: WooCommerceStandIn) -> None:
    """Before a refund the item goes back, and a person arranges that on WooCommerce: the
    customer is told both, and asked no yes."""
    outcome = await resolve("refund_request", "A1002")
    assert outcome.responses == ["utter_refund_needs_return", "utter_made_by_people",
                                 "utter_offer_person"]
    assert woo_actions.calls("POST", ORDER + "/refunds") == []
