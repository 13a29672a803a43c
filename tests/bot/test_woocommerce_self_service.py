"""Self-service on a WooCommerce shop, end to end: the customer's words go in through the
gateway's REST channel to the real Rasa and the action server with
STORE_BACKEND=woocommerce, which talks to the WooCommerce stand-in
(tests/store_api/woocommerce.py) over HTTP."""
from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator, Iterator, List, Tuple

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from actions.store.types import StoreConfigError
from actions.store.woocommerce import WooStore
from bot.app import ROUTER, create_app
from bot.handoff.snapshot import order_snapshot
from bot.policies import load_channel_policy
from bot.services import build_services
from bot.settings import Settings, load_settings
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
from tests.conftest import RasaStack, start_rasa_stack, woocommerce_env
from tests.store_api.woocommerce import WooCommerceStandIn

ORDER = r"/wp-json/wc/v3/orders/\d+"


@dataclasses.dataclass
class WooStack:
    stack: RasaStack
    shop: WooCommerceStandIn
    orders: DemoOrders  # the generated orders tests may take, one each


@pytest.fixture(scope="module")
def woo_stack(trained_model: Path, tmp_path_factory: pytest.TempPathFactory,
              now: datetime) -> Iterator[WooStack]:
    var = tmp_path_factory.mktemp("woocommerce_self_service")
    shop = WooCommerceStandIn.from_demo(now, var)
    shop.start()
    try:
        with start_rasa_stack(trained_model, var, now, **woocommerce_env(shop)) as stack, \
                demo_orders(stack, now) as orders:
            yield WooStack(stack, shop, orders)
    finally:
        shop.stop()


def gateway_settings(stack: RasaStack) -> Settings:
    return dataclasses.replace(load_settings(), rasa_url=stack.rasa_url,
                               database_url=stack.database_url, var_dir=stack.var_dir,
                               redis_url="", agent_api_token=ADMIN_TOKEN,
                               action_server_url=stack.action_server_url)


@pytest_asyncio.fixture
async def gateway(woo_stack: WooStack) -> AsyncIterator[TestClient]:
    client = TestClient(TestServer(create_app(gateway_settings(woo_stack.stack),
                                              {"rest": RestChannel(REST_TOKEN)},
                                              load_channel_policy())))
    await client.start_server()
    yield client
    await client.close()


async def test_order_status_comes_from_woocommerce(gateway: TestClient,
                                                   woo_stack: WooStack) -> None:
    ann = Customer(gateway, "woocommerce-status")
    assert "order number" in await ann.says("where is my order?")
    await ann.says("#1001")  # WooCommerce's order 1001: the bot's A1001
    status = await ann.says("buyer1@example.com")
    assert "on its way with UPS" in status and "1Z999AA10123456784" in status
    assert woo_stack.shop.calls("GET", ORDER)  # asked WooCommerce, not the demo store


async def test_a_cancel_on_woocommerce_happens_once_on_a_yes(gateway: TestClient,
                                                             woo_stack: WooStack) -> None:
    shop = woo_stack.shop
    ben = Customer(gateway, "woocommerce-cancel")
    await ben.says("please cancel order A1004")
    question = await ben.says("buyer3@example.com")
    assert "149.00" in question and "Cancel it?" in question
    assert shop.calls("PUT", ORDER) == [] and shop.order("1004")["status"] == "processing"

    done = await ben.says("yes")
    (refund,) = shop.refunds[1004]
    assert shop.order("1004")["status"] == "refunded"  # cancelled, then refunded in full
    assert "is cancelled" in done and f"RF-{refund['id']}" in done
    assert refund["refunded_payment"] is True  # the policy's default: the gateway pays back
    notes = [n["note"] for n in shop.notes[1004] if n["author"] == "API"]
    assert notes[0].startswith("Cancelled by the support bot: customer request [")

    again = await ben.says("yes")
    assert "cancelled" not in again and len(shop.calls("PUT", ORDER)) == 1


