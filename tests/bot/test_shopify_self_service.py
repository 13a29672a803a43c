"""Self-service on a Shopify shop, end to end: the customer's words go in through the
gateway's REST channel to the real Rasa and the action server with STORE_BACKEND=shopify,
which talks to the Shopify stand-in (tests/store_api/shopify.py) over HTTP."""
from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator, Iterator, List

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from actions.store.shopify import ShopifyStore
from actions.store.types import StoreConfigError
from bot.app import ROUTER, create_app
from bot.handoff.snapshot import order_snapshot
from bot.policies import load_channel_policy
from bot.services import build_services
from bot.settings import load_settings
from connectors.rest import RestChannel
from tests.bot.test_identity import REST_TOKEN, handoff_of
from tests.bot.test_self_service import (
    ADMIN_TOKEN,
    Customer,
    DemoOrders,
    address_declined_then_changed,
    demo_orders,
    handoff_rule,
    refunded_as_the_only_remedy,
)
from tests.conftest import RasaStack, shopify_env, start_rasa_stack
from tests.store_api.shopify import Received, ShopifyStandIn


@dataclasses.dataclass
class ShopifyStack:
    stack: RasaStack
    shop: ShopifyStandIn
    orders: DemoOrders  # the generated orders tests may take, one each


@pytest.fixture(scope="module")
def shopify_stack(trained_model: Path, tmp_path_factory: pytest.TempPathFactory,
                  now: datetime) -> Iterator[ShopifyStack]:
    var = tmp_path_factory.mktemp("shopify_self_service")
    shop = ShopifyStandIn.from_demo(now, var, cancel_job_polls=2)
    shop.start()
    try:
        with start_rasa_stack(trained_model, var, now, **shopify_env(shop)) as stack, \
                demo_orders(stack, now) as orders:
            yield ShopifyStack(stack, shop, orders)
    finally:
        shop.stop()


@pytest_asyncio.fixture
async def gateway(shopify_stack: ShopifyStack) -> AsyncIterator[TestClient]:
    stack = shopify_stack.stack
    settings = dataclasses.replace(load_settings(), rasa_url=stack.rasa_url,
                                   database_url=stack.database_url, var_dir=stack.var_dir,
                                   redis_url="", agent_api_token=ADMIN_TOKEN,
                                   action_server_url=stack.action_server_url)
    client = TestClient(TestServer(create_app(settings, {"rest": RestChannel(REST_TOKEN)},
                                              load_channel_policy())))
    await client.start_server()
    yield client
    await client.close()


async def test_order_status_comes_from_shopify(gateway: TestClient,
                                               shopify_stack: ShopifyStack) -> None:
    ann = Customer(gateway, "shopify-status")
    assert "order number" in await ann.says("where is my order?")
    await ann.says("#1001")  # Shopify's name for the order: the bot's A1001
    status = await ann.says("buyer1@example.com")
    assert "on its way with UPS" in status and "1Z999AA10123456784" in status
    assert shopify_stack.shop.calls("Orders")  # asked Shopify, not the demo store


async def test_a_cancel_on_shopify_happens_once_on_a_yes(gateway: TestClient,
                                                         shopify_stack: ShopifyStack) -> None:
    shop = shopify_stack.shop
    ben = Customer(gateway, "shopify-cancel")
    await ben.says("please cancel order A1004")
    question = await ben.says("buyer3@example.com")
    assert "149.00" in question and "Cancel it?" in question
    assert shop.calls("OrderCancel") == [] and shop.order_named("1004")["cancelledAt"] is None

    done = await ben.says("yes")
    order = shop.order_named("1004")
    assert order["cancelledAt"] is not None  # the job ran, and was waited for
    assert len(shop.calls("OrderCancel")) == 1 and len(shop.calls("Job")) == 2
    (refund,) = order["refunds"]
    assert "is cancelled" in done and f"RF-{refund['id'].rsplit('/', 1)[1]}" in done

    again = await ben.says("yes")
    assert "cancelled" not in again and len(shop.calls("OrderCancel")) == 1


async def test_the_agents_order_snapshot_comes_from_shopify(
        shopify_shop: ShopifyStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**shopify_env(shopify_shop), "VAR_DIR": str(tmp_path),
                        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
                        "REDIS_URL": ""}.items():
        monkeypatch.setenv(name, value)
    services = build_services(channels={})
    try:
        assert isinstance(services.desk.shop, ShopifyStore)
        snapshot = await services.records.read(order_snapshot, services.desk.shop, "A1001")
        assert snapshot is not None and snapshot["status"] == "shipped"
        assert snapshot["shipment"]["tracking_number"] == "1Z999AA10123456784"
        assert shopify_shop.calls("Orders")
    finally:
        await services.close()


