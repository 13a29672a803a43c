"""Self-service on a Shopify shop, end to end: the customer's words go in through the
gateway's REST channel to the real Rasa and the action server with STORE_BACKEND=shopify,
which talks to the Shopify stand-in (tests/store_api/shopify.py) over HTTP."""
from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator, Iterator

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
from tests.bot.test_self_service import ADMIN_TOKEN, Customer
from tests.conftest import RasaStack, shopify_env, start_rasa_stack
from tests.store_api.shopify import ShopifyStandIn


@dataclasses.dataclass
class ShopifyStack:
    stack: RasaStack
    shop: ShopifyStandIn


@pytest.fixture(scope="module")
def shopify_stack(trained_model: Path, tmp_path_factory: pytest.TempPathFactory,
                  now: datetime) -> Iterator[ShopifyStack]:
    var = tmp_path_factory.mktemp("shopify_self_service")
    shop = ShopifyStandIn.from_demo(now, var, cancel_job_polls=2)
    shop.start()
    try:
        with start_rasa_stack(trained_model, var, now, **shopify_env(shop)) as stack:
            yield ShopifyStack(stack, shop)
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