async def test_the_agents_order_snapshot_comes_from_woocommerce(
        woocommerce_shop: WooCommerceStandIn, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**woocommerce_env(woocommerce_shop), "VAR_DIR": str(tmp_path),
                        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
                        "REDIS_URL": ""}.items():
        monkeypatch.setenv(name, value)
    services = build_services(channels={})
    try:
        assert isinstance(services.desk.shop, WooStore)
        snapshot = await services.records.read(order_snapshot, services.desk.shop, "A1001")
        assert snapshot is not None and snapshot["status"] == "shipped"
        assert snapshot["shipment"]["tracking_number"] == "1Z999AA10123456784"
        assert woocommerce_shop.calls("GET", ORDER)
    finally:
        await services.close()


def test_the_gateway_does_not_start_without_the_shops_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"STORE_BACKEND": "woocommerce",
                        "WOOCOMMERCE_URL": "https://shop.example.com",
                        "WOOCOMMERCE_KEY": "ck_x", "VAR_DIR": str(tmp_path), "REDIS_URL": "",
                        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WOOCOMMERCE_SECRET", raising=False)
    with pytest.raises(StoreConfigError, match="WOOCOMMERCE_SECRET"):
        build_services(channels={})


async def test_when_woocommerce_refuses_the_key_a_person_takes_over(
        woo_stack: WooStack) -> None:
    """The shop revoked the REST API key: the turn that reads the order fails whole, the
    gateway asks again for bot_retry_seconds, then tells the customer and hands over."""
    stack, shop = woo_stack.stack, woo_stack.shop
    policy = load_channel_policy().copy(update={"bot_retry_seconds": 1.0})
    client = TestClient(TestServer(create_app(gateway_settings(stack),
                                              {"rest": RestChannel(REST_TOKEN)}, policy)))
    await client.start_server()
    kept, shop.secret = shop.secret, "cs_rotated_meanwhile"
    try:
        cat = Customer(client, "woocommerce-revoked")
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
        shop.secret = kept
        await client.close()


# --- the flows that write, end to end (tests/bot/test_self_service.py on the SQL store) ----
# Each test takes orders no other test here reads: the action server keeps an order it
# read for order_cache.ttl_seconds.


def writes_to(shop: WooCommerceStandIn, order_id: str) -> List[Tuple[str, str]]:
    """The writes (method, what of the order) WooCommerce received on the order."""
    path = f"/wp-json/wc/v3/orders/{order_id.lstrip('A')}"
    return [(r.method, r.path[len(path):] or "/") for r in shop.received
            if r.method != "GET" and re.fullmatch(re.escape(path) + r"(/.*)?", r.path)]


async def test_a_new_address_on_woocommerce_is_read_back_and_written_only_after_a_yes(
        gateway: TestClient, woo_stack: WooStack) -> None:
    shop, order = woo_stack.shop, next(woo_stack.orders.paid)
    cat = Customer(gateway, "woocommerce-address")
    await address_declined_then_changed(cat, order, lambda: (
        writes_to(shop, order.order_id) == []
        and shop.order(order.order_id)["shipping"]["address_1"]
        == order.shipping_address.line1))
    shipping = shop.order(order.order_id)["shipping"]
    assert (shipping["address_1"], shipping["city"], shipping["state"], shipping["postcode"],
            shipping["country"]) == ("12 Oak Street", "Springfield", "IL", "62704", "US")
    assert f"{shipping['first_name']} {shipping['last_name']}" == order.shipping_address.name
    await cat.says("yes")
    assert writes_to(shop, order.order_id) == [("PUT", "/"), ("POST", "/notes")]


async def test_a_return_on_woocommerce_is_offered_to_a_person_without_asking_for_a_yes(
        gateway: TestClient, woo_stack: WooStack) -> None:
    """WooCommerce has no returns of its own: a person arranges it (made_by_people)."""
    shop, order = woo_stack.shop, next(woo_stack.orders.returnable)
    bea = Customer(gateway, "woocommerce-return")
    await bea.says(f"I want to return order {order.order_id}")
    told = await bea.says(order.customer.email)
    assert "Setting up a return is something our team does by hand" in told
    assert "nothing has been changed" in told and "Create the return?" not in told
    assert "RMA-" not in told
    assert [title for title, _ in bea.buttons()] == ["Yes, a person", "No, thanks"]
    await bea.says("yes")
    assert await handoff_rule(gateway, bea) == "made_by_people"
    assert writes_to(shop, order.order_id) == []


