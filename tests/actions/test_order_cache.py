"""The order cache (actions/store/cache.py) as the actions use it, on Shopify's and
WooCommerce's stand-ins, in this process's memory and in Redis (a server of the test's
own): the next turn finds the order kept, a write and its eligibility never do, and a
write forgets what was kept of the order."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, List, Union

import pytest
import redis

from actions.conversation import shared_store
from actions.store.cache import (
    MemoryOrderCache,
    RedisOrderCache,
    TurnReads,
    cache_key,
    open_order_cache,
    order_keys,
)
from tests.conftest import shopify_env, woocommerce_env
from tests.redis_server import RedisServer, needs_redis_server
from tests.store_api.shopify import ShopifyStandIn
from tests.store_api.woocommerce import WooCommerceStandIn

from .test_actions import answer, resolve

WOO_ORDER = r"/wp-json/wc/v3/orders/\d+"
Shop = Union[ShopifyStandIn, WooCommerceStandIn]


class Platform:
    """A stand-in, what counts its order reads and writes, and how its warehouse ships."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop

    @property
    def name(self) -> str:
        return "shopify" if isinstance(self.shop, ShopifyStandIn) else "woocommerce"

    def order_reads(self) -> int:
        if isinstance(self.shop, ShopifyStandIn):
            return len(self.shop.calls("Orders"))
        return len(self.shop.calls("GET", WOO_ORDER))

    def cancels(self) -> int:
        if isinstance(self.shop, ShopifyStandIn):
            return len(self.shop.calls("OrderCancel"))
        return len(self.shop.calls("PUT", WOO_ORDER))

    def ship(self, order_id: str) -> None:
        """The warehouse ships the order, outside the bot (no webhook here)."""
        if isinstance(self.shop, ShopifyStandIn):
            self.shop.fulfill(order_id)
        else:
            self.shop.ship(order_id[1:])


@pytest.fixture(params=["shopify", "woocommerce"])
def shop(request: pytest.FixtureRequest) -> Shop:
    fixture = "shopify_shop" if request.param == "shopify" else "woocommerce_shop"
    found: Shop = request.getfixturevalue(fixture)
    return found


@pytest.fixture(params=["memory", "redis"])
def cache_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """REDIS_URL for the action server: none (in memory), or a Redis of the test's own."""
    if request.param == "memory":
        yield ""
        return
    if needs_redis_server.args[0]:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def platform(shop: Shop, cache_url: str, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """The actions open the platform's backend on its stand-in, with the policy's cache."""
    env = shopify_env(shop) if isinstance(shop, ShopifyStandIn) else woocommerce_env(shop)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'bot.db'}")
    if cache_url:
        monkeypatch.setenv("REDIS_URL", cache_url)
    else:
        monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr("actions.store.woocommerce.client.FIRST_BACKOFF_SECONDS", 0.01)
    shared_store.cache_clear()
    yield Platform(shop)
    shared_store().close()
    shared_store.cache_clear()


async def test_the_next_turn_finds_the_order_kept(platform: Platform) -> None:
    for _ in range(3):
        outcome = await resolve("order_status", "A1001")
        assert outcome.responses[0] == "utter_status_in_transit"
    assert platform.order_reads() == 1


async def test_a_write_checks_the_order_as_the_platform_has_it_now(platform: Platform) -> None:
    """The order was kept as paid; the warehouse ships it; the customer's yes to the
    cancellation is checked on the order as it is now: not cancelled, no mutation."""
    question = await resolve("cancel_order", "A1004")
    assert question.slot("pending_offer") is not None
    kept_reads = platform.order_reads()
    status = await resolve("order_status", "A1004")
    assert status.responses[0] == "utter_status_paid"
    assert platform.order_reads() == kept_reads  # from the cache
    platform.ship("A1004")

    done = await answer(question, "A1004")

    assert "utter_cancelled" not in done.responses
    assert platform.cancels() == 0
    assert platform.order_reads() > kept_reads
    # refused by the guarded path's own check, on the order as shipped (not by the
    # backend's check on a cached paid order)
    [write] = shared_store().writes.for_order("A1004")
    assert (write.status, write.error) == ("refused", "not eligible when confirmed")
    assert write.before["status"] == "shipped"


