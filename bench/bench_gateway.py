"""Gateway figures: webhook acknowledgement latency, end-to-end turn latency on a
channel against calling Rasa's REST channel directly, and the gateway's own overhead.

Needs Rasa and the action server running (`make run`, or RASA_URL), except with
--instant-only. It starts a second
gateway (`bot serve`, port 8091) with Telegram pointed at a local server that answers
as the Bot API, so a turn is: POST the update to the webhook -> 200 -> the bot's
reply arrives at sendMessage. Each customer runs the verified order-status
conversation (3 turns, custom actions querying the store).

Rasa's own latency varies by more than the gateway costs, so the overhead is measured
apart: the same runs against an instant bot (bench/instant_bot.py: Rasa's REST channel
answered at once, in a process of its own as Rasa is), where a turn's whole time is the
gateway's work plus the local HTTP hops, and calling the bot straight costs one hop
there and back, as calling Rasa does.

    .venv/bin/python bench/bench_gateway.py [--conversations 50] [--concurrency 1 50]
        [--gateway-env .venv-gateway]
Prints a table and writes bench/results/gateway.md. The gateway runs from
--gateway-env, as `make run` starts it; `--gateway-env .venv` measures it on Rasa's
environment instead (aiohttp 3.9, Python 3.10), for a comparison.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "gateway.md"
TURNS = ("where is my order A1001?", "buyer1@example.com", "thanks")
TOKEN, SECRET = "123:bench", "bench-secret"
# the bench gateway's REST channel token (Rasa's own REST channel takes none)
REST_TOKEN = "bench-rest-token"
REST_AUTH = {"Authorization": f"Bearer {REST_TOKEN}"}
GATEWAY_PORT, API_PORT, INSTANT_BOT_PORT = 8091, 8092, 8093
Handler = Callable[[web.Request], Awaitable[web.Response]]


class BotAPI:
    """Answers sendMessage as Telegram does; wakes whoever waits for a chat's reply."""

    def __init__(self) -> None:
        self.waiting: Dict[str, asyncio.Future[float]] = {}
        self.ids = itertools.count(1)

    async def send_message(self, request: web.Request) -> web.Response:
        form = parse_qs((await request.read()).decode())
        chat = form["chat_id"][0]
        future = self.waiting.pop(chat, None)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())
        return web.json_response({"ok": True, "result": {
            "message_id": next(self.ids), "date": int(time.time()), "text": form["text"][0],
            "chat": {"id": int(chat), "type": "private"}}})

    async def start(self) -> web.AppRunner:
        return await serve_bot_api(self.send_message)


async def bot_status(request: web.Request) -> web.Response:
    return web.Response(text="bot")


