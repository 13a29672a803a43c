"""Turn latency of whole conversations, through the gateway and straight to Rasa.

Needs the system running (`make run`). Each simulated customer runs the verified
order-status conversation (3 turns, custom actions querying the store). The gateway's
REST channel takes REST_API_TOKEN, else the token `make run` keeps in var/.

    .venv/bin/python bench/bench_turns.py [--conversations 40] [--concurrency 1 10]
Prints a table and writes bench/results/turns.md.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import aiohttp

TURNS = ("where is my order A1001?", "buyer1@example.com", "thanks")
TARGETS = {
    "gateway (8080)": "http://127.0.0.1:8080/webhooks/rest/webhook",
    "rasa REST (5005)": "http://127.0.0.1:5005/webhooks/rest/webhook",
}
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "turns.md"


def auth(url: str) -> Optional[Dict[str, str]]:
    """The gateway's REST channel wants its token; Rasa's own takes none."""
    if ":8080/" not in url:
        return None
    token = os.environ.get("REST_API_TOKEN") or \
        (ROOT / "var" / "rest-api.token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


async def conversation(session: aiohttp.ClientSession, url: str, latencies: List[float]) -> None:
    sender = f"bench-{uuid.uuid4().hex[:10]}"
    for text in TURNS:
        started = time.perf_counter()
        async with session.post(url, json={"sender": sender, "message": text},
                                headers=auth(url)) as response:
            await response.json()
            response.raise_for_status()
        latencies.append((time.perf_counter() - started) * 1000)


async def measure(url: str, conversations: int, concurrency: int) -> dict:
    latencies: List[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession) -> None:
        async with gate:
            await conversation(session, url, latencies)

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await asyncio.gather(*(one(session) for _ in range(conversations)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"p50": statistics.median(ordered), "p99": ordered[int(len(ordered) * 0.99) - 1],
            "turns_per_s": len(ordered) / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=40)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args()
    rows = ["| target | concurrency | p50 ms | p99 ms | turns/s |", "|---|---:|---:|---:|---:|"]
    for concurrency in args.concurrency:
        for name, url in TARGETS.items():
            figures = asyncio.run(measure(url, args.conversations, concurrency))
            rows.append(f"| {name} | {concurrency} | {figures['p50']:.1f} | {figures['p99']:.1f}"
                        f" | {figures['turns_per_s']:.1f} |")
            print(rows[-1], flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("# Turn latency (bench/bench_turns.py)\n\n"
                       f"{args.conversations} conversations of {len(TURNS)} turns each.\n\n"
                       + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
