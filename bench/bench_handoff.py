"""Human handoff figures (issue 4): how soon an escalation appears in an open agent
console, and how soon an agent's reply reaches the customer's channel.

It starts a second gateway (`bot serve`, port 8091) with Telegram pointed at a local
server that answers as the Bot API (port 8092), a fresh VAR_DIR and SQLite files (the
demo store seeded, the gateway's records in their own file, as `make run` keeps them),
and an admin AGENT_API_TOKEN. An agent console is connected all along: the events
WebSocket (GET /api/events, first frame {"token": ...}, then {"type": "ready"}).

1. Escalation to console. Each escalation is a new Telegram chat whose message makes
   the bot escalate: t0 = the webhook POST, t1 = the console receiving the
   `handoff.opened` event for "telegram:<chat>". Target: p99 < 200 ms. The times the
   bot's own reply and the queue notice reach the Bot API are recorded too, which shows
   whether the event waits for those sends (and so for Telegram's rate limits).
2. Agent reply to channel. Each of those handoffs is claimed (POST .../claim) and
   answered (POST /api/handoffs/{id}/messages): t0 = the POST, t1 = the Bot API
   receiving sendMessage for that chat with that text; the API call's own response
   time is reported beside it.

The bot is the instant bot by default (a local REST endpoint that answers Rasa's REST
webhook with an escalation payload at once), so the figures are the gateway's own;
--real-bot runs the same against Rasa + actions (`make run`, RASA_URL), the customer
saying "I want to talk to a human". --redis adds runs with REDIS_URL (db 15, flushed),
so events travel through Redis pub/sub. --api-delay-ms makes the fake Bot API answer
sendMessage that much later, as the real one does (arrival is still timed on receipt).

Load: `waves` fires `concurrency` escalations at once, waits for them, then pauses
until Telegram's overall send budget (policy/channels.yml, 30/s) has refilled;
`sustained` keeps `concurrency` in flight back to back, so sends queue behind the
budget (each escalation sends two messages: the bot's reply and the queue notice).

--source LABEL=DIR runs the gateway of other checkouts (a `git archive` of a commit)
instead of this one, to compare versions in one table.

    .venv/bin/python bench/bench_handoff.py [--escalations 100] [--concurrency 1 20]
        [--load waves sustained] [--redis] [--real-bot] [--api-delay-ms 0 100]
        [--source LABEL=DIR ...]
Prints two tables and writes bench/results/handoff.md; what is written by hand below
the notes marker there is kept.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs

import aiohttp
import yaml
from aiohttp import web

# bench/ is on the path when a benchmark runs as a script
from bench_gateway import API_PORT, GATEWAY_PORT, SECRET, TOKEN, serve_bot_api
from redis import asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "handoff.md"
GATEWAY = f"http://127.0.0.1:{GATEWAY_PORT}"
REDIS_URL = "redis://127.0.0.1:6379/15"
REAL_BOT_TEXT = "I want to talk to a human"
INSTANT_BOT_TEXT = "I want to talk to a person"
TARGET_MS = 200.0
# Everything from this line on in the results file is written by hand and kept.
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites the tables -->"
WAIT_SECONDS = 30.0
# Telegram's overall send rate, as the gateway applies it.
OVERALL_PER_SECOND = float(yaml.safe_load((ROOT / "policy" / "channels.yml").read_text())
                           ["rates"]["telegram_overall"]["per_second"])


def escalation_payload(sender: str) -> List[Dict[str, Any]]:
    """What Rasa answers when the bot escalates (see actions/conversation.py)."""
    return [{"recipient_id": sender, "text": "I've passed this to our team"},
            {"recipient_id": sender, "custom": {"handoff": {
                "reason_code": "customer_request", "rule": "customer_request", "tier": 1,
                "queue": "general", "order_id": None,
                "customer": {"name": "", "verified": False, "contact": ""},
                "summary": {"what_happened": "asked", "next": "help", "eta": "soon"},
                "slots": {}, "actions_attempted": []}}}]


async def instant_bot(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response(escalation_payload(body["sender"]))


class BotAPI:
    """Answers sendMessage as Telegram does, `delay` seconds after receiving it; keeps
    when each chat's messages arrived and wakes whoever waits for a given text."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.arrivals: Dict[str, List[float]] = {}
        self.arrived: Dict[str, asyncio.Event] = {}
        self.waiting: Dict[Tuple[str, str], asyncio.Future[float]] = {}
        self.ids = itertools.count(1)

    async def send_message(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        raw = await request.read()
        if request.content_type == "application/json":
            form = {k: str(v) for k, v in json.loads(raw).items()}
        else:
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        chat, text = form["chat_id"], form.get("text", "")
        self.arrivals.setdefault(chat, []).append(arrived)
        self.arrived.setdefault(chat, asyncio.Event()).set()
        future = self.waiting.pop((chat, text), None)
        if future is not None and not future.done():
            future.set_result(arrived)
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"ok": True, "result": {
            "message_id": next(self.ids), "date": int(time.time()), "text": text,
            "chat": {"id": int(chat), "type": "private"}}})

    async def sends(self, chat: str, count: int, timeout: float) -> List[float]:
        """When the chat's first `count` messages arrived (fewer if time ran out)."""
        deadline = time.perf_counter() + timeout
        arrived = self.arrived.setdefault(chat, asyncio.Event())
        while len(self.arrivals.get(chat, [])) < count and time.perf_counter() < deadline:
            arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(arrived.wait(), deadline - time.perf_counter())
        return self.arrivals.get(chat, [])[:count]

    async def start(self) -> web.AppRunner:
        return await serve_bot_api(self.send_message, instant_bot)