def test_the_gateway_does_not_start_without_the_shops_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"STORE_BACKEND": "shopify", "SHOPIFY_SHOP": "x.myshopify.com",
                        "VAR_DIR": str(tmp_path), "REDIS_URL": "",
                        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SHOPIFY_ACCESS_TOKEN", raising=False)
    with pytest.raises(StoreConfigError, match="SHOPIFY_ACCESS_TOKEN"):
        build_services(channels={})


async def test_when_shopify_refuses_the_credentials_a_person_takes_over(
        shopify_stack: ShopifyStack) -> None:
    """The shop rotated the app's token: the turn that reads the order fails whole, the
    gateway asks again for bot_retry_seconds, then tells the customer and hands over."""
    stack, shop = shopify_stack.stack, shopify_stack.shop
    policy = load_channel_policy().copy(update={"bot_retry_seconds": 1.0})
    settings = dataclasses.replace(load_settings(), rasa_url=stack.rasa_url,
                                   database_url=stack.database_url, var_dir=stack.var_dir,
                                   redis_url="", agent_api_token=ADMIN_TOKEN,
                                   action_server_url=stack.action_server_url)
    client = TestClient(TestServer(create_app(settings, {"rest": RestChannel(REST_TOKEN)},
                                              policy)))
    await client.start_server()
    kept, shop.access_token = shop.access_token, "shpat_rotated_meanwhile"
    try:
        cat = Customer(client, "shopify-revoked")
        # an order no other test here reads: one read in the last minute is kept by the
        # action server's order cache (order_cache.ttl_seconds), and told from it
        await cat.says("where is my order A1002?")
        await cat.says("buyer1@example.com")
        records = client.app[ROUTER].records
        said_to_customer = [t.text for t in records.transcript(f"rest:{cat.sender}")
                            if t.role != "customer"]
        assert said_to_customer[-2] == policy.texts.bot_unavailable  # then the queue place
        handoff = await handoff_of(client, f"rest:{cat.sender}")
        assert handoff is not None and handoff["reason_code"] == "bot_unavailable"
    finally:
        shop.access_token = kept
        await client.close()


# --- the flows that write, end to end (tests/bot/test_self_service.py on the SQL store) ----
# Each test takes orders no other test here reads: the action server keeps an order it
# read for order_cache.ttl_seconds.


def writes_to(shop: ShopifyStandIn, order_id: str, operation: str = "") -> List[Received]:
    """The mutations (of `operation`, or any) Shopify received that name the order."""
    gid = shop.order_named(order_id)["id"]
    return [r for r in shop.received if re.match(r"\s*mutation\b", r.document)
            and (not operation or r.operation == operation)
            and json.dumps(gid) in json.dumps(r.variables)]


def refund_reference(refund: dict) -> str:
    return f"RF-{refund['id'].rsplit('/', 1)[1]}"


def received_back(shop: ShopifyStandIn, order_id: str) -> None:
    """The shop approved the order's return and received the parcel: Shopify closes it."""
    order = shop.order_named(order_id)
    order["returns"].append({
        "id": "gid://shopify/Return/777001", "name": f"{order['name']}-R1", "status": "CLOSED",
        "lineItems": [{"fulfillmentLineItemId": item["id"], "quantity": item["quantity"]}
                      for f in order["fulfillments"] for item in f["fulfillmentLineItems"]]})


async def test_a_new_address_on_shopify_is_read_back_and_written_only_after_a_yes(
        gateway: TestClient, shopify_stack: ShopifyStack) -> None:
    shop, order = shopify_stack.shop, next(shopify_stack.orders.paid)
    cat = Customer(gateway, "shopify-address")
    await address_declined_then_changed(cat, order, lambda: (
        writes_to(shop, order.order_id) == []
        and shop.order_named(order.order_id)["shippingAddress"]["address1"]
        == order.shipping_address.line1))
    address = shop.order_named(order.order_id)["shippingAddress"]
    assert (address["name"], address["address1"], address["city"], address["zip"],
            address["countryCodeV2"]) == (order.shipping_address.name, "12 Oak Street",
                                          "Springfield, IL", "62704", "US")
    await cat.says("yes")
    assert len(writes_to(shop, order.order_id)) == 1
    assert len(writes_to(shop, order.order_id, "OrderUpdate")) == 1


