"""KPI figures: how long the dashboard and `bot report` take, and how much memory they
use, on a store's month of history.

It writes a synthetic history into fresh SQLite files (the gateway's records and a
table shaped as Rasa's SQL tracker store keeps its events): `--contacts` contacts a
day over `--days` days, each of 1 to 4 customer messages with a recognised intent,
15 % of them handed to a person (most answered, resolved and rated). Then it times,
each `--repeat` times: reading the history (`load_history`), and computing what the
dashboard shows (its summary: per day, per group, reasons, backlog, breaches) and the
CSV; and how long the gateway's event loop stalls while a summary is computed on a
thread, against in the dashboard's own KPI process.

    .venv/bin/python bench/bench_kpi.py [--days 30] [--contacts 2000] [--repeat 3]

Prints a table and writes bench/results/kpi.md. PYTHONPATH=<another checkout> measures
that checkout's bot.reporting.kpi with the same data.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import platform
import random
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple
from zoneinfo import ZoneInfo

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "kpi.md"
INTENTS = (["order_status"] * 30 + ["delivery_problem"] * 10 + ["return_item"] * 8
           + ["refund_status"] * 8 + ["delivery_time"] * 8 + ["return_policy"] * 6
           + ["cancel_order"] * 5 + ["change_address"] * 4 + ["damaged_item"] * 4
           + ["payment_issue"] * 3 + ["greet"] * 10 + ["product_question"] * 4)
CHANNELS = ["whatsapp"] * 5 + ["webchat"] * 3 + ["telegram"] + ["sms"]
QUEUES = ["logistics", "returns_refunds", "payments_fraud", "general"]


def write_history(gateway: sa.engine.Engine, tracker: sa.engine.Engine, days: int,
                  contacts_per_day: int, now: float, seed: int = 7) -> Tuple[int, int, int]:
    from bot.handoff.store import handoffs
    from bot.handoff.store import metadata as handoff_metadata
    from bot.messaging.records import conversations, turns
    from bot.messaging.records import metadata as records_metadata
    from bot.outreach.tables import metadata as monitor_metadata
    from bot.reporting.kpi import tracker_events

    records_metadata.create_all(gateway)
    handoff_metadata.create_all(gateway)
    monitor_metadata.create_all(gateway)
    tracker_events.metadata.create_all(tracker)
    rng = random.Random(seed)
    customers = max(1, contacts_per_day * days // 3)  # so that some come back
    conversation_rows = {}
    turn_rows: List[Dict[str, Any]] = []
    event_rows: List[Dict[str, Any]] = []
    handoff_rows: List[Dict[str, Any]] = []
    start = now - days * 86400
    for _ in range(contacts_per_day * days):
        at = start + rng.random() * days * 86400
        customer = rng.randrange(customers)
        channel = CHANNELS[customer % len(CHANNELS)]
        conversation = f"{channel}:{customer}"
        conversation_rows[conversation] = {
            "conversation_id": conversation, "connector": channel, "channel": channel,
            "sender": str(customer), "last_inbound_at": at}
        for k in range(rng.randint(1, 4)):
            moment = at + k * 40
            turn_rows.append({"conversation_id": conversation, "role": "customer",
                              "text": "...", "at": moment})
            event_rows.append({"sender_id": conversation, "type_name": "user",
                               "timestamp": moment + 0.5, "intent_name": rng.choice(INTENTS),
                               "data": "{}"})
        if rng.random() < 0.15:
            created = at + 120
            answered = created + rng.expovariate(1 / 600) if rng.random() < 0.9 else None
            resolved = answered + rng.expovariate(1 / 1800) if answered and \
                rng.random() < 0.85 else None
            handoff_rows.append({
                "conversation_id": conversation, "connector": channel, "channel": channel,
                "reason_code": rng.choice(["customer_request", "repeat_contact", "complaint"]),
                "rule": "customer_request", "tier": 1, "queue": rng.choice(QUEUES),
                "priority": 1, "created_at": created, "sla_target_seconds": 900,
                "sla_due_at": created + 900, "first_response_at": answered,
                "claimed_at": answered, "resolved_at": resolved,
                "status": "resolved" if resolved else ("active" if answered else "waiting"),
                "agent": "bench" if answered else None,
                "csat_score": rng.randint(1, 5) if resolved and rng.random() < 0.4 else None,
                "summary": "{}", "slots": "{}", "actions_attempted": "[]",
                "order_snapshot": "null"})
    with gateway.begin() as conn:
        conn.execute(conversations.insert(), list(conversation_rows.values()))
        conn.execute(turns.insert(), turn_rows)
        conn.execute(handoffs.insert(), handoff_rows)
    with tracker.begin() as conn:
        conn.execute(tracker_events.insert(), event_rows)
    return contacts_per_day * days, len(turn_rows), len(handoff_rows)


def timed(work: Callable[[], Any], repeat: int) -> Tuple[List[float], int]:
    """Wall times in ms, and the peak of Python allocations (bytes) of one run."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        work()
        times.append((time.perf_counter() - began) * 1000)
    tracemalloc.start()
    work()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return times, peak