class Console:
    """An agent console: the events WebSocket, reading every event as it comes."""

    def __init__(self, session: aiohttp.ClientSession, token: str) -> None:
        self.session = session
        self.token = token
        self.opened: Dict[str, asyncio.Future[Tuple[float, Dict[str, Any]]]] = {}
        self.socket: Optional[aiohttp.ClientWebSocketResponse] = None
        self.reader: Optional[asyncio.Task[None]] = None

    async def connect(self) -> None:
        self.socket = await self.session.ws_connect(f"{GATEWAY}/api/events")
        await self.socket.send_json({"token": self.token})
        ready = await self.socket.receive_json(timeout=10)
        if ready.get("type") != "ready":
            raise SystemExit(f"the events WebSocket answered {ready!r}, not ready")
        self.reader = asyncio.create_task(self._read())

    def expect(self, conversation_id: str) -> asyncio.Future[Tuple[float, Dict[str, Any]]]:
        future: asyncio.Future[Tuple[float, Dict[str, Any]]] = \
            asyncio.get_running_loop().create_future()
        self.opened[conversation_id] = future
        return future

    async def _read(self) -> None:
        assert self.socket is not None
        async for frame in self.socket:
            received = time.perf_counter()
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            event = json.loads(frame.data)
            if event.get("type") != "handoff.opened":
                continue
            record = event["handoff"]
            future = self.opened.pop(record["conversation_id"], None)
            if future is not None and not future.done():
                future.set_result((received, record))

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        if self.socket is not None:
            await self.socket.close()


@dataclass
class Escalation:
    chat: int
    handoff_id: Optional[int] = None
    figures: Dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    """One row's measurements."""

    escalations: List[Escalation] = field(default_factory=list)
    replies: List[Dict[str, float]] = field(default_factory=list)
    missed_events: int = 0
    missed_sends: int = 0
    failed_replies: int = 0
    seconds: float = 0.0