async def test_a_return_on_shopify_is_requested_on_a_yes_and_told_as_awaiting_approval(
        gateway: TestClient, shopify_stack: ShopifyStack) -> None:
    shop, order = shopify_stack.shop, next(shopify_stack.orders.returnable)
    bea = Customer(gateway, "shopify-return")
    await bea.says(f"I want to return order {order.order_id}")
    question = await bea.says(order.customer.email)
    assert "Create the return?" in question and f"{order.total:.2f}" in question
    assert [title for title, _ in bea.buttons()] == ["Yes, create it", "No"]
    await bea.presses("No")
    assert writes_to(shop, order.order_id) == []

    await bea.says(f"I want to return order {order.order_id}")
    created = await bea.says("yes")
    [made] = shop.order_named(order.order_id)["returns"]
    assert made["status"] == "REQUESTED"  # the shop approves it, and sends the label
    assert f"RMA-{made['id'].rsplit('/', 1)[1]}" in created
    assert "is requested" in created and "once it's approved" in created
    assert "http" not in created  # no label the bot does not have
    await bea.says("yes")
    assert [r.operation for r in writes_to(shop, order.order_id)] == ["ReturnRequest"]

    # a refund before the parcel is on its way back: a person looks, nothing is refunded
    await bea.says(f"I want a refund for order {order.order_id}")
    assert await handoff_rule(gateway, bea) == "stop_the_line_refund_before_return"
    assert [r.operation for r in writes_to(shop, order.order_id)] == ["ReturnRequest"]


async def test_a_refund_on_shopify_is_confirmed_with_its_amount_and_made_once(
        gateway: TestClient, shopify_stack: ShopifyStack) -> None:
    shop, order = shopify_stack.shop, next(shopify_stack.orders.returnable)
    received_back(shop, order.order_id)  # before the bot first reads the order
    dan = Customer(gateway, "shopify-refund")
    await dan.says(f"I want a refund for order {order.order_id}")
    question = await dan.says(order.customer.email)
    assert f"{order.total:.2f}" in question and order.payment_method in question
    assert "Go ahead?" in question
    assert [title for title, _ in dan.buttons()] == ["Yes, refund it", "No"]
    assert writes_to(shop, order.order_id) == []

    done = await dan.says("yes")
    [refund] = shop.order_named(order.order_id)["refunds"]
    assert refund["totalRefundedSet"]["shopMoney"]["amount"] == f"{order.total:.2f}"
    assert refund_reference(refund) in done and "pending" in done
    again = await dan.says("yes")
    assert refund_reference(refund) not in again
    told = await dan.says(f"I want a refund for order {order.order_id}")
    assert "pending" in told and f"{order.total:.2f}" in told and "Go ahead?" not in told
    assert len(shop.order_named(order.order_id)["refunds"]) == 1
    assert [r.operation for r in writes_to(shop, order.order_id)] == ["RefundCreate"]


async def test_a_damaged_item_on_shopify_gets_the_one_remedy_shopify_takes_once(
        gateway: TestClient, shopify_stack: ShopifyStack) -> None:
    shop = shopify_stack.shop
    fay = Customer(gateway, "shopify-damaged")
    # a replacement and store credit are the merchant's to make on Shopify
    done = await refunded_as_the_only_remedy(fay, "order A1012 arrived damaged",
                                             "buyer7@example.com", "39.00")
    [refund] = shop.order_named("A1012")["refunds"]
    assert refund["totalRefundedSet"]["shopMoney"]["amount"] == "39.00"
    assert refund_reference(refund) in done

    await fay.says("order A1012 arrived damaged")
    again = await fay.says("no photo")
    assert "already put this right" in again and refund_reference(refund) in again
    assert [r.operation for r in writes_to(shop, "A1012")] == ["RefundCreate"]


async def test_a_stuck_or_lost_parcel_on_shopify_is_left_to_people_and_nothing_claimed(
        gateway: TestClient, shopify_stack: ShopifyStack) -> None:
    """Shopify has no carrier traces or claims: a person opens them; the bot never says
    it asked the carrier."""
    shop = shopify_stack.shop
    eve = Customer(gateway, "shopify-stuck")
    await eve.says("where is my order A1003?")
    late = await eve.says("buyer2@example.com")
    assert "running late" in late and "771234509876" in late
    assert "Shall I ask them?" not in late and "I've asked" not in late
    assert "Asking the carrier to trace a parcel is something our team does by hand" in late
    assert [title for title, _ in eve.buttons()] == ["Yes, a person", "No, thanks"]
    await eve.says("yes")
    assert await handoff_rule(gateway, eve) == "made_by_people"

    gus = Customer(gateway, "shopify-lost")
    await gus.says("where is my order A1010?")
    lost = await gus.says("buyer2@example.com")
    assert "declared the parcel for order A1010 lost" in lost
    assert "claim" not in lost and "trace" not in lost
    # 199.00 is above the remedies the bot gives itself (remedy_auto_max)
    assert await handoff_rule(gateway, gus) == "remedy_above_threshold"
    assert writes_to(shop, "A1003") == [] and writes_to(shop, "A1010") == []
