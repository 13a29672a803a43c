"""The Shopify backend against the stand-in of Shopify's Admin GraphQL API
(tests/store_api/shopify.py): credentials, throttling, refused mutations, unfinished
jobs, the API version, and the bot's flows through the guarded write path."""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from actions.actions import ActionChooseRemedy, ActionResolveRequest
from actions.conversation import shared_store
from actions.store.backend import open_systems
from actions.store.shopify import ShopifyStore
from actions.store.shopify import systems as shopify_systems
from actions.store.shopify.client import ShopifyClient, ShopifyConfig
from actions.store.types import (
    Address,
    Holdup,
    OrderStatus,
    PlatformPolicy,
    ReturnStatus,
    StoreError,
    StoreUnavailable,
)
from tests.conftest import shopify_env
from tests.store_api.shopify import ShopifyStandIn

from .conftest import make_tracker, run_action
from .test_actions import answer, escalation, proven, resolve

NEW_ADDRESS = Address(name="Jordan Lee", line1="9 Harbor Way", line2="Apt 3",
                      city="Seattle, WA", postal_code="98121", country="US")


def open_shop(shop: ShopifyStandIn, tmp_path: Path, **env: str) -> ShopifyStore:
    systems = open_systems({**shopify_env(shop, **env),
                            "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}"})
    assert isinstance(systems, ShopifyStore)
    return systems


@pytest.fixture
def shop_systems(shopify_shop: ShopifyStandIn, tmp_path: Path) -> Iterator[ShopifyStore]:
    systems = open_shop(shopify_shop, tmp_path)
    yield systems
    systems.close()


# --- credentials and versions -------------------------------------------------------------

