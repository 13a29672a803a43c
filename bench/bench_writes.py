"""The guarded write path's cost in the action server: time and SQL statements per
action, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_writes.py [--runs 200] [--postgres postgresql://...]

Runs the custom actions as the action server would (no Rasa, no HTTP) on a freshly
seeded store:
- *cancel question*: "cancel A1004" for a verified customer: fresh read, hold check,
  the question (actions/guarded.py: propose);
- *remedy offer*: "A2xxx arrived damaged, no photo": fraud rules (addresses, claims,
  swapped returns), remedies already given, the choice of remedies;
- *cancel on yes*: the yes to a cancel question on each paid order: write-log claim,
  the write, read-back (carry_out); one per paid order, so fewer runs.
Prints a table and writes bench/results/writes.md. A benchmark, not a test: run it on
an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Tuple

import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rasa_sdk import Action, Tracker  # noqa: E402
from rasa_sdk.executor import CollectingDispatcher  # noqa: E402

from actions.actions import ActionConfirmOffer, ActionResolveRequest  # noqa: E402
from actions.conversation import shared_store  # noqa: E402
from actions.store.seed import seed_demo_store  # noqa: E402
from actions.store.sql import Store, open_store  # noqa: E402
from actions.store.types import OrderStatus  # noqa: E402
from bot.tools.launcher import ensure_database  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "writes.md"
DOMAIN = yaml.safe_load((ROOT / "domain.yml").read_text())
Measured = Tuple[List[float], List[int]]  # milliseconds, statements, per action


def tracker(slots: Dict[str, Any], intent: str, user_turns: int = 1) -> Tracker:
    values: Dict[str, Any] = {name: None for name in DOMAIN["slots"]}
    values.update({"verification_failures": 0.0, **slots})
    latest = {"intent": {"name": intent, "confidence": 0.9}, "entities": [], "text": "",
              "metadata": {}}
    return Tracker("bench", values, latest, [{"event": "user", "text": "", "parse_data": latest}
                                             for _ in range(user_turns)],
                   False, None, {}, "action_listen")


def proven(order_id: str, email: str) -> Dict[str, Any]:
    return {"order_id": order_id, "contact": email, "verified_contact": email,
            "verified_at": time.time()}


async def run(action: Action, state: Tracker) -> List[Dict[str, Any]]:
    return list(await action.run(CollectingDispatcher(), state, DOMAIN))


async def measure(store: Store, calls: List[Callable[[], Awaitable[Any]]]) -> Measured:
    statements = [0]

    def count(*_: Any) -> None:
        statements[0] += 1

    systems = shared_store()
    assert isinstance(systems, Store), "this benchmark counts the SQL store's statements"
    sa.event.listen(systems.engine, "before_cursor_execute", count)
    millis, counts = [], []
    try:
        for call in calls:
            statements[0] = 0
            started = time.perf_counter()
            await call()
            millis.append((time.perf_counter() - started) * 1000)
            counts.append(statements[0])
    finally:
        sa.event.remove(systems.engine, "before_cursor_execute", count)
    return millis, counts


def question_of(events: List[Dict[str, Any]]) -> str:
    return next(e["value"] for e in events if e.get("name") == "pending_offer" and e["value"])


async def bench_backend(url: str, runs: int) -> Dict[str, Measured]:
    os.environ["DATABASE_URL"] = url
    store = open_store(url)
    store.reset_schema()
    seed_demo_store(store, datetime.now(timezone.utc))
    shared_store.cache_clear()
    delivered = next(o for o in store.orders.orders_since(
        datetime(2000, 1, 1, tzinfo=timezone.utc), OrderStatus.DELIVERED)
        if o.order_id >= "A2001" and o.total <= 150)
    paid = [o for o in store.orders.orders_since(datetime(2000, 1, 1, tzinfo=timezone.utc),
                                                 OrderStatus.PAID)]
    cancel_asked = tracker({**proven("A1004", "buyer3@example.com"),
                            "request": "cancel_order"}, "cancel_order")
    damaged = tracker({**proven(delivered.order_id, delivered.customer.email),
                       "request": "damaged_item", "photo": "none"}, "damaged_item")

    async def ask_then_yes(order_id: str, email: str) -> None:
        asked = await run(ActionResolveRequest(), tracker(
            {**proven(order_id, email), "request": "cancel_order"}, "cancel_order"))
        await run(ActionConfirmOffer(), tracker(
            {**proven(order_id, email), "pending_offer": question_of(asked)}, "affirm", 2))

    results = {
        "cancel question": await measure(store, [
            lambda: run(ActionResolveRequest(), cancel_asked) for _ in range(runs)]),
        "remedy offer": await measure(store, [
            lambda: run(ActionResolveRequest(), damaged) for _ in range(runs)]),
        "cancel question + yes": await measure(store, [
            functools.partial(ask_then_yes, o.order_id, o.customer.email) for o in paid]),
    }
    shared_store().close()
    shared_store.cache_clear()
    store.close()
    return results


def render(rows: List[Tuple[str, str, Measured]], runs: int) -> str:
    lines = ["# Guarded write path (bench/bench_writes.py)", "",
             f"Actions run directly on a seeded store; {runs} runs each (the cancel with its "
             "yes: once per paid order).", "",
             "| backend | action | runs | p50 ms | p95 ms | SQL statements |",
             "|---|---|---:|---:|---:|---:|"]
    for backend, action, (millis, counts) in rows:
        p95 = statistics.quantiles(millis, n=20)[18] if len(millis) >= 20 else max(millis)
        lines.append(f"| {backend} | {action} | {len(millis)} | {statistics.median(millis):.1f}"
                     f" | {p95:.1f} | {statistics.median(counts):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--postgres",
                        default="postgresql://postgres@127.0.0.1:5432/bench_writes",
                        help="a PostgreSQL database, created if missing, whose tables this "
                             "resets ('' to skip)")
    args = parser.parse_args()
    rows: List[Tuple[str, str, Measured]] = []
    with tempfile.TemporaryDirectory() as scratch:
        backends = [("SQLite", f"sqlite:///{scratch}/store.db")]
        if args.postgres:
            ensure_database(args.postgres)
            backends.append(("PostgreSQL", args.postgres))
        for name, url in backends:
            for action, measured in asyncio.run(bench_backend(url, args.runs)).items():
                rows.append((name, action, measured))
    table = render(rows, args.runs)
    print(table)
    RESULTS.write_text(table)


if __name__ == "__main__":
    main()