async def test_a_refund_on_woocommerce_needs_the_item_back_first_and_a_person_arranges_it(
        gateway: TestClient, woo_stack: WooStack) -> None:
    shop, order = woo_stack.shop, next(woo_stack.orders.returnable)
    cal = Customer(gateway, "woocommerce-refund-return")
    await cal.says(f"I want a refund for order {order.order_id}")
    told = await cal.says(order.customer.email)
    assert "once the item is on its way back" in told
    assert "Setting up a return is something our team does by hand" in told
    assert "Go ahead?" not in told and f"{order.total:.2f}" not in told
    await cal.says("no")
    assert await handoff_rule(gateway, cal) is None
    assert writes_to(shop, order.order_id) == [] and shop.refunds[int(order.order_id[1:])] == []


async def test_a_refund_on_woocommerce_is_confirmed_with_its_amount_and_made_once(
        gateway: TestClient, woo_stack: WooStack) -> None:
    """A wrong item (A1017, 24.00): the refund is the remedy WooCommerce takes from the
    bot, through the payment gateway as the policy says (refunds.through_payment_gateway)."""
    shop = woo_stack.shop
    dan = Customer(gateway, "woocommerce-refund")
    done = await refunded_as_the_only_remedy(dan, "I got the wrong item in order A1017",
                                             "buyer9@example.com", "24.00")
    [refund] = shop.refunds[1017]
    assert (refund["amount"], refund["refunded_payment"]) == ("24.00", True)
    [posted] = [r for r in shop.calls("POST", ORDER + "/refunds")
                if r.path.endswith("/1017/refunds")]
    assert posted.body["api_refund"] is True and posted.body["amount"] == "24.00"
    assert f"RF-{refund['id']}" in done
    # the payment gateway paid it back at once: told as refunded, not as pending
    assert "we refunded 24.00" in done and "visa" in done and "pending" not in done
    again = await dan.says("yes")
    assert f"RF-{refund['id']}" not in again and len(shop.refunds[1017]) == 1
    assert writes_to(shop, "A1017") == [("POST", "/refunds"), ("POST", "/notes")]


async def test_a_damaged_item_on_woocommerce_gets_the_one_remedy_it_takes_once(
        gateway: TestClient, woo_stack: WooStack) -> None:
    shop = woo_stack.shop
    fay = Customer(gateway, "woocommerce-damaged")
    # a replacement and store credit are the shop's to make on WooCommerce
    done = await refunded_as_the_only_remedy(fay, "order A1012 arrived damaged",
                                             "buyer7@example.com", "39.00")
    [refund] = shop.refunds[1012]
    assert refund["amount"] == "39.00" and f"RF-{refund['id']}" in done
    # refunded in full, WooCommerce marks the order refunded (returned, to the bot, which
    # then asks for no photo): it was put right, and delivered, all the same
    assert shop.order("1012")["status"] == "refunded"

    again = await fay.says("order A1012 arrived damaged")
    assert "already put this right" in again and f"RF-{refund['id']}" in again
    assert "hasn't been delivered" not in again
    assert [write for write in writes_to(shop, "A1012") if write[1] == "/refunds"] == [
        ("POST", "/refunds")]


async def test_a_late_parcel_on_woocommerce_is_told_and_nothing_is_traced(
        gateway: TestClient, woo_stack: WooStack) -> None:
    """WooCommerce keeps no carrier scans (nor a lost parcel: A1010 is told alike) and
    has no carrier traces or claims: the bot tells what it knows, and never says it asked
    the carrier."""
    shop = woo_stack.shop
    eve = Customer(gateway, "woocommerce-late")
    await eve.says("where is my order A1003?")
    late = await eve.says("buyer2@example.com")
    assert "running late" in late and "771234509876" in late
    assert "Shall I ask them?" not in late and "I've asked" not in late
    assert "reference" not in late
    await eve.says("no")
    assert writes_to(shop, "A1003") == []
