"""Turn latency in the action server per store backend: the demo SQL store against a
Shopify shop and a WooCommerce shop (the stand-ins of tests/store_api/, on loopback,
optionally with a network delay per request to stand for the distance to the shop).

    .venv/bin/python bench/bench_store_backends.py [--runs 50] [--shopify-delay-ms 0 80]
        [--woocommerce-delay-ms 0 80]

Runs the custom actions as the action server would (no Rasa, no HTTP to it), with the
policy's order cache in the process's memory (order_cache.ttl_seconds; no REDIS_URL):
- *order status*: "where is A1001" for a verified customer (the order, its shipment),
  with nothing kept of the order;
- *order status, next turn*: the same again, the order kept by the order cache;
- *cancel question*: "cancel A1004": the verified order (kept after the first run),
  a fresh read for the eligibility, hold check, the question;
- *cancel question + yes*: the question and the yes on each of 15 paid orders: the
  write (on Shopify: orderCancel, its job polled, the order read again; on WooCommerce:
  the status, a note, the refund and its note, the order and refunds read again) and
  read-back.
Prints a table (milliseconds, and HTTP requests per action to the platform) and writes
bench/results/store_backends.md. A benchmark, not a test: run it on an idle machine.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Protocol, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_writes import proven, question_of, run, tracker  # noqa: E402

from actions.actions import ActionConfirmOffer, ActionResolveRequest  # noqa: E402
from actions.conversation import shared_store  # noqa: E402
from actions.store.seed import seed_demo_store  # noqa: E402
from actions.store.sql import open_store  # noqa: E402
from actions.store.types import OrderStatus  # noqa: E402
from tests.store_api.shopify import ShopifyStandIn  # noqa: E402
from tests.store_api.woocommerce import WooCommerceStandIn  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "store_backends.md"
PAID_ORDERS = 15
Measured = Tuple[List[float], List[int]]  # milliseconds, platform requests, per action


class StandIn(Protocol):
    @property
    def received(self) -> List[Any]: ...


async def measure(calls: List[Callable[[], Awaitable[object]]],
                  shop: Optional[StandIn]) -> Measured:
    millis, requests = [], []
    for call in calls:
        before = len(shop.received) if shop else 0
        started = time.perf_counter()
        await call()
        millis.append((time.perf_counter() - started) * 1000)
        requests.append(len(shop.received) - before if shop else 0)
    return millis, requests


async def bench_actions(runs: int, paid: List[Tuple[str, str]],
                        shop: Optional[StandIn]) -> Dict[str, Measured]:
    shared_store.cache_clear()
    status = tracker({**proven("A1001", "buyer1@example.com"), "request": "order_status"},
                     "order_status")
    cancel = tracker({**proven("A1004", "buyer3@example.com"), "request": "cancel_order"},
                     "cancel_order")

    async def ask_then_yes(order_id: str, email: str) -> None:
        asked = await run(ActionResolveRequest(), tracker(
            {**proven(order_id, email), "request": "cancel_order"}, "cancel_order"))
        await run(ActionConfirmOffer(), tracker(
            {**proven(order_id, email), "pending_offer": question_of(asked)}, "affirm", 2))

    def ask_then_yes_on(order_id: str, email: str) -> Callable[[], Awaitable[None]]:
        return lambda: ask_then_yes(order_id, email)

    async def status_not_kept() -> None:
        """The order status with nothing kept of A1001 by the order cache (a platform's
        orders forget it; the SQL store keeps nothing)."""
        forget = getattr(shared_store().orders, "forget", None)
        if forget is not None:
            forget("A1001")
        await run(ActionResolveRequest(), status)

    results = {
        "order status": await measure([status_not_kept for _ in range(runs)], shop),
        "order status, next turn (order cache)": await measure(
            [lambda: run(ActionResolveRequest(), status) for _ in range(runs)], shop),
        "cancel question": await measure(
            [lambda: run(ActionResolveRequest(), cancel) for _ in range(runs)], shop),
        "cancel question + yes": await measure(
            [ask_then_yes_on(order_id, email) for order_id, email in paid], shop),
    }
    shared_store().close()
    shared_store.cache_clear()
    return results


def paid_orders(url: str, now: datetime) -> List[Tuple[str, str]]:
    store = open_store(url)
    seed_demo_store(store, now)
    found = [(o.order_id, o.customer.email) for o in store.orders.orders_since(
        datetime(2000, 1, 1, tzinfo=timezone.utc), OrderStatus.PAID) if o.order_id >= "A2001"]
    store.close()
    return found[:PAID_ORDERS]


def render(rows: List[Tuple[str, str, Measured]], runs: int) -> str:
    lines = ["# Turn latency per store backend (bench/bench_store_backends.py)", "",
             f"Actions run directly; {runs} runs each (the cancel with its yes: once on each "
             f"of {PAID_ORDERS} paid orders). Shopify and WooCommerce are the local "
             "stand-ins (Shopify's validates and costs every GraphQL document); the delay "
             "stands for the network to the shop, per HTTP request.", "",
             "| backend | action | runs | p50 ms | p95 ms | platform requests |",
             "|---|---|---:|---:|---:|---:|"]
    for backend, action, (millis, requests) in rows:
        p95 = statistics.quantiles(millis, n=20)[18] if len(millis) >= 20 else max(millis)
        lines.append(f"| {backend} | {action} | {len(millis)} | {statistics.median(millis):.1f}"
                     f" | {p95:.1f} | {statistics.median(requests):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--shopify-delay-ms", type=float, nargs="*", default=[0.0, 80.0])
    parser.add_argument("--woocommerce-delay-ms", type=float, nargs="*", default=[0.0, 80.0])
    args = parser.parse_args()
    rows: List[Tuple[str, str, Measured]] = []
    now = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory() as scratch:
        sql_url = f"sqlite:///{scratch}/store.db"
        os.environ.update(STORE_BACKEND="sql", DATABASE_URL=sql_url)
        paid = paid_orders(sql_url, now)
        for action, measured in asyncio.run(bench_actions(args.runs, paid, None)).items():
            rows.append(("SQL (SQLite)", action, measured))
        for delay in args.shopify_delay_ms:
            shop = ShopifyStandIn.from_demo(now, Path(scratch), delay=delay / 1000,
                                            cancel_job_polls=1)
            shop.start()
            os.environ.update(STORE_BACKEND="shopify", SHOPIFY_SHOP="bench.myshopify.com",
                              SHOPIFY_ACCESS_TOKEN=shop.access_token,
                              SHOPIFY_API_BASE_URL=shop.url,
                              DATABASE_URL=f"sqlite:///{scratch}/bot-{delay:.0f}.db")
            try:
                measured_all = asyncio.run(bench_actions(args.runs, paid, shop))
            finally:
                shop.stop()
            for action, measured in measured_all.items():
                rows.append((f"Shopify stand-in, +{delay:.0f} ms/request", action, measured))
        for delay in args.woocommerce_delay_ms:
            woo = WooCommerceStandIn.from_demo(now, Path(scratch), delay=delay / 1000)
            woo.start()
            os.environ.update(STORE_BACKEND="woocommerce", WOOCOMMERCE_URL=woo.url,
                              WOOCOMMERCE_KEY=woo.key, WOOCOMMERCE_SECRET=woo.secret,
                              DATABASE_URL=f"sqlite:///{scratch}/bot-woo-{delay:.0f}.db")
            try:
                measured_all = asyncio.run(bench_actions(args.runs, paid, woo))
            finally:
                woo.stop()
            for action, measured in measured_all.items():
                rows.append((f"WooCommerce stand-in, +{delay:.0f} ms/request", action,
                             measured))
    table = render(rows, args.runs)
    print(table)
    RESULTS.write_text(table)


if __name__ == "__main__":
    main()
