"""Self-service on a WooCommerce shop, end to end: the customer's words go in through the
gateway's REST channel to the real Rasa and the action server with
STORE_BACKEND=woocommerce, which talks to the WooCommerce stand-in
(tests/store_api/woocommerce.py) over HTTP."""
from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator, Iterator

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
from tests.bot.test_self_service import ADMIN_TOKEN, Customer
from tests.conftest import RasaStack, start_rasa_stack, woocommerce_env
from tests.store_api.woocommerce import WooCommerceStandIn

ORDER = r"/wp-json/wc/v3/orders/\d+"


@dataclasses.dataclass
class WooStack:
    stack: RasaStack
    shop: WooCommerceStandIn


@pytest.fixture(scope="module")
def woo_stack(trained_model: Path, tmp_path_factory: pytest.TempPathFactory,
              now: datetime) -> Iterator[WooStack]:
    var = tmp_path_factory.mktemp("woocommerce_self_service")
    shop = WooCommerceStandIn.from_demo(now, var)
    shop.start()
    try:
        with start_rasa_stack(trained_model, var, now, **woocommerce_env(shop)) as stack:
            yield WooStack(stack, shop)
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