async def test_a_proposal_checks_the_order_as_the_platform_has_it_now(
        platform: Platform) -> None:
    status = await resolve("order_status", "A1004")
    assert status.responses[0] == "utter_status_paid"
    platform.ship("A1004")
    refused = await resolve("cancel_order", "A1004")
    assert refused.slot("pending_offer") is None  # nothing to say yes to: it has shipped
    assert platform.cancels() == 0


async def test_a_write_forgets_what_was_kept_of_the_order(platform: Platform) -> None:
    status = await resolve("order_status", "A1004")
    assert status.responses[0] == "utter_status_paid"
    question = await resolve("cancel_order", "A1004")
    done = await answer(question, "A1004")
    assert "utter_cancelled" in done.responses
    reads = platform.order_reads()
    after = await resolve("order_status", "A1004")
    assert after.responses[0] == "utter_status_cancelled"
    again = await resolve("order_status", "A1004")
    assert again.responses[0] == "utter_status_cancelled"
    assert platform.order_reads() == reads + 1  # read once afresh, then kept again


# --- the caches themselves ------------------------------------------------------------------

def test_memory_keeps_for_the_ttl_only() -> None:
    now = [100.0]
    cache = MemoryOrderCache(30, clock=lambda: now[0])
    key = cache_key("shopify", "1001", "order")
    cache.put(key, {"name": "#1001"})
    assert cache.get(key) == {"name": "#1001"}
    now[0] += 29.9
    assert cache.get(key) == {"name": "#1001"}
    now[0] += 0.2
    assert cache.get(key) is None


def test_memory_gives_copies_and_forgets_the_oldest() -> None:
    cache = MemoryOrderCache(30, max_entries=2)
    cache.put("a", {"n": 1})
    cache.get("a")["n"] = 2  # type: ignore[index]
    assert cache.get("a") == {"n": 1}
    cache.put("b", 2)
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, 2, 3)


@needs_redis_server
def test_redis_keeps_with_an_expiry_and_forgets_every_kind(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        cache = open_order_cache({"REDIS_URL": server.url}, 45)
        assert isinstance(cache, RedisOrderCache)
        for key in order_keys("woocommerce", "1001"):
            cache.put(key, [{"id": 1}])
        direct = redis.Redis.from_url(server.url)
        assert 0 < direct.ttl(cache_key("woocommerce", "1001", "refunds")) <= 45
        assert cache.get(cache_key("woocommerce", "1001", "order")) == [{"id": 1}]
        cache.delete(order_keys("woocommerce", "1001"))
        assert direct.keys("store-cache:*") == []
        direct.close()
        cache.close()
    finally:
        server.stop()


@needs_redis_server
def test_a_redis_that_does_not_answer_reads_the_platform(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    server = RedisServer(tmp_path)
    server.start()
    cache = open_order_cache({"REDIS_URL": server.url}, 45)
    server.stop()
    reads: List[int] = []
    turn = TurnReads("shopify", cache)

    def read() -> dict:
        reads.append(1)
        return {"name": "#1001"}

    turn.begin_turn()
    assert turn.read("1001", "order", read) == {"name": "#1001"}
    assert reads == [1]
    assert "order cache: Redis did not answer" in caplog.text
    assert "1001" not in caplog.text


def test_outside_a_turn_nothing_is_kept() -> None:
    cache = MemoryOrderCache(30)
    turn = TurnReads("shopify", cache)
    count: List[int] = []
    read: Callable[[], dict] = lambda: count.append(1) or {"n": len(count)}  # noqa: E731
    assert turn.read("1001", "order", read) == {"n": 1}
    assert turn.read("1001", "order", read) == {"n": 2}
    turn.read_fresh()  # outside a turn: still nothing kept
    assert turn.read("1001", "order", read) == {"n": 3}
    assert cache.get(cache_key("shopify", "1001", "order")) is None


def test_a_ttl_of_0_keeps_nothing() -> None:
    assert open_order_cache({"REDIS_URL": "redis://127.0.0.1:1/0"}, 0) is None
    assert isinstance(open_order_cache({}, 60), MemoryOrderCache)
