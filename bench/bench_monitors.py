"""The shipments monitor's run per store backend: the demo SQL store against a Shopify
shop and a WooCommerce shop (the stand-ins of tests/store_api/, on loopback, optionally
with a network delay per request to stand for the distance to the shop).

    .venv/bin/python bench/bench_monitors.py [--runs 5] [--handoffs 200]
        [--shopify-delay-ms 0 80] [--woocommerce-delay-ms 0 80]

Shopify's points are the requested query cost its stand-in computes as Shopify does
(simplified): what a run takes from the shop's rate limit (a bucket of 1,000 to 20,000
points refilled at 50 to 1,000 a second by plan), which the conversations share.

Each run is `bot monitor shipments` on the gateway's parts (a real Router and handoff
desk, channels that record instead of sending): the scan of the orders in transit
within `shipments.look_back_days`, then reaching the customers it found, with
`--handoffs` earlier web-chat conversations that verified an order (the directory that
links conversations to customers reads them). The first run sends; the later ones find
every order messaged already, so they measure the scan and the directory. Prints a
table (milliseconds and HTTP requests to the platform per run) and writes
bench/results/monitors.md. A benchmark, not a test: run it on an idle machine.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from graphql import parse  # noqa: E402

from actions.store.backend import open_systems  # noqa: E402
from actions.store.seed import seed_demo_store  # noqa: E402
from actions.store.sql import open_store  # noqa: E402
from actions.store.types import StoreSystems  # noqa: E402
from connectors.channel import Channel  # noqa: E402
from tests.bot.test_monitor import DAY, RecordingChannel, gateway  # noqa: E402
from tests.conftest import shopify_env, woocommerce_env  # noqa: E402
from tests.store_api.shopify import ShopifyStandIn, requested_cost  # noqa: E402
from tests.store_api.woocommerce import WooCommerceStandIn  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "monitors.md"
# milliseconds, platform requests, Shopify's requested query cost (points), per run
Measured = Tuple[List[float], List[int], List[int]]


async def bench_runs(shop: StoreSystems, stand_in: Any, now: datetime, scratch: Path,
                     runs: int, handoffs: int) -> Measured:
    channels: Dict[str, Channel] = {name: RecordingChannel(name)
                                    for name in ("twilio", "whatsapp", "telegram", "webchat")}
    async with gateway(scratch, shop, now, channels) as gw:
        for n in range(handoffs):
            order_id = f"A{2001 + n % 200}"
            gw.handoff(gw.wrote("webchat", f"bench-session-{n}", 30 * DAY), order_id)
        millis, requests, points = [], [], []
        for _ in range(runs):
            asked = len(stand_in.received) if stand_in is not None else 0
            started = time.perf_counter()
            await gw.outreach.shipments()
            millis.append((time.perf_counter() - started) * 1000)
            sent = stand_in.received[asked:] if stand_in is not None else []
            requests.append(len(sent))
            points.append(sum(requested_cost(parse(r.document), r.variables) for r in sent
                              if isinstance(stand_in, ShopifyStandIn)))
    return millis, requests, points


def measure(label: str, env: Dict[str, str], stand_in: Any, now: datetime, scratch: Path,
            args: argparse.Namespace) -> Tuple[str, Measured]:
    workdir = scratch / label.replace(" ", "-").replace("/", "").replace(",", "")
    workdir.mkdir()
    # a platform's shop keeps the bot's own records in a database of their own
    shop = open_systems({"DATABASE_URL": f"sqlite:///{workdir / 'bot.db'}", **env})
    try:
        return label, asyncio.run(bench_runs(shop, stand_in, now, workdir, args.runs,
                                             args.handoffs))
    finally:
        shop.close()


def render(rows: List[Tuple[str, Measured]], args: argparse.Namespace) -> str:
    lines = ["# The shipments monitor per store backend (bench/bench_monitors.py)", "",
             f"`bot monitor shipments` on the gateway's parts, {args.runs} runs each (the "
             "first sends, the others find every order messaged), with "
             f"{args.handoffs} earlier web chats that verified an order. Shopify and "
             "WooCommerce are the local stand-ins; the delay stands for the network to the "
             "shop, per HTTP request.", "",
             "| backend | runs | first run ms | later runs, median ms | requests per run "
             "| Shopify points per run |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, (millis, requests, points) in rows:
        later = statistics.median(millis[1:]) if len(millis) > 1 else millis[0]
        lines.append(f"| {label} | {len(millis)} | {millis[0]:.0f} | {later:.0f} | "
                     f"{statistics.median(requests):.0f} | {statistics.median(points):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--handoffs", type=int, default=200)
    parser.add_argument("--shopify-delay-ms", type=float, nargs="*", default=[0.0, 80.0])
    parser.add_argument("--woocommerce-delay-ms", type=float, nargs="*", default=[0.0, 80.0])
    parser.add_argument("--no-results-file", action="store_true",
                        help="print only (to compare two versions without keeping either)")
    args = parser.parse_args()
    now = datetime.now(timezone.utc)
    rows: List[Tuple[str, Measured]] = []
    with tempfile.TemporaryDirectory() as temporary:
        scratch = Path(temporary)
        sql_url = f"sqlite:///{scratch / 'store.db'}"
        demo = open_store(sql_url)
        seed_demo_store(demo, now)
        demo.close()
        rows.append(measure("SQL (SQLite)", {"STORE_BACKEND": "sql", "DATABASE_URL": sql_url},
                            None, now, scratch, args))
        platforms: List[Tuple[str, Any, Callable[[Any], Dict[str, str]], List[float]]] = [
            ("Shopify", ShopifyStandIn, shopify_env, args.shopify_delay_ms),
            ("WooCommerce", WooCommerceStandIn, woocommerce_env, args.woocommerce_delay_ms)]
        for name, stand_in_type, env_of, delays in platforms:
            for delay in delays:
                shop = stand_in_type.from_demo(now, scratch, delay=delay / 1000)
                shop.start()
                try:
                    rows.append(measure(f"{name} stand-in, +{delay:.0f} ms/request",
                                        env_of(shop), shop, now, scratch, args))
                finally:
                    shop.stop()
    table = render(rows, args)
    print(table)
    if not args.no_results_file:
        RESULTS.write_text(table)


if __name__ == "__main__":
    main()
