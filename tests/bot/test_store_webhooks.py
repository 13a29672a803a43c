"""The store platforms' webhooks (bot/outreach/store_hooks.py), as Shopify and
WooCommerce send them (tests/store_api/store_hooks.py): signed, deduplicated, kept and
handled in the background; they end what the order cache kept of the order in Redis (a
server of the test's own), so the action server's next read of it is fresh; and a
Shopify fulfilment in trouble reaches the customer through the shipments' outreach, on
the order as Shopify has it."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator, Dict, Iterator, List, Optional, Tuple

import pytest
import pytest_asyncio
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis import asyncio as aioredis

from actions.store.backend import open_systems
from actions.store.seed import seed_demo_store
from actions.store.sql import Store, open_store
from actions.store.types import OrderStatus, PlatformPolicy, StoreSystems
from bot.app import ROUTER, create_app
from bot.outreach.store_hooks import StoreWebhooks
from bot.outreach.tables import store_events
from bot.policies import load_channel_policy
from bot.services import connect_redis
from bot.settings import load_settings
from connectors.channel import Channel
from tests.bot.test_monitor import (
    BUYER8_SMS,
    DAY,
    Gateway,
    RecordingChannel,
    gateway,
    sent,
)
from tests.conftest import shopify_env, woocommerce_env
from tests.redis_server import RedisServer, needs_redis_server
from tests.store_api.shopify import ShopifyStandIn
from tests.store_api.store_hooks import (
    SHOP_DOMAIN,
    fire_shopify,
    fire_woocommerce,
    ping_woocommerce,
    shopify_fulfillment,
    shopify_fulfillment_event,
    shopify_order,
    shopify_refund,
    shopify_return,
    sign,
    woocommerce_order,
)
from tests.store_api.woocommerce import WooCommerceStandIn

SHOPIFY_SECRET = "shopify-app-client-secret"
WOO_SECRET = "woocommerce-webhook-secret"
SECRETS = {"shopify": SHOPIFY_SECRET, "woocommerce": WOO_SECRET}
WOO_ORDER = r"/wp-json/wc/v3/orders/\d+"


@dataclasses.dataclass
class Hooks:
    gw: Gateway
    webhooks: StoreWebhooks
    client: TestClient
    redis: Optional[aioredis.Redis]

    @property
    def shopify_url(self) -> str:
        return str(self.client.make_url("/webhooks/shopify"))

    @property
    def woocommerce_url(self) -> str:
        return str(self.client.make_url("/webhooks/woocommerce"))

    def events(self) -> List[Tuple[str, str, str, str, str]]:
        with self.gw.records.engine.connect() as db:
            rows = db.execute(sa.select(store_events).order_by(store_events.c.id)).all()
        return [(r.provider, r.event_id, r.topic, r.state, r.result) for r in rows]

    async def handled(self, count: int) -> None:
        """Until the background work has settled `count` events."""
        for _ in range(250):
            if sum(1 for e in self.events() if e[3] == "done") >= count:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"not handled: {self.events()}")


@pytest.fixture
def demo(tmp_path: Path, now: datetime) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    seed_demo_store(store, now)
    yield store
    store.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if needs_redis_server.args[0]:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


async def open_hooks(tmp_path: Path, now: datetime, platform: StoreSystems,
                     redis_url: str = "") -> AsyncIterator[Hooks]:
    """A gateway whose platform (its monitors', its webhooks') is `platform`."""
    channels: Dict[str, Channel] = {name: RecordingChannel(name)
                                    for name in ("twilio", "whatsapp", "telegram")}
    redis = connect_redis(redis_url) if redis_url else None
    async with gateway(tmp_path, platform, now, channels) as gw:
        webhooks = StoreWebhooks(gw.outreach, SECRETS, redis, SHOP_DOMAIN, gw.clock)
        app = web.Application()
        webhooks.install(app)
        client = TestClient(TestServer(app))
        await client.start_server()
        await webhooks.start()
        try:
            yield Hooks(gw, webhooks, client, redis)
        finally:
            await webhooks.stop()
            await client.close()
            if redis is not None:
                await redis.close(close_connection_pool=True)


@pytest_asyncio.fixture
async def hooks(tmp_path: Path, demo: Store, now: datetime,
                shopify_platform: StoreSystems) -> AsyncIterator[Hooks]:
    """Without Redis."""
    async for opened in open_hooks(tmp_path, now, shopify_platform):
        yield opened


def action_server(env: Dict[str, str], tmp_path: Path, redis_url: str) -> StoreSystems:
    """The store systems as the action server opens them: the order cache in Redis."""
    return open_systems({**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'action-bot.db'}",
                         "REDIS_URL": redis_url}, PlatformPolicy(cache_seconds=60))


def status_in_a_turn(systems: StoreSystems, order_id: str) -> OrderStatus:
    systems.begin_turn()
    order = systems.orders.get_order(order_id)
    assert order is not None
    return order.status


# --- signatures and malformed bodies ----------------------------------------------------

@pytest.mark.parametrize("signature, shop_domain, status", [
    (None, SHOP_DOMAIN, 200),  # signed with the secret, as Shopify signs
    ("", SHOP_DOMAIN, 401),
    (sign(b"another body", SHOPIFY_SECRET), SHOP_DOMAIN, 401),
    (sign(b"{}", "not the secret"), SHOP_DOMAIN, 401),
    ("sha256=0000", SHOP_DOMAIN, 401),
    (None, "another-store.myshopify.com", 401),  # signed, but not our shop
])
async def test_shopify_signatures(hooks: Hooks, shopify_shop: ShopifyStandIn,
                                  signature: Optional[str], shop_domain: str,
                                  status: int) -> None:
    payload = shopify_order(shopify_shop, "#1004")
    assert await fire_shopify(hooks.shopify_url, "orders/updated", payload, SHOPIFY_SECRET,
                              signature=signature, shop_domain=shop_domain) == status
    assert len(hooks.events()) == (1 if status == 200 else 0)


async def test_shopify_without_a_signature_header(hooks: Hooks,
                                                  shopify_shop: ShopifyStandIn) -> None:
    payload = shopify_order(shopify_shop, "#1004")
    assert await fire_shopify(hooks.shopify_url, "orders/updated", payload, SHOPIFY_SECRET,
                              omit=("X-Shopify-Hmac-Sha256",)) == 401
    assert hooks.events() == []


@pytest.mark.parametrize("signature, status", [
    (None, 200), ("", 401), (sign(b"another body", WOO_SECRET), 401),
    (sign(b"{}", SHOPIFY_SECRET), 401)])
async def test_woocommerce_signatures(hooks: Hooks, woocommerce_shop: WooCommerceStandIn,
                                      signature: Optional[str], status: int) -> None:
    payload = woocommerce_order(woocommerce_shop, "1004")
    assert await fire_woocommerce(hooks.woocommerce_url, "order.updated", payload,
                                  WOO_SECRET, signature=signature) == status
    assert len(hooks.events()) == (1 if status == 200 else 0)


async def test_woocommerce_without_a_signature_header(
        hooks: Hooks, woocommerce_shop: WooCommerceStandIn) -> None:
    payload = woocommerce_order(woocommerce_shop, "1004")
    assert await fire_woocommerce(hooks.woocommerce_url, "order.updated", payload,
                                  WOO_SECRET, omit=("X-WC-Webhook-Signature",)) == 401
    assert hooks.events() == []


async def test_woocommerces_ping_is_answered_and_nothing_kept(hooks: Hooks) -> None:
    assert await ping_woocommerce(hooks.woocommerce_url) == 200
    assert hooks.events() == []
    # a ping's form is the only unsigned body taken
    assert await fire_woocommerce(hooks.woocommerce_url, "order.updated",
                                  b"webhook_id=7&x=1", WOO_SECRET, signature="") == 401


async def test_malformed_bodies_are_refused_and_logged_without_them(
        hooks: Hooks, shopify_shop: ShopifyStandIn, woocommerce_shop: WooCommerceStandIn,
        caplog: pytest.LogCaptureFixture) -> None:
    shop, woo = hooks.shopify_url, hooks.woocommerce_url
    assert await fire_shopify(shop, "orders/updated", b"not json", SHOPIFY_SECRET) == 400
    assert await fire_shopify(shop, "orders/updated", b"[1, 2]", SHOPIFY_SECRET) == 400
    no_order = {"customer": {"email": "secret.buyer@example.com"}, "note": "+14155550108"}
    assert await fire_shopify(shop, "orders/updated", no_order, SHOPIFY_SECRET) == 400
    order = shopify_order(shopify_shop, "#1004")
    assert await fire_shopify(shop, "orders/updated", order, SHOPIFY_SECRET,
                              omit=("X-Shopify-Webhook-Id",)) == 400
    assert await fire_shopify(shop, "orders/updated", order, SHOPIFY_SECRET,
                              omit=("X-Shopify-Topic",)) == 400
    assert await fire_woocommerce(woo, "order.updated", no_order, WOO_SECRET) == 400
    assert await fire_woocommerce(woo, "order.updated", woocommerce_order(
        woocommerce_shop, "1004"), WOO_SECRET, omit=("X-WC-Webhook-Delivery-ID",)) == 400
    assert await fire_shopify(shop, "orders/updated", order, "not the secret") == 401
    assert "refused a shopify webhook" in caplog.text
    assert "refused a woocommerce webhook" in caplog.text
    for personal in ("secret.buyer", "4155550108", order["email"]):
        assert personal not in caplog.text
    assert hooks.events() == []


async def test_other_topics_are_acknowledged_and_ignored(hooks: Hooks) -> None:
    assert await fire_shopify(hooks.shopify_url, "products/update", {"id": 1, "title": "x"},
                              SHOPIFY_SECRET) == 200
    assert await fire_woocommerce(hooks.woocommerce_url, "product.updated", {"id": 1},
                                  WOO_SECRET) == 200
    assert hooks.events() == []


async def test_a_retry_is_acknowledged_and_kept_once(hooks: Hooks,
                                                     shopify_shop: ShopifyStandIn,
                                                     woocommerce_shop: WooCommerceStandIn
                                                     ) -> None:
    order = shopify_order(shopify_shop, "#1004")
    for _ in range(3):
        assert await fire_shopify(hooks.shopify_url, "orders/cancelled", order,
                                  SHOPIFY_SECRET, webhook_id="b54557e4-bdd9-4b37") == 200
    woo = woocommerce_order(woocommerce_shop, "1004")
    for _ in range(2):
        assert await fire_woocommerce(hooks.woocommerce_url, "order.updated", woo,
                                      WOO_SECRET, delivery_id="d41d8cd98f00b204") == 200
    await hooks.handled(2)
    # without REDIS_URL the action server's cache is in its memory: nothing to delete
    assert hooks.events() == [
        ("shopify", "b54557e4-bdd9-4b37", "orders/cancelled", "done", "no_shared_cache"),
        ("woocommerce", "d41d8cd98f00b204", "order.updated", "done", "no_shared_cache")]


async def test_only_the_webhooks_with_a_secret_are_served(
        tmp_path: Path, demo: Store, now: datetime, shopify_platform: StoreSystems) -> None:
    channels: Dict[str, Channel] = {"twilio": RecordingChannel("twilio")}
    async with gateway(tmp_path, demo, now, channels) as gw:
        webhooks = StoreWebhooks(gw.outreach, {"shopify": "", "woocommerce": WOO_SECRET},
                                 None)
        app = web.Application()
        webhooks.install(app)
        async with TestClient(TestServer(app)) as client:
            assert (await client.post("/webhooks/shopify", data=b"{}")).status == 404
            assert (await client.post("/webhooks/woocommerce", data=b"{}")).status == 401


# --- the order cache, in Redis ----------------------------------------------------------

@pytest.mark.parametrize("topic", ["orders/updated", "orders/fulfilled"])
async def test_a_shopify_webhook_ends_what_the_cache_kept(
        tmp_path: Path, demo: Store, now: datetime, shopify_shop: ShopifyStandIn,
        shopify_platform: StoreSystems, redis_server: RedisServer, topic: str) -> None:
    actions = action_server(shopify_env(shopify_shop), tmp_path, redis_server.url)
    try:
        assert status_in_a_turn(actions, "A1004") is OrderStatus.PAID
        shopify_shop.fulfill("#1004")  # the warehouse ships it
        assert status_in_a_turn(actions, "A1004") is OrderStatus.PAID  # kept
        assert len(shopify_shop.calls("Orders")) == 1
        async for hooks in open_hooks(tmp_path, now, shopify_platform,
                                      redis_server.url):
            assert await fire_shopify(hooks.shopify_url, topic,
                                      shopify_order(shopify_shop, "#1004"),
                                      SHOPIFY_SECRET) == 200
            await hooks.handled(1)
            assert hooks.events()[0][3:] == ("done", "forgotten")
        assert status_in_a_turn(actions, "A1004") is OrderStatus.SHIPPED  # read afresh
        assert len(shopify_shop.calls("Orders")) == 2
    finally:
        actions.close()


async def test_a_shopify_refund_names_the_order_by_id_only(
        tmp_path: Path, demo: Store, now: datetime, shopify_shop: ShopifyStandIn,
        shopify_platform: StoreSystems, redis_server: RedisServer) -> None:
    actions = action_server(shopify_env(shopify_shop), tmp_path, redis_server.url)
    try:
        status_in_a_turn(actions, "A1004")
        async for hooks in open_hooks(tmp_path, now, shopify_platform,
                                      redis_server.url):
            assert await fire_shopify(hooks.shopify_url, "refunds/create",
                                      shopify_refund(shopify_shop, "#1004"),
                                      SHOPIFY_SECRET) == 200
            # an order the cache does not hold
            assert await fire_shopify(hooks.shopify_url, "refunds/create",
                                      shopify_refund(shopify_shop, "#1001"),
                                      SHOPIFY_SECRET) == 200
            await hooks.handled(2)
            assert [e[4] for e in hooks.events()] == ["forgotten", "not_kept"]
        status_in_a_turn(actions, "A1004")
        assert len(shopify_shop.calls("Orders")) == 2
    finally:
        actions.close()


@pytest.mark.parametrize("topic", ["returns/request", "fulfillment_events/create"])
async def test_shopify_returns_and_fulfilment_events_end_what_the_cache_kept(
        tmp_path: Path, demo: Store, now: datetime, shopify_shop: ShopifyStandIn,
        shopify_platform: StoreSystems, redis_server: RedisServer, topic: str) -> None:
    actions = action_server(shopify_env(shopify_shop), tmp_path, redis_server.url)
    try:
        status_in_a_turn(actions, "A1001")
        payload = (shopify_return(shopify_shop, "#1001") if topic.startswith("returns")
                   else shopify_fulfillment_event(shopify_shop, "#1001", "delayed"))
        async for hooks in open_hooks(tmp_path, now, shopify_platform,
                                      redis_server.url):
            assert await fire_shopify(hooks.shopify_url, topic, payload,
                                      SHOPIFY_SECRET) == 200
            await hooks.handled(1)
            assert hooks.events()[0][3:] == ("done", "forgotten")
        status_in_a_turn(actions, "A1001")
        assert len(shopify_shop.calls("Orders")) == 2
    finally:
        actions.close()


async def test_a_woocommerce_webhook_ends_what_the_cache_kept(
        tmp_path: Path, demo: Store, now: datetime, woocommerce_shop: WooCommerceStandIn,
        shopify_platform: StoreSystems, redis_server: RedisServer) -> None:
    actions = action_server(woocommerce_env(woocommerce_shop), tmp_path, redis_server.url)
    try:
        assert status_in_a_turn(actions, "A1004") is OrderStatus.PAID
        actions.begin_turn()
        assert actions.delivery.get_shipment("A1004") is None
        woocommerce_shop.ship("1004")
        assert status_in_a_turn(actions, "A1004") is OrderStatus.PAID  # kept
        assert actions.delivery.get_shipment("A1004") is None  # its tracking items too
        assert len(woocommerce_shop.calls("GET", WOO_ORDER)) == 1
        async for hooks in open_hooks(tmp_path, now, shopify_platform,
                                      redis_server.url):
            assert await fire_woocommerce(hooks.woocommerce_url, "order.updated",
                                          woocommerce_order(woocommerce_shop, "1004"),
                                          WOO_SECRET) == 200
            await hooks.handled(1)
            assert hooks.events()[0][3:] == ("done", "forgotten")
        assert status_in_a_turn(actions, "A1004") is OrderStatus.SHIPPED
        shipment = actions.delivery.get_shipment("A1004")
        assert shipment is not None and shipment.tracking_number == "1Z999AA10000000001"
        assert len(woocommerce_shop.calls("GET", WOO_ORDER)) == 2
    finally:
        actions.close()


# --- what the customer is told ---------------------------------------------------------

async def test_a_shopify_fulfilment_in_trouble_reaches_the_customer_once(
        hooks: Hooks, shopify_shop: ShopifyStandIn) -> None:
    gw = hooks.gw
    gw.wrote("twilio", BUYER8_SMS, 3 * DAY, channel="sms")
    attempted = shopify_fulfillment(shopify_shop, "#1016", "attempted_delivery")
    assert attempted["tracking_number"] == "4819203799"
    assert await fire_shopify(hooks.shopify_url, "fulfillments/update", attempted,
                              SHOPIFY_SECRET) == 200
    await hooks.handled(1)
    [(to, text)] = sent(gw, "twilio")
    assert to == BUYER8_SMS
    assert text.startswith("Hi Jamie, an update on your order A1016: DHL reports a problem "
                           "with the delivery (attempted delivery)")
    assert hooks.events()[0][3:] == ("done", "sent")

    # again, and a parcel on its way: nothing more to tell
    assert await fire_shopify(hooks.shopify_url, "fulfillments/update", attempted,
                              SHOPIFY_SECRET) == 200
    moving = shopify_fulfillment(shopify_shop, "#1016", "in_transit")
    assert await fire_shopify(hooks.shopify_url, "fulfillments/update", moving,
                              SHOPIFY_SECRET) == 200
    await hooks.handled(3)
    assert [e[4] for e in hooks.events()] == ["sent", "already_messaged", "no_shared_cache"]
    assert len(sent(gw, "twilio")) == 1


async def test_a_cancellation_is_not_told(hooks: Hooks, shopify_shop: ShopifyStandIn,
                                          caplog: pytest.LogCaptureFixture) -> None:
    hooks.gw.wrote("twilio", BUYER8_SMS, 3 * DAY, channel="sms")
    order = shopify_order(shopify_shop, "#1016")
    with caplog.at_level(logging.INFO, "bot.outreach"):
        assert await fire_shopify(hooks.shopify_url, "orders/cancelled", order,
                                  SHOPIFY_SECRET) == 200
        await hooks.handled(1)
    assert sent(hooks.gw, "twilio") == []
    assert "shopify orders/cancelled of order 1016: no_shared_cache" in caplog.text
    assert order["email"] not in caplog.text and order["phone"] not in caplog.text


# --- through the gateway's app ----------------------------------------------------------

async def test_the_gateway_serves_them_and_clears_its_redis(
        tmp_path: Path, demo: Store, shopify_shop: ShopifyStandIn,
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bot serve` wires the webhooks whose secret is set to its Redis, which the
    action server's order cache shares (docker-compose.yml)."""
    monkeypatch.setenv("STORE_BACKEND", "sql")
    settings = dataclasses.replace(
        load_settings(), rasa_url="http://127.0.0.1:9",
        database_url=f"sqlite:///{tmp_path / 'store.db'}", var_dir=tmp_path,
        redis_url=redis_server.url,
        tracker_database_url=f"sqlite:///{tmp_path / 'tracker.db'}",
        shopify_webhook_secret=SHOPIFY_SECRET, woocommerce_webhook_secret="",
        shopify_shop=SHOP_DOMAIN)
    actions = action_server(shopify_env(shopify_shop), tmp_path, redis_server.url)
    try:
        status_in_a_turn(actions, "A1004")
        app = create_app(settings, {}, load_channel_policy())
        async with TestClient(TestServer(app)) as client:
            url = str(client.make_url("/webhooks/shopify"))
            assert await fire_shopify(url, "orders/cancelled",
                                      shopify_order(shopify_shop, "#1004"),
                                      SHOPIFY_SECRET) == 200
            assert (await client.post("/webhooks/woocommerce", data=b"{}")).status == 404
            with app[ROUTER].records.engine.connect() as db:
                for _ in range(250):
                    rows = db.execute(sa.select(store_events.c.result)).scalars().all()
                    if rows == ["forgotten"]:
                        break
                    await asyncio.sleep(0.02)
                    db.rollback()
            assert rows == ["forgotten"]
        status_in_a_turn(actions, "A1004")
        assert len(shopify_shop.calls("Orders")) == 2
    finally:
        actions.close()