def test_a_wrong_token_is_store_unavailable_with_a_clear_log_line(
        shopify_shop: ShopifyStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    systems = open_shop(shopify_shop, tmp_path, SHOPIFY_ACCESS_TOKEN="shpat_revoked")
    with (caplog.at_level(logging.ERROR, "actions.store.shopify"),
          pytest.raises(StoreUnavailable, match="refused the credentials")):
        systems.orders.get_order("A1001")
    assert "Shopify refused the app's credentials (HTTP 401)" in caplog.text
    with pytest.raises(StoreUnavailable):  # a write as much as a read
        systems.orders.cancel_order("A1004", "changed my mind")
    assert shopify_shop.calls("OrderCancel") == []
    systems.close()


def test_client_credentials_are_granted_and_refreshed_before_expiry(now: datetime,
                                                                    tmp_path: Path) -> None:
    shop = ShopifyStandIn.from_demo(now, tmp_path, access_token="", client_id="app-id",
                                    client_secret="app-secret", token_lifetime=3600)
    shop.start()
    clock = [1000.0]
    client = ShopifyClient(ShopifyConfig.from_env(shopify_env(
        shop, SHOPIFY_ACCESS_TOKEN="", SHOPIFY_CLIENT_ID="app-id",
        SHOPIFY_CLIENT_SECRET="app-secret")), clock=lambda: clock[0])
    orders = shopify_systems.ShopifyOrders(client, PlatformPolicy())
    try:
        assert orders.get_order("A1001") is not None
        assert orders.get_order("A1002") is not None
        assert shop.grants == 1  # one token serves until near its expiry
        clock[0] += 3600 - 299  # within the refresh margin
        assert orders.get_order("A1001") is not None
        assert shop.grants == 2
        shop.granted.clear()  # the shop revoked the token: granted again, once
        assert orders.get_order("A1001") is not None
        assert shop.grants == 3
    finally:
        client.close()
        shop.stop()


def test_wrong_client_credentials_are_store_unavailable(now: datetime, tmp_path: Path) -> None:
    shop = ShopifyStandIn.from_demo(now, tmp_path, access_token="", client_id="app-id",
                                    client_secret="app-secret")
    shop.start()
    systems = open_shop(shop, tmp_path, SHOPIFY_ACCESS_TOKEN="", SHOPIFY_CLIENT_ID="app-id",
                        SHOPIFY_CLIENT_SECRET="wrong")
    try:
        with pytest.raises(StoreUnavailable, match="client credentials"):
            systems.orders.get_order("A1001")
    finally:
        systems.close()
        shop.stop()


def test_a_version_the_shop_no_longer_serves_is_warned_about_once(
        shopify_shop: ShopifyStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    systems = open_shop(shopify_shop, tmp_path, SHOPIFY_API_VERSION="2024-01")
    with caplog.at_level(logging.WARNING, "actions.store.shopify"):
        assert systems.orders.get_order("A1001") is not None
        assert systems.orders.get_order("A1002") is not None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["Shopify served API version 2025-07, not the pinned 2024-01: the "
                        "pinned version is no longer supported; test and pin a newer one "
                        "(SHOPIFY_API_VERSION)"]
    assert {r.version for r in shopify_shop.received} == {"2025-07"}
    systems.close()


def test_the_pinned_version_is_asked_and_no_warning_given(
        shop_systems: ShopifyStore, shopify_shop: ShopifyStandIn,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "actions.store.shopify"):
        assert shop_systems.orders.get_order("A1001") is not None
    assert not caplog.records
    assert {r.version for r in shopify_shop.received} == {"2025-10"}


def test_a_document_the_schema_rejects_is_store_unavailable(shop_systems: ShopifyStore) -> None:
    """The stand-in validates every document, as Shopify does (a 200 with errors)."""
    with pytest.raises(StoreUnavailable, match="Cannot query field 'trackingNumber'"):
        shop_systems.client.execute('query { order(id: "gid://shopify/Order/1001") '
                                    '{ trackingNumber } }')


# --- throttling -----------------------------------------------------------------------------

def test_requests_are_paced_from_the_throttle_status(now: datetime, tmp_path: Path) -> None:
    shop = ShopifyStandIn.from_demo(now, tmp_path, bucket_size=300, restore_rate=300)
    shop.start()
    waits: List[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    client = ShopifyClient(ShopifyConfig.from_env(shopify_env(shop)), sleep=sleep)
    orders = shopify_systems.ShopifyOrders(client, PlatformPolicy())
    try:
        for order_id in ("A1001", "A1002", "A1003", "A1004", "A1005"):
            assert orders.get_order(order_id) is not None
        assert not any(r.throttled for r in shop.received)  # it waited, never was refused
        assert waits and all(0 < w < 1 for w in waits)
    finally:
        client.close()
        shop.stop()


def test_throttled_requests_are_retried_after_the_bucket_refills(now: datetime,
                                                                 tmp_path: Path) -> None:
    shop = ShopifyStandIn.from_demo(now, tmp_path, bucket_size=1000, restore_rate=200)
    shop.start()
    systems = open_shop(shop, tmp_path)
    shop.drain(to=20)
    try:
        order = systems.orders.get_order("A1001")
        assert order is not None and order.order_id == "A1001"
        assert [r.throttled for r in shop.received] == [True, False]
    finally:
        systems.close()
        shop.stop()


def test_throttled_for_too_long_is_store_unavailable(now: datetime, tmp_path: Path) -> None:
    shop = ShopifyStandIn.from_demo(now, tmp_path, bucket_size=1000, restore_rate=1)
    shop.start()
    systems = open_shop(shop, tmp_path)
    shop.drain(to=0)
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable, match="throttl"):
            systems.orders.get_order("A1001")
        assert time.monotonic() - started < 5  # it knew it could not wait that long
    finally:
        systems.close()
        shop.stop()


# --- writes ---------------------------------------------------------------------------------

def test_an_unfinished_cancel_job_is_waited_for(now: datetime, tmp_path: Path) -> None:
    shop = ShopifyStandIn.from_demo(now, tmp_path, cancel_job_polls=3)
    shop.start()
    systems = open_shop(shop, tmp_path)
    try:
        cancelled = systems.orders.cancel_order("A1004", "changed my mind")
        assert cancelled.status is OrderStatus.CANCELLED
        assert len(shop.calls("Job")) == 3
        refund = systems.returns.get_refund("A1004")
        assert refund is not None and refund.amount == Decimal("149.00")
    finally:
        systems.close()
        shop.stop()


def test_a_job_that_never_finishes_is_store_unavailable(now: datetime, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shopify_systems, "JOB_PATIENCE_SECONDS", 1.0)
    monkeypatch.setattr(shopify_systems, "JOB_POLL_SECONDS", 0.2)
    shop = ShopifyStandIn.from_demo(now, tmp_path, cancel_job_polls=1000)
    shop.start()
    systems = open_shop(shop, tmp_path)
    try:
        with pytest.raises(StoreUnavailable, match="not done"):
            systems.orders.cancel_order("A1004", "changed my mind")
        order = systems.orders.get_order("A1004")
        assert order is not None and order.status is OrderStatus.PAID  # not yet
    finally:
        systems.close()
        shop.stop()


def test_a_refused_cancel_is_store_error_with_shopifys_message(
        shop_systems: ShopifyStore, shopify_shop: ShopifyStandIn) -> None:
    # the warehouse ships the order between the bot's read and its cancellation
    shopify_shop.before_next_mutation = lambda: shopify_shop.fulfill("A1004")
    with pytest.raises(StoreError, match="^Cannot cancel an order that has been fulfilled$"):
        shop_systems.orders.cancel_order("A1004", "changed my mind")
    order = shop_systems.orders.get_order("A1004")
    assert order is not None and order.status is OrderStatus.SHIPPED


def test_a_refused_refund_is_store_error_with_shopifys_message(
        shop_systems: ShopifyStore, shopify_shop: ShopifyStandIn) -> None:
    def refunded_meanwhile() -> None:  # staff refunded most of it in Shopify's admin
        order = shopify_shop.order_named("A1006")
        order["refunds"].append(shopify_shop._refund(Decimal("1200.00"),
                                                     datetime.now(timezone.utc), "", False))

    shopify_shop.before_next_mutation = refunded_meanwhile
    with pytest.raises(StoreError, match=r"greater than net payment received \$50.00"):
        shop_systems.returns.create_refund("A1006", Decimal("100.00"), "damaged")


def test_refunds_never_exceed_what_shopify_says_is_refundable(
        shop_systems: ShopifyStore) -> None:
    returns = shop_systems.returns
    first = returns.create_refund("A1011", Decimal("900.00"), "partial")
    assert (first.amount, first.method) == (Decimal("900.00"), "original_payment")
    with pytest.raises(StoreError, match="at most 80.00"):
        returns.create_refund("A1011", Decimal("80.01"), "too much")
    returns.create_refund("A1011", Decimal("80.00"), "the rest")
    assert [r.amount for r in returns.refunds("A1011")] == [Decimal("80.00"),
                                                            Decimal("900.00")]
    with pytest.raises(StoreError, match="store_credit"):
        returns.create_refund("A1006", Decimal("5.00"), "x", method="store_credit")


def test_a_return_is_requested_from_the_returnable_fulfilments(
        shop_systems: ShopifyStore, shopify_shop: ShopifyStandIn) -> None:
    made = shop_systems.returns.create_return("#a1002", "too small")
    assert made.status is ReturnStatus.REQUESTED and made.rma_id.startswith("RMA-")
    assert (made.order_id, made.label_url) == ("A1002", "")  # the shop sends the label
    assert shop_systems.returns.get_return("A1002") == made
    (asked,) = shopify_shop.calls("ReturnRequest")
    (item,) = asked.variables["input"]["returnLineItems"]
    assert (item["quantity"], item["customerNote"]) == (1, "too small")
    with pytest.raises(StoreError, match="already has a return"):
        shop_systems.returns.create_return("A1002", "again")
    for not_delivered in ("A1001", "A1004", "A9999"):
        with pytest.raises(StoreError):
            shop_systems.returns.create_return(not_delivered, "unwanted")


def test_a_return_shopify_refuses_is_store_error_with_its_message(
        shop_systems: ShopifyStore, shopify_shop: ShopifyStandIn) -> None:
    def returned_meanwhile() -> None:  # the shop's staff opened a return of the item
        order = shopify_shop.order_named("A1006")
        (fli,) = order["fulfillments"][0]["fulfillmentLineItems"]
        order["returns"].append({"id": "gid://shopify/Return/5", "name": "#1006-R1",
                                 "status": "OPEN", "lineItems": [
                                     {"fulfillmentLineItemId": fli["id"], "quantity": 1}]})

    shopify_shop.before_next_mutation = returned_meanwhile
    with pytest.raises(StoreError, match="^Quantity is not available for return$"):
        shop_systems.returns.create_return("A1006", "damaged")


def test_within_a_turn_every_write_reads_back_what_shopify_has_now(
        shop_systems: ShopifyStore) -> None:
    shop_systems.begin_turn()  # as the actions do: the turn's reads are kept
    assert shop_systems.orders.get_order("A1004") is not None
    assert shop_systems.returns.get_refund("A1006") is None
    moved = shop_systems.orders.change_shipping_address("A1004", NEW_ADDRESS)
    assert moved.shipping_address == NEW_ADDRESS
    cancelled = shop_systems.orders.cancel_order("A1004", "changed my mind")
    assert cancelled.status is OrderStatus.CANCELLED
    assert shop_systems.orders.get_order("A1004") == cancelled
    refund = shop_systems.returns.create_refund("A1006", Decimal("10.00"), "scratched")
    assert shop_systems.returns.get_refund("A1006") == refund


def test_an_address_update_shopify_silently_ignores_shows_on_reading_back(
        shop_systems: ShopifyStore, shopify_shop: ShopifyStandIn) -> None:
    shopify_shop.ignore_address_updates = True
    before = shop_systems.orders.get_order("A1004")
    after = shop_systems.orders.change_shipping_address("A1004", NEW_ADDRESS)
    assert before is not None and after.shipping_address == before.shipping_address
    assert after.shipping_address != NEW_ADDRESS
    assert len(shopify_shop.calls("OrderUpdate")) == 1


def test_an_order_shipped_in_two_parcels_has_two_shipments(
        shop_systems: ShopifyStore, shopify_shop: ShopifyStandIn) -> None:
    shopify_shop.fulfill("A1001")  # the rest of the order follows in a second parcel
    first, second = shop_systems.delivery.shipments("A1001")
    assert (first.carrier, first.tracking_number) == ("UPS", "1Z999AA10123456784")
    assert second.tracking_number == "1Z999AA10000000001" and second.events == ()
    assert first.shipped_at < second.shipped_at
    assert shop_systems.delivery.get_shipment("A1001") == second  # the latest
    order = shop_systems.orders.get_order("A1001")
    assert order is not None and order.status is OrderStatus.SHIPPED
    assert order.shipped_at == first.shipped_at


def test_orders_older_than_60_days_are_not_found_without_read_all_orders(
        now: datetime, tmp_path: Path) -> None:
    shop = ShopifyStandIn.from_demo(now, tmp_path, read_all_orders=False)
    old = min(shop.orders.values(), key=lambda o: o["createdAt"])
    assert datetime.fromisoformat(old["createdAt"][:-1] + "+00:00") < now - timedelta(days=60)
    shop.start()
    systems = open_shop(shop, tmp_path)
    try:
        assert systems.orders.get_order(f"A{old['name'][1:]}") is None
        assert systems.orders.get_order("A1001") is not None
    finally:
        systems.close()
        shop.stop()


# --- the bot's flows on Shopify, through the guarded write path ------------------------------

@pytest.fixture
def shopify_actions(shopify_shop: ShopifyStandIn, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[ShopifyStandIn]:
    """The actions open the Shopify backend (STORE_BACKEND=shopify) on the stand-in."""
    for name, value in shopify_env(shopify_shop).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'bot.db'}")
    shared_store.cache_clear()
    yield shopify_shop
    shared_store().close()
    shared_store.cache_clear()


async def test_a_damaged_item_on_shopify_is_offered_only_the_remedies_shopify_takes(
        shopify_actions: ShopifyStandIn) -> None:
    """Replacements and store credit are the merchant's to make on Shopify: the bot
    offers a refund alone, a replacement picked anyway is not asked about, and the
    refund is made though Shopify keeps no carrier claim to record with it."""
    outcome = await resolve("damaged_item", "A1002", photo="https://cdn.test/p.jpg")
    offer = outcome.facts("utter_offer_remedy")
    assert [b["title"] for b in offer["buttons"]] == ["A refund"]
    chosen = await answer(outcome, "A1002", ActionChooseRemedy(), intent="choose_remedy",
                          remedy="replacement")
    assert chosen.responses == ["utter_offer_remedy"]
    assert shared_store().writes.for_order("A1002") == []
    chosen = await answer(outcome, "A1002", ActionChooseRemedy(), intent="choose_remedy",
                          remedy="refund")
    assert chosen.responses == ["utter_confirm_refund"]
    refunded = await answer(chosen, "A1002")
    assert refunded.responses == ["utter_refund_created"]
    assert len(shopify_actions.calls("RefundCreate")) == 1


async def refund_damaged(order_id: str) -> Any:
    """A damaged-item claim on the order, put right by a refund on a yes."""
    offer = await resolve("damaged_item", order_id, photo="https://cdn.test/p.jpg")
    if offer.handoff is not None:
        return offer
    chosen = await answer(offer, order_id, ActionChooseRemedy(), intent="choose_remedy",
                          remedy="refund")
    return await answer(chosen, order_id)


async def test_remedies_the_bot_made_count_as_claims_where_shopify_keeps_none(
        shopify_actions: ShopifyStandIn) -> None:
    """Shopify keeps no carrier claims: the fraud rule counts the customer's earlier
    claims from the bot's own remedies on their orders (policy: 2 within 90 days)."""
    for order_id in ("A1012", "A1013"):  # buyer7's orders
        assert (await refund_damaged(order_id)).responses == ["utter_refund_created"]
    third = await refund_damaged("A1014")
    assert escalation(third)["rule"] == "fraud_repeat_claims"
    assert len(shopify_actions.calls("RefundCreate")) == 2


async def test_status_of_a_shipped_order_from_shopify(shopify_actions: ShopifyStandIn) -> None:
    outcome = await resolve("order_status", "A1001")
    assert outcome.responses[0] == "utter_status_in_transit"
    assert outcome.facts("utter_status_in_transit")["tracking_number"] == "1Z999AA10123456784"


def ship_without(shop: ShopifyStandIn, name: str, sku: str) -> None:
    """The order's parcel left without this line item: it follows later."""
    order = shop.order_named(name)
    (fulfillment,) = order["fulfillments"]
    fulfillment["fulfillmentLineItems"] = [
        fli for fli in fulfillment["fulfillmentLineItems"] if fli["lineItem"]["sku"] != sku]
    order["displayFulfillmentStatus"] = "PARTIALLY_FULFILLED"


async def test_an_order_shipped_in_part_is_told_with_what_is_still_to_ship(
        shopify_actions: ShopifyStandIn) -> None:
    ship_without(shopify_actions, "1001", "JEANS-SLIM-32")
    order = shared_store().orders.get_order("A1001")
    assert order is not None and order.status is OrderStatus.SHIPPED
    assert [(i.sku, i.quantity) for i in order.unshipped] == [("JEANS-SLIM-32", 1)]
    outcome = await resolve("order_status", "A1001")
    assert outcome.responses == ["utter_status_in_transit", "utter_status_rest_to_follow"]
    assert outcome.facts("utter_status_rest_to_follow")["items"] == "1 x Slim-fit jeans"
    cancel = await resolve("cancel_order", "A1001")  # what shipped cannot be called back
    assert cancel.responses == ["utter_cannot_cancel_shipped"]


async def test_a_whole_order_shipped_says_nothing_is_left(
        shopify_actions: ShopifyStandIn) -> None:
    order = shared_store().orders.get_order("A1001")
    assert order is not None and order.unshipped == ()
    outcome = await resolve("order_status", "A1001")
    assert outcome.responses == ["utter_status_in_transit"]


async def test_an_order_the_shop_holds_is_not_told_as_on_its_way_and_a_person_is_offered(
        shopify_actions: ShopifyStandIn) -> None:
    shopify_actions.order_named("1004")["displayFulfillmentStatus"] = "ON_HOLD"
    order = shared_store().orders.get_order("A1004")
    assert order is not None and order.holdup is Holdup.ON_HOLD
    outcome = await resolve("order_status", "A1004")
    assert outcome.responses == ["utter_status_on_hold", "utter_offer_person"]
    handed = await answer(outcome, "A1004")
    assert escalation(handed)["rule"] == "order_on_hold"


async def test_an_order_awaiting_payment_is_told_so_and_its_cancel_promises_no_refund(
        shopify_actions: ShopifyStandIn) -> None:
    shopify_actions.order_named("1004")["displayFinancialStatus"] = "PENDING"
    outcome = await resolve("order_status", "A1004")
    assert outcome.responses == ["utter_status_awaiting_payment"]
    question = await resolve("cancel_order", "A1004")
    assert question.responses == ["utter_confirm_cancel_unpaid"]


async def test_one_turn_reads_each_order_once(shopify_actions: ShopifyStandIn) -> None:
    """The status reads the order, its shipment and its refunds: one request to Shopify;
    the next turn finds it in the order cache (tests/actions/test_order_cache.py)."""
    for _ in (1, 2):
        outcome = await resolve("order_status", "A1001")
        assert outcome.responses[0] == "utter_status_in_transit"
        assert len(shopify_actions.calls("Orders")) == 1


async def test_a_write_reads_the_order_afresh_within_its_turn(
        shopify_actions: ShopifyStandIn) -> None:
    question = await resolve("cancel_order", "A1004")
    before = len(shopify_actions.calls("Orders"))
    done = await answer(question, "A1004")
    assert done.responses == ["utter_cancelled"]
    # the yes: the verified order, then afresh before the write, after it, and on reading
    # back its refund (the write forgets what the turn had read)
    assert len(shopify_actions.calls("Orders")) - before >= 3


async def test_cancel_on_shopify_asks_first_then_cancels_once(
        shopify_actions: ShopifyStandIn) -> None:
    question = await resolve("cancel_order", "A1004")
    assert question.responses == ["utter_confirm_cancel"]
    assert shopify_actions.calls("OrderCancel") == []  # asking changes nothing
    done = await answer(question, "A1004")
    assert done.responses == ["utter_cancelled"]
    refund = shared_store().returns.get_refund("A1004")
    assert refund is not None and done.facts("utter_cancelled")["refund_id"] == refund.refund_id
    retried = await answer(question, "A1004")  # the same answer again: nothing twice
    assert retried.responses == ["utter_cancelled"]
    assert len(shopify_actions.calls("OrderCancel")) == 1
    (write,) = shared_store().writes.for_order("A1004")
    assert (write.kind, write.status, write.before["status"]) == ("cancel", "done", "paid")


async def test_a_cancel_shopify_refuses_is_explained_from_the_fresh_order(
        shopify_actions: ShopifyStandIn) -> None:
    question = await resolve("cancel_order", "A1004")
    shopify_actions.before_next_mutation = lambda: shopify_actions.fulfill("A1004")
    refused = await answer(question, "A1004")
    assert refused.responses == ["utter_cannot_cancel_shipped"]
    (write,) = shared_store().writes.for_order("A1004")
    assert (write.status, write.error) == ("refused",
                                           "Cannot cancel an order that has been fulfilled")


async def test_an_address_change_that_does_not_show_goes_to_a_person(
        shopify_actions: ShopifyStandIn) -> None:
    shopify_actions.ignore_address_updates = True
    question = await resolve("change_address", "A1004",
                             new_address="9 Harbor Way, Apt 3, Seattle, WA 98121")
    assert question.responses[-1] == "utter_confirm_address"
    outcome = await answer(question, "A1004")
    assert "utter_write_unconfirmed" in outcome.responses
    assert escalation(outcome)["rule"] == "write_unconfirmed"
    (write,) = shared_store().writes.for_order("A1004")
    assert write.status == "unconfirmed"


@pytest.mark.parametrize(("state", "response"), [("REQUESTED", "utter_return_requested"),
                                                 ("OPEN", "utter_return_approved")])
async def test_a_shopify_return_is_told_as_it_stands(shopify_actions: ShopifyStandIn,
                                                     state: str, response: str) -> None:
    """A return asked for in Shopify has no label from the bot: the shop approves it and
    sends one; and a refund is not made before its parcel is on its way."""
    shopify_actions.order_named("A1002")["returns"] = [
        {"id": "gid://shopify/Return/77", "name": "#1002-R1", "status": state}]
    told = await resolve("return_status", "A1002")
    assert told.responses == [response]
    assert told.facts(response)["rma_id"] == "RMA-77"
    assert "label_url" not in told.texts[0] and "http" not in told.texts[0]
    refund = await resolve("refund_request", "A1002")
    assert escalation(refund)["rule"] == "stop_the_line_refund_before_return"
    assert shopify_actions.calls("RefundCreate") == []


async def test_a_return_on_shopify_is_requested_on_a_yes_and_told_honestly(
        shopify_actions: ShopifyStandIn) -> None:
    question = await resolve("return_item", "A1002")
    assert question.responses[-1] == "utter_confirm_return"
    assert shopify_actions.calls("ReturnRequest") == []
    done = await answer(question, "A1002")
    assert done.responses == ["utter_return_requested"]
    assert "http" not in done.texts[0] and "label once it's approved" in done.texts[0]
    (write,) = shared_store().writes.for_order("A1002")
    assert (write.kind, write.status) == ("return", "done")
    assert len(shopify_actions.calls("ReturnRequest")) == 1


async def test_a_slow_shop_does_not_hold_up_the_action_servers_loop(
        shopify_actions: ShopifyStandIn) -> None:
    shopify_actions.delay = 0.3
    ticks: List[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    ticking = asyncio.create_task(ticker())
    tracker = make_tracker({**proven("A1001"), "request": "order_status"})
    outcome = await run_action(ActionResolveRequest(), tracker)
    ticking.cancel()
    assert outcome.responses[0] == "utter_status_in_transit"
    assert len(ticks) >= 6  # the loop kept running while the shop took its time
    gaps: Dict[str, Any] = {"max": max(b - a for a, b in zip(ticks, ticks[1:], strict=False))}
    assert gaps["max"] < 0.25