async def tick(done: asyncio.Event, gaps: List[float]) -> None:
    """Every millisecond until done; how long each sleep really took, in ms."""
    last = time.perf_counter()
    while not done.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append((now - last) * 1000)
        last = now


async def loop_stalls(source: Any, figures: Tuple[Any, ...]
                      ) -> List[Tuple[str, float, float, int]]:
    """What a dashboard's summary does to the gateway's event loop: a 1 ms ticker runs
    while the summary is computed on a thread (as `records.read` would) and in the
    dashboard's own process (KpiSource: its first call starts the process, so it is
    warmed up first)."""
    from bot.reporting.dashboard import compute

    loop = asyncio.get_running_loop()
    await source._cached("summary", 1)  # start the KPI process
    results = []
    with ThreadPoolExecutor(1) as thread:
        for where, work in (
                ("on a thread", lambda: loop.run_in_executor(
                    thread, functools.partial(compute, "summary", *figures))),
                ("in the KPI process", lambda: source._cached("summary", figures[-1]))):
            gaps: List[float] = []
            done = asyncio.Event()
            ticker = asyncio.create_task(tick(done, gaps))
            began = time.perf_counter()
            await work()
            wall = (time.perf_counter() - began) * 1000
            done.set()
            await ticker
            results.append((where, wall, max(gaps), sum(1 for g in gaps if g > 20)))
    source.close()
    return results


def commit_of(path: Path) -> str:
    result = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True)
    return result.stdout.strip() or path.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--contacts", type=int, default=2000, help="contacts a day")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from bot.messaging.records import GatewayRecords
    from bot.reporting import kpi
    from bot.reporting.dashboard import KpiSource, compute
    from common.sql import create_store_engine

    code = Path(kpi.__file__).resolve().parents[2]
    zone = ZoneInfo("UTC")
    now = time.time()  # the dashboard's path computes "as of now"
    with tempfile.TemporaryDirectory() as tmp:
        gateway_url, tracker_url = f"sqlite:///{tmp}/gateway.db", f"sqlite:///{tmp}/tracker.db"
        gateway, tracker = create_store_engine(gateway_url), create_store_engine(tracker_url)
        contacts, turn_count, handoff_count = write_history(
            gateway, tracker, args.days, args.contacts, now)
        policy = kpi.load_kpi_policy()
        since = now - args.days * 86400
        history = kpi.load_history(gateway, tracker, since, policy)
        days = kpi.recent_days(now, zone, args.days)
        figures = (gateway_url, tracker_url, policy, "UTC", args.days)
        rows = [
            ("read the history (load_history)",
             *timed(lambda: kpi.load_history(gateway, tracker, since, policy), args.repeat)),
            ("daily KPIs, all groups, from a loaded history",
             *timed(lambda: [kpi.Kpis(history, policy, zone, now).daily(days, d)
                             for d in kpi.DIMENSIONS], args.repeat)),
            ("dashboard summary (GET /api/kpis), read + compute",
             *timed(lambda: compute("summary", *figures), args.repeat)),
            ("CSV (GET /api/kpis.csv), read + compute",
             *timed(lambda: compute("csv", *figures), args.repeat)),
        ]
        records = GatewayRecords(gateway)
        stalls = asyncio.run(loop_stalls(KpiSource(records, gateway_url, tracker_url, policy,
                                                   zone), figures))
        records.close()
    label = commit_of(code)
    head = (f"Run on {platform.machine()}, Python {platform.python_version()}, "
            f"{datetime.now():%Y-%m-%d %H:%M}, code {label}: `bench/bench_kpi.py --days "
            f"{args.days} --contacts {args.contacts} --repeat {args.repeat}`: {contacts} "
            f"contacts, {turn_count} customer messages (each with a Rasa user event), "
            f"{handoff_count} handoffs over {args.days} days, SQLite.")
    table = ["| code | step | median ms | min ms | max ms | peak Python memory MB |",
             "|---|---|---:|---:|---:|---:|"]
    for step, times, peak in rows:
        table.append(f"| {label} | {step} | {statistics.median(times):.0f} | {min(times):.0f} "
                     f"| {max(times):.0f} | {peak / 1e6:.1f} |")
    table += ["", "| code | computed | summary wall ms | longest event-loop stall ms | "
              "event-loop ticks late > 20 ms |", "|---|---|---:|---:|---:|"]
    for where, wall, longest, late in stalls:
        table.append(f"| {label} | {where} | {wall:.0f} | {longest:.0f} | {late} |")
    print(head)
    print("\n".join(table))
    RESULTS.parent.mkdir(exist_ok=True)
    title = "# KPI computation (bench/bench_kpi.py)\n"
    previous = RESULTS.read_text() if RESULTS.exists() else title
    RESULTS.write_text(previous.rstrip() + "\n\n" + head + "\n\n" + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