def percentile(values: List[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


# fresh ids each run: the gateway remembers ids it has seen for days (dedupe)
UPDATE_IDS = itertools.count(uuid.uuid4().int % 2**40)


async def escalate(session: aiohttp.ClientSession, api: BotAPI, console: Console,
                   chat: int, text: str, run: Run) -> None:
    conversation = f"telegram:{chat}"
    opened = console.expect(conversation)
    update_id = next(UPDATE_IDS)
    update = {"update_id": update_id, "message": {
        "message_id": update_id % 2**31, "date": int(time.time()), "text": text,
        "chat": {"id": chat, "type": "private"},
        "from": {"id": chat, "is_bot": False, "first_name": "Ann"}}}
    started = time.perf_counter()
    async with session.post(f"{GATEWAY}/webhooks/telegram", json=update,
                            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as answer:
        answer.raise_for_status()
    acked = time.perf_counter()
    escalation = Escalation(chat)
    run.escalations.append(escalation)
    try:
        received, record = await asyncio.wait_for(opened, WAIT_SECONDS)
    except asyncio.TimeoutError:
        console.opened.pop(conversation, None)
        run.missed_events += 1
        return
    escalation.handoff_id = int(record["id"])
    figures = escalation.figures
    figures["ack"] = (acked - started) * 1000
    figures["console"] = (received - started) * 1000
    # the bot's reply and then the queue notice, which may still wait on rate limits
    sends = await api.sends(str(chat), 2, WAIT_SECONDS)
    if len(sends) >= 2:
        figures["bot_reply"] = (sends[0] - started) * 1000
        figures["notice"] = (sends[1] - started) * 1000
    else:
        run.missed_sends += 1


async def reply(session: aiohttp.ClientSession, api: BotAPI, token: str,
                escalation: Escalation, run: Run) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{GATEWAY}/api/handoffs/{escalation.handoff_id}"
    started = time.perf_counter()
    async with session.post(f"{url}/claim", json={"agent": "admin"},
                            headers=headers) as answer:
        answer.raise_for_status()
    claimed = time.perf_counter()
    text = f"Hello, this is Sam from support ({uuid.uuid4().hex[:8]})"
    sent = asyncio.get_running_loop().create_future()
    api.waiting[(str(escalation.chat), text)] = sent
    posted = time.perf_counter()
    async with session.post(f"{url}/messages", json={"text": text},
                            headers=headers) as answer:
        answer.raise_for_status()
        body = await answer.json()
    answered = time.perf_counter()
    try:
        arrived = await asyncio.wait_for(sent, WAIT_SECONDS)
    except asyncio.TimeoutError:
        api.waiting.pop((str(escalation.chat), text), None)
        run.failed_replies += 1
        return
    if [d["status"] for d in body["deliveries"]] != ["sent"]:
        run.failed_replies += 1
    run.replies.append({"claim": (claimed - started) * 1000,
                        "send": (arrived - posted) * 1000,
                        "api": (answered - posted) * 1000})


async def run_load(count: int, concurrency: int, load: str, sends_each: int,
                   pause: float, make: Callable[[int], Awaitable[None]]) -> float:
    """`count` calls of `make`: in waves of `concurrency` at once with a pause that
    refills Telegram's overall budget after each, or `concurrency` in flight."""
    started = time.perf_counter()
    if load == "sustained":
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            async with gate:
                await make(index)

        await asyncio.gather(*(one(i) for i in range(count)))
    else:
        for first in range(0, count, concurrency):
            wave = range(first, min(count, first + concurrency))
            await asyncio.gather(*(make(i) for i in wave))
            await asyncio.sleep(pause + sends_each * len(wave) / OVERALL_PER_SECOND)
    return time.perf_counter() - started


async def measure(session: aiohttp.ClientSession, api: BotAPI, console: Console, token: str,
                  text: str, args: argparse.Namespace, concurrency: int, load: str) -> Run:
    run = Run()
    chats = itertools.count(uuid.uuid4().int % 2**40)
    run.seconds = await run_load(args.escalations, concurrency, load, 2, args.pause,
                                 lambda _: escalate(session, api, console, next(chats),
                                                    text, run))
    # a fresh send budget for the replies
    await asyncio.sleep(1 + 2 * concurrency / OVERALL_PER_SECOND)
    opened = [e for e in run.escalations if e.handoff_id is not None]
    await run_load(len(opened), concurrency, load, 1, args.pause,
                   lambda i: reply(session, api, token, opened[i], run))
    return run


@dataclass(frozen=True)
class Setup:
    code: str
    source: Path
    bot: str
    rasa_url: str
    text: str
    redis: bool


def start_gateway(setup: Setup, token: str, var_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(setup.source),
           "GATEWAY_PORT": str(GATEWAY_PORT), "GATEWAY_HOST": "127.0.0.1",
           "RASA_URL": setup.rasa_url, "TELEGRAM_BOT_TOKEN": TOKEN,
           "TELEGRAM_SECRET_TOKEN": SECRET,
           "TELEGRAM_API_BASE_URL": f"http://127.0.0.1:{API_PORT}",
           "AGENT_API_TOKEN": token, "VAR_DIR": str(var_dir),
           "DATABASE_URL": f"sqlite:///{var_dir / 'store.db'}",
           "GATEWAY_DATABASE_URL": f"sqlite:///{var_dir / 'gateway.db'}",
           "REDIS_URL": REDIS_URL if setup.redis else "", "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run([sys.executable, "-m", "bot", "seed", "--database-url",
                    env["DATABASE_URL"]], cwd=setup.source, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    log = var_dir / "gateway.log"
    return subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=setup.source, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


async def wait_for_gateway(gateway: subprocess.Popen, log: Path) -> None:
    """Up when /health answers at all: without the action server it says 503."""
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if gateway.poll() is not None:
                raise SystemExit(f"the gateway stopped during start-up; see {log}")
            try:
                async with session.get(f"{GATEWAY}/health") as answer:
                    if (await answer.json()).get("gateway"):
                        return
            except (aiohttp.ClientError, ValueError):
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"the gateway did not start; see {log}")


async def wait_for_bot(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(f"{url}/", timeout=aiohttp.ClientTimeout(total=3)) as answer:
                if answer.status == 200:
                    return
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
    raise SystemExit(f"no Rasa at {url}: start the system with `make run` first")


async def flush_redis() -> None:
    redis = aioredis.from_url(REDIS_URL)
    try:
        await redis.flushdb()
    finally:
        await redis.close()


def ms(values: List[float], share: Optional[float] = None) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values) if share is None else percentile(values, share):.1f}"


ESCALATION_HEAD = [
    "| gateway code | bot | Redis | Bot API answers after ms | load | concurrency | handoffs | "
    "escalation → console p50 ms | p95 ms | p99 ms | max ms | p99 < 200 ms | "
    "bot's reply at Bot API p50 ms | queue notice at Bot API p50 ms | p99 ms | "
    "console event after the notice p50 ms | "
    "webhook ack p50 ms | missed |",
    "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
REPLY_HEAD = [
    "| gateway code | bot | Redis | Bot API answers after ms | load | concurrency | replies | "
    "reply → sendMessage p50 ms | p95 ms | p99 ms | API response p50 ms | p95 ms | p99 ms | "
    "claim p50 ms | failed |",
    "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]


def rows_for(setup: Setup, delay_ms: float, load: str, concurrency: int,
             run: Run) -> Tuple[str, str]:
    def column(name: str) -> List[float]:
        return [e.figures[name] for e in run.escalations if name in e.figures]

    console = column("console")
    after = [e.figures["console"] - e.figures["notice"] for e in run.escalations
             if "notice" in e.figures]
    head = (f"| {setup.code} | {setup.bot} | {'yes' if setup.redis else 'no'} | "
            f"{delay_ms:g} | {load} | {concurrency} |")
    met = "–" if not console else ("yes" if percentile(console, 0.99) < TARGET_MS else "**no**")
    escalation_row = (
        f"{head} {len(console)} | {ms(console)} | {ms(console, 0.95)} | {ms(console, 0.99)} | "
        f"{max(console) if console else 0:.1f} | {met} | {ms(column('bot_reply'))} | "
        f"{ms(column('notice'))} | {ms(column('notice'), 0.99)} | {ms(after)} | "
        f"{ms(column('ack'))} | {run.missed_events + run.missed_sends} |")

    def reply_column(name: str) -> List[float]:
        return [r[name] for r in run.replies]

    send, api = reply_column("send"), reply_column("api")
    reply_row = (
        f"{head} {len(send)} | {ms(send)} | {ms(send, 0.95)} | {ms(send, 0.99)} | "
        f"{ms(api)} | {ms(api, 0.95)} | {ms(api, 0.99)} | {ms(reply_column('claim'))} | "
        f"{run.failed_replies} |")
    return escalation_row, reply_row


async def run_setup(api: BotAPI, setup: Setup, args: argparse.Namespace,
                    escalation_rows: List[str], reply_rows: List[str]) -> None:
    token = secrets.token_urlsafe(24)
    var_dir = Path(tempfile.mkdtemp(prefix="bench_handoff-"))
    if setup.redis:
        await flush_redis()
    gateway = start_gateway(setup, token, var_dir)
    failed = True
    try:
        await wait_for_gateway(gateway, var_dir / "gateway.log")
        async with aiohttp.ClientSession() as session:
            console = Console(session, token)
            await console.connect()
            try:
                for delay_ms in args.api_delay_ms:
                    api.delay = delay_ms / 1000
                    for load in args.load:
                        for concurrency in args.concurrency:
                            run = await measure(session, api, console, token, setup.text,
                                                args, concurrency, load)
                            escalation_row, reply_row = rows_for(setup, delay_ms, load,
                                                                 concurrency, run)
                            escalation_rows.append(escalation_row)
                            reply_rows.append(reply_row)
                            print(escalation_row, flush=True)
                            print(reply_row, flush=True)
                            await asyncio.sleep(1.5)  # a full send budget for the next row
            finally:
                await console.close()
        failed = False
    finally:
        gateway.terminate()
        gateway.wait(10)
        api.delay = 0.0
        if failed:
            print(f"gateway log kept in {var_dir / 'gateway.log'}", file=sys.stderr)
        else:
            shutil.rmtree(var_dir, ignore_errors=True)


def sources(specs: List[str]) -> List[Tuple[str, Path]]:
    """`LABEL=DIR` (or just DIR): the checkouts whose gateway is measured."""
    found = []
    for spec in specs:
        label, _, directory = spec.rpartition("=")
        path = Path(directory).resolve()
        if not (path / "bot" / "gateway.py").is_file():
            raise SystemExit(f"{path} is not a checkout of this project")
        found.append((label or path.name, path))
    return found


async def main_async(args: argparse.Namespace) -> Tuple[List[str], List[str]]:
    setups = []
    for code, source in sources(args.source):
        setups.append(Setup(code, source, "instant bot", f"http://127.0.0.1:{API_PORT}",
                            INSTANT_BOT_TEXT, False))
        if args.real_bot:
            rasa_url = os.environ.get("RASA_URL", "http://127.0.0.1:5005").rstrip("/")
            await wait_for_bot(rasa_url)
            setups.append(Setup(code, source, "Rasa + actions", rasa_url, REAL_BOT_TEXT,
                                False))
    if args.redis:
        setups += [replace(s, redis=True) for s in list(setups)]
    api = BotAPI()
    runner = await api.start()
    escalation_rows, reply_rows = list(ESCALATION_HEAD), list(REPLY_HEAD)
    print("\n".join(ESCALATION_HEAD + REPLY_HEAD), flush=True)
    try:
        for setup in setups:
            await run_setup(api, setup, args, escalation_rows, reply_rows)
    finally:
        await runner.cleanup()
    return escalation_rows, reply_rows


def notes_kept() -> str:
    """What was written by hand below NOTES_MARKER in the results file, kept."""
    if not RESULTS.exists():
        return ""
    text = RESULTS.read_text()
    return text[text.index(NOTES_MARKER):] if NOTES_MARKER in text else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--escalations", type=int, default=100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--load", nargs="+", choices=("waves", "sustained"),
                        default=["waves"])
    parser.add_argument("--pause", type=float, default=0.3,
                        help="seconds between waves, besides the send budget's refill")
    parser.add_argument("--api-delay-ms", type=float, nargs="+", default=[0.0],
                        help="how long the fake Bot API takes to answer sendMessage")
    parser.add_argument("--redis", action="store_true",
                        help=f"also run with REDIS_URL={REDIS_URL} (flushed first)")
    parser.add_argument("--real-bot", action="store_true",
                        help="also run against Rasa + actions (make run, RASA_URL)")
    parser.add_argument("--source", nargs="+", default=[f"this checkout={ROOT}"],
                        metavar="LABEL=DIR",
                        help="run the gateway from these checkouts (e.g. a `git archive` "
                             "of a commit) to compare them; default: this one")
    args = parser.parse_args()
    escalation_rows, reply_rows = asyncio.run(main_async(args))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        "# Human handoff latency (bench/bench_handoff.py)\n\n"
        f"Run on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}: "
        f"`{' '.join(['bench/bench_handoff.py', *sys.argv[1:]])}`. "
        f"{args.escalations} escalations per row, each a new Telegram chat whose message "
        "makes the bot escalate. Escalation → console: from the webhook POST to the "
        "`handoff.opened` event on an open console's WebSocket (target p99 < "
        f"{TARGET_MS:.0f} ms); the Bot API columns are when the bot's reply and the queue "
        "notice reached the fake Bot API, from the same POST; 'after the notice' is the "
        "event's time minus the notice's (negative: the console saw the handoff first). "
        "Reply → sendMessage: from POST /api/handoffs/{id}/messages to the Bot API "
        "receiving that text for that chat. 'waves': `concurrency` at once, then a pause "
        "that refills Telegram's overall send budget (30/s); 'sustained': `concurrency` "
        "in flight back to back.\n\n"
        "## Escalation → handoff in an open console\n\n" + "\n".join(escalation_rows)
        + "\n\n## Agent reply → the channel's send call\n\n" + "\n".join(reply_rows)
        + "\n\n" + (notes_kept() or f"{NOTES_MARKER}\n"))


if __name__ == "__main__":
    main()