async def serve_bot_api(send_message: Handler, bot: Optional[Handler] = None) -> web.AppRunner:
    """On API_PORT: the fake Bot API's sendMessage and, when given, a bot (Rasa's REST
    webhook, and the `/` Rasa's health check asks)."""
    app = web.Application()
    app.router.add_post(f"/bot{TOKEN}/sendMessage", send_message)
    if bot is not None:
        app.router.add_post("/webhooks/rest/webhook", bot)
        app.router.add_get("/", bot_status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", API_PORT).start()
    return runner


def percentile(values: List[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def telegram_conversation(session: aiohttp.ClientSession, api: BotAPI,
                                chat: int, acks: List[float], turns: List[float]) -> None:
    url = f"http://127.0.0.1:{GATEWAY_PORT}/webhooks/telegram"
    for text in TURNS:
        reply = asyncio.get_running_loop().create_future()
        api.waiting[str(chat)] = reply
        update = {"update_id": next(UPDATE_IDS), "message": {
            "message_id": 1, "date": int(time.time()), "text": text,
            "chat": {"id": chat, "type": "private"},
            "from": {"id": chat, "is_bot": False, "first_name": "Bench"}}}
        started = time.perf_counter()
        async with session.post(url, json=update,
                                headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as answer:
            answer.raise_for_status()
        acks.append((time.perf_counter() - started) * 1000)
        turns.append((await asyncio.wait_for(reply, 60) - started) * 1000)
        await asyncio.sleep(0.3)  # the rest of this turn's replies


async def rest_conversation(session: aiohttp.ClientSession, url: str, turns: List[float],
                            texts: Sequence[str] = TURNS,
                            headers: Optional[Dict[str, str]] = None) -> int:
    """One customer's conversation on a REST channel: each turn's latency goes into
    `turns`; returns how many replies came."""
    sender = f"bench-{uuid.uuid4().hex[:10]}"
    replies = 0
    for text in texts:
        started = time.perf_counter()
        async with session.post(url, json={"sender": sender, "message": text},
                                headers=headers) as answer:
            answer.raise_for_status()
            replies += len(await answer.json())
        turns.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.3)  # the same pacing as the channel run
    return replies


# fresh ids each run: the gateway remembers ids it has seen for days (dedupe)
UPDATE_IDS = itertools.count(uuid.uuid4().int % 2**40)


async def run_concurrently(count: int, concurrency: int,
                           make: Callable[[int], Awaitable[object]]) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            await make(index)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - started


async def measure(api: BotAPI, rasa_url: str, conversations: int,
                  concurrency: int) -> Tuple[Dict[str, List[float]], float]:
    """Telegram turns through the gateway, REST turns through the gateway and REST
    turns straight to the bot, taking turns in rounds of `concurrency` conversations:
    the machine's speed drifts by more than the gateway costs, and the drift then falls
    on all three alike (at concurrency 1 they alternate conversation by conversation)."""
    figures: Dict[str, List[float]] = {"ack": [], "telegram": [], "gateway_rest": [],
                                       "rasa": []}
    # new customers every run: Rasa keeps each chat's tracker (and its verified order)
    chats = itertools.count(uuid.uuid4().int % 2**40)
    async with aiohttp.ClientSession() as session:
        for start in range(0, conversations, concurrency):
            size = min(concurrency, conversations - start)
            await run_concurrently(size, size, lambda _: telegram_conversation(
                session, api, next(chats), figures["ack"], figures["telegram"]))
            await run_concurrently(size, size, lambda _: rest_conversation(
                session, f"http://127.0.0.1:{GATEWAY_PORT}/webhooks/rest/webhook",
                figures["gateway_rest"], headers=REST_AUTH))
            await run_concurrently(size, size, lambda _: rest_conversation(
                session, f"{rasa_url}/webhooks/rest/webhook", figures["rasa"]))
    overhead = statistics.median(figures["telegram"]) - statistics.median(figures["rasa"])
    return figures, overhead


def start_gateway(rasa_url: str, environment: Path) -> subprocess.Popen:
    env = {**os.environ, "GATEWAY_PORT": str(GATEWAY_PORT), "GATEWAY_HOST": "127.0.0.1",
           "RASA_URL": rasa_url, "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_SECRET_TOKEN": SECRET,
           "REST_API_TOKEN": REST_TOKEN,
           "TELEGRAM_API_BASE_URL": f"http://127.0.0.1:{API_PORT}"}
    log = (ROOT / "var" / "logs").joinpath("bench_gateway.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(environment / "bin" / "bot"), "serve"], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


@contextlib.asynccontextmanager
async def instant_bot() -> AsyncIterator[str]:
    """bench/instant_bot.py in a process of its own, as Rasa is; yields its URL once it
    answers."""
    process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "instant_bot.py"),
                                str(INSTANT_BOT_PORT)])
    url = f"http://127.0.0.1:{INSTANT_BOT_PORT}"
    try:
        await wait_until_up(f"{url}/", process=process)
        yield url
    finally:
        process.terminate()
        process.wait(10)


async def wait_until_up(url: str, answering: bool = False, seconds: float = 60,
                        process: Optional[subprocess.Popen] = None,
                        log: Optional[Path] = None) -> None:
    """Until `url` answers 200 (or, with `answering`, answers at all). With `process`,
    fails at once when it exits, quoting the tail of its `log`."""
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                tail = log.read_text()[-3000:] if log else ""
                raise SystemExit(f"{url}: its process exited with {process.returncode}:\n{tail}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as answer:
                    if answer.status == 200 or answering:
                        return
            await asyncio.sleep(0.2)
    raise SystemExit(f"{url} did not come up in {seconds:.0f} s: is the system running "
                     "(`make run`)?")


ROW_HEAD = ["| bot | concurrency | webhook ack p50 ms | ack p99 ms | turn via Telegram "
            "p50 ms | p99 ms | REST via gateway p50 ms | p99 ms | REST straight to the bot "
            "p50 ms | p99 ms | Telegram p50 minus straight p50 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]


async def run_against(api: BotAPI, bot_name: str, rasa_url: str,
                      args: argparse.Namespace) -> List[str]:
    rows: List[str] = []
    gateway = start_gateway(rasa_url, ROOT / args.gateway_env)
    try:
        # /health is 503 without the action server, which the instant bot does not need
        await wait_until_up(f"http://127.0.0.1:{GATEWAY_PORT}/health", args.instant_only)
        for concurrency in args.concurrency:
            figures, difference = await measure(api, rasa_url, args.conversations,
                                                concurrency)
            rows.append(
                f"| {bot_name} | {concurrency} | {statistics.median(figures['ack']):.1f} | "
                f"{percentile(figures['ack'], 0.99):.1f} | "
                f"{statistics.median(figures['telegram']):.1f} | "
                f"{percentile(figures['telegram'], 0.99):.1f} | "
                f"{statistics.median(figures['gateway_rest']):.1f} | "
                f"{percentile(figures['gateway_rest'], 0.99):.1f} | "
                f"{statistics.median(figures['rasa']):.1f} | "
                f"{percentile(figures['rasa'], 0.99):.1f} | {difference:.1f} |")
            print(rows[-1], flush=True)
    finally:
        gateway.terminate()
        gateway.wait(10)
    return rows


async def main_async(args: argparse.Namespace) -> List[str]:
    rasa_url = os.environ.get("RASA_URL", "http://127.0.0.1:5005")
    if not args.instant_only:
        await wait_until_up(f"{rasa_url}/")
    api = BotAPI()
    runner = await api.start()
    rows = list(ROW_HEAD)
    print("\n".join(rows), flush=True)
    try:
        if not args.instant_only:
            rows += await run_against(api, "Rasa + actions", rasa_url, args)
        async with instant_bot() as instant_bot_url:
            rows += await run_against(api, "instant bot", instant_bot_url, args)
    finally:
        await runner.cleanup()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--gateway-env", default=".venv-gateway",
                        help="the environment the gateway runs from (default .venv-gateway)")
    parser.add_argument("--instant-only", action="store_true",
                        help="only the instant bot: the gateway's own cost, no Rasa needed")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        "# Gateway latency (bench/bench_gateway.py)\n\n"
        f"{args.conversations} conversations of {len(TURNS)} turns each per row; a turn on "
        "Telegram is measured from the webhook POST to the first reply reaching the Bot "
        "API; 'REST straight to the bot' runs the same conversations against the bot "
        "itself. The three take turns in rounds of the concurrency (at 1, conversation "
        "by conversation). With the instant bot, the difference of medians is the "
        "gateway's own overhead.\n\n"
        + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
