"""Our bot against a stock Rasa assistant, in one run, on this machine, with one load
generator:

  (a) stock      the assistant `rasa init` creates (moodbot), on Rasa's REST channel;
  (b) ours       our model alone, on Rasa's REST channel, with our action server;
  (c) full stack the same Rasa and action server behind the gateway (`bot serve`): a
                 customer's message is a Telegram webhook POST, a turn ends when the
                 reply reaches a local stand-in for the Bot API (bench_gateway.BotAPI);
  (c, REST)      for reference: the same stack through the gateway's REST channel,
                 which has no provider rate limits.
  (c, 2+2)       the full stack in the production shape (`bot run-prod`: 2 Rasa
                 instances, 2 gateways, PostgreSQL and Redis) through the balancer's
                 REST channel: what the second core brings.

Each customer runs a 3-turn conversation: (b) and (c) the verified order-status one
(bench_gateway.TURNS: the custom actions query the demo store, SQLite, seeded fresh),
(a) "hello", "I am sad", "yes". A customer pauses 0.3 s between turns (as in
bench_gateway.py); each target is warmed up first. For each target and concurrency:
turn latency p50/p99 and turns/s; then each process's memory (VmRSS with its children)
after its load, the CPU each process spent per turn, and the training time of (a) and (b).
With --profile, one more (c) run at the highest concurrency is sampled by py-spy
(Rasa, the gateway and the action server) and summarised.

Nothing here needs `make run`; every process is started on free ports and stopped at the
end (also on Ctrl-C). Temporary files: var/bench/stock/ (stock project, models, logs,
stores).

    .venv/bin/python bench/bench_stock.py [--levels 1,10,50] [--conversations N]
        [--skip-train] [--profile] [--targets a,b,c,p]
Prints a table and writes bench/results/stock.md (keeping its "## Notes" section).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Awaitable, Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs

import aiohttp
import bench_gateway as gw
import yaml
from aiohttp import web

from bot.tools.launcher import consecutive_free_ports, newest_model

ROOT = gw.ROOT
WORK = ROOT / "var" / "bench" / "stock"
PROJECT = WORK / "project"
OURS_MODELS = WORK / "ours-models"
RUN = WORK / "run"
LOGS = WORK / "logs"
TRAIN_TIMES = WORK / "train_times.json"
RESULTS = ROOT / "bench" / "results" / "stock.md"
BIN = Path(sys.executable).parent
RASA = str(BIN / "rasa")
PY_SPY = BIN / "py-spy"
# the secret Rasa sends our action server (endpoints.yml)
ACTION_SERVER_TOKEN = "bench-action-token"
STOCK_TURNS = ("hello", "I am sad", "yes")
PAUSE_SECONDS = 0.3  # between a customer's turns, as bench_gateway.py
PROFILE_RATE = 100  # py-spy samples per second
# frames that only carry the work of others: entry points, threads, the event loop
PLUMBING = ("threading.py", "runpy.py", "asyncio/events.py", "asyncio/base_events.py",
            "asyncio/runners.py", "concurrent/futures/thread.py", "aiohttp/web.py",
            "sanic/server/runners.py", "rasa/__main__.py", "rasa/cli/", "bot/cli.py",
            "bot/__main__.py")
# leaves that are a thread waiting for work or the event loop inside its C code (uvloop),
# which py-spy's idle detection does not always tell apart from work
WAITING = ("_worker (concurrent/futures/thread.py)", "serve (sanic/server/runners.py)",
           "select (selectors.py)", "wait (threading.py)", "get (queue.py)")
NOTES_HEADING = "## Notes"
DEFAULT_NOTES = (f"{NOTES_HEADING}\n\n(Hand-written; bench/bench_stock.py keeps this section "
                 "when it rewrites the file.)\n")


def free_port() -> int:
    return consecutive_free_ports(1)


def default_conversations(concurrency: int) -> int:
    """20 at 1, 50 at 10, 100 at 50: enough turns for a p99 at every level."""
    return min(max(20, 5 * concurrency), max(100, 2 * concurrency))


# --- processes ------------------------------------------------------------------------


@dataclass
class Processes:
    """Everything this run started, stopped on the way out whatever happens."""

    started: Dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, command: List[str], cwd: Path,
              env: Dict[str, str]) -> subprocess.Popen:
        LOGS.mkdir(parents=True, exist_ok=True)
        with self.log(name).open("w") as log:
            process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.started[name] = process
        return process

    @staticmethod
    def log(name: str) -> Path:
        return LOGS / f"{name.replace(' ', '_')}.log"

    async def wait_ready(self, url: str, name: str) -> None:
        """Until `url` answers 200; fails at once, with its log's tail, if the process
        started as `name` exits first."""
        await gw.wait_until_up(url, seconds=300, process=self.started[name],
                               log=self.log(name))

    def adopt(self, name: str, process: subprocess.Popen) -> None:
        self.started[name] = process

    def stop(self, *names: str, sig: int = signal.SIGTERM) -> None:
        """As bot/tools/launcher.py's stop(): SIGTERM to each process group, SIGKILL after
        15 s. A process started in our own group (bench_gateway.start_gateway) is
        signalled alone."""
        chosen = {name: self.started.pop(name) for name in (names or list(self.started))
                  if name in self.started}
        for process in chosen.values():
            _signal(process, sig)
        deadline = time.monotonic() + 15
        for process in chosen.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(process, signal.SIGKILL)
                process.wait(5)


def _signal(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, sig)
        else:
            os.kill(process.pid, sig)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def descendants(pid: int) -> List[int]:
    """pid and every process below it (from /proc/*/stat's parent ids)."""
    parents: Dict[int, List[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def rss_mb(pid: int) -> float:
    """VmRSS of pid and its children, MiB."""
    total_kb = 0
    for each in descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def busy_seconds() -> float:
    """CPU time the whole machine spent not idle so far (/proc/stat, all cores)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of pid and its children so far."""
    ticks = 0
    for each in descendants(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def child_env(**extra: str) -> Dict[str, str]:
    return {**os.environ, "RASA_TELEMETRY_ENABLED": "false", "REDIS_URL": "", **extra}


# --- training -------------------------------------------------------------------------


def load_train_times() -> Dict[str, Dict[str, str | float]]:
    if TRAIN_TIMES.exists():
        loaded: Dict[str, Dict[str, str | float]] = json.loads(TRAIN_TIMES.read_text())
        return loaded
    return {}


def timed_train(name: str, command: List[str], cwd: Path) -> float:
    print(f"training {name}: {' '.join(command)}", flush=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (LOGS / f"train_{name}.log").open("w") as log:
        # its own session, so a Ctrl-C here stops it too (start_new_session below)
        process = subprocess.Popen(command, cwd=cwd, env=child_env(), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait()
        finally:
            _signal(process, signal.SIGTERM)
    if code != 0:
        raise SystemExit(f"training {name} failed ({code}); see {LOGS / f'train_{name}.log'}")
    seconds = time.perf_counter() - started
    times = load_train_times()
    times[name] = {"seconds": round(seconds, 1), "date": datetime.now().isoformat("T", "seconds")}
    TRAIN_TIMES.write_text(json.dumps(times, indent=1))
    print(f"trained {name} in {seconds:.0f} s", flush=True)
    return seconds


def ensure_stock_project() -> None:
    """The files `rasa init --no-prompt --init-dir` writes. `rasa init --no-prompt` also
    trains at once, untimed, so the same scaffold is copied by Rasa's own function and
    `rasa train` is timed afterwards."""
    if (PROJECT / "domain.yml").exists():
        return
    PROJECT.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", "import sys; from rasa.cli.scaffold import "
                    "create_initial_project; create_initial_project(sys.argv[1])",
                    str(PROJECT)], check=True, env=child_env())
    print(f"created the stock project (rasa init's scaffold) in {PROJECT}", flush=True)


def prepare_models(args: argparse.Namespace) -> Tuple[Optional[Path], Optional[Path]]:
    stock = ours = None
    if "a" in args.targets:
        ensure_stock_project()
        stock = newest_model(PROJECT / "models")
        if stock is None or not args.skip_train:
            timed_train("stock", [RASA, "train", "--force"], PROJECT)
            stock = newest_model(PROJECT / "models")
    if {"b", "c"} & set(args.targets):
        ours = newest_model(OURS_MODELS) or newest_model(ROOT / "models")
        if ours is None or not args.skip_train:
            timed_train("ours", [RASA, "train", "--out", str(OURS_MODELS), "--force"], ROOT)
            ours = newest_model(OURS_MODELS)
    return stock, ours


def stock_custom_actions() -> List[str]:
    domain = yaml.safe_load((PROJECT / "domain.yml").read_text()) or {}
    return [str(a) for a in domain.get("actions") or [] if not str(a).startswith("utter_")]


# --- the load generator ---------------------------------------------------------------


@dataclass
class Run:
    """One target at one concurrency."""

    target: str
    concurrency: int
    conversations: int
    turns_ms: List[float] = field(default_factory=list)
    replies: int = 0  # messages the bot sent
    errors: List[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu: Dict[str, float] = field(default_factory=dict)  # process -> CPU seconds
    other_cores: float = 0.0  # CPU of everything else on the machine, in cores

    @property
    def p50(self) -> float:
        return statistics.median(self.turns_ms) if self.turns_ms else float("nan")

    @property
    def p99(self) -> float:
        return gw.percentile(self.turns_ms, 0.99) if self.turns_ms else float("nan")

    @property
    def throughput(self) -> float:
        return len(self.turns_ms) / self.seconds if self.seconds else 0.0

    def row(self) -> str:
        replies = self.replies / len(self.turns_ms) if self.turns_ms else float("nan")
        return (f"| {self.target} | {self.concurrency} | {self.p50:.0f} | {self.p99:.0f} | "
                f"{self.throughput:.1f} | {self.conversations} | {replies:.1f} | "
                f"{len(self.errors)} | {self.other_cores:.2f} |")


TABLE_HEAD = ["| target | concurrency | p50 ms | p99 ms | turns/s | conversations | "
              "replies/turn | failed conversations | other CPU (cores) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]


async def rest_conversation(session: aiohttp.ClientSession, url: str, texts: Sequence[str],
                            run: Run, headers: Optional[Dict[str, str]] = None) -> None:
    run.replies += await gw.rest_conversation(session, url, run.turns_ms, texts, headers)


class TelegramAPI(gw.BotAPI):
    """bench_gateway's Bot API stand-in, counting the messages sent to each chat."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: Counter[str] = Counter()

    async def send_message(self, request: web.Request) -> web.Response:
        self.sent[parse_qs((await request.read()).decode())["chat_id"][0]] += 1
        return await super().send_message(request)  # aiohttp keeps the body read


Conversation = Callable[[aiohttp.ClientSession, Run], Awaitable[None]]


async def measure(target: str, conversation: Conversation, concurrency: int,
                  conversations: int, watched: Dict[str, int]) -> Run:
    """`conversations` customers, at most `concurrency` at once (bench_gateway's
    run_concurrently); a failed conversation is counted, not fatal."""
    run = Run(target, concurrency, conversations)

    async def guarded(session: aiohttp.ClientSession) -> None:
        try:
            await conversation(session, run)
        except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError) as error:
            run.errors.append(f"{type(error).__name__}: {error}")

    before = {name: cpu_seconds(pid) for name, pid in watched.items()}
    own, machine = time.process_time(), busy_seconds()
    async with aiohttp.ClientSession() as session:
        run.seconds = await gw.run_concurrently(conversations, concurrency,
                                                lambda _: guarded(session))
    run.cpu = {name: cpu_seconds(pid) - before[name] for name, pid in watched.items()}
    run.cpu["load generator"] = time.process_time() - own
    run.other_cores = max(0.0, busy_seconds() - machine - sum(run.cpu.values())) / run.seconds
    if run.errors:
        print(f"  {len(run.errors)} conversations failed, e.g. {run.errors[0]}", flush=True)
    return run


async def measure_levels(target: str, conversation: Conversation, args: argparse.Namespace,
                         watched: Dict[str, int]) -> List[Run]:
    # warm-up: the first turns load lazily (TensorFlow graphs, caches, connections)
    await measure(target, conversation, 5, 10, {})
    runs = []
    for concurrency in args.levels:
        count = args.conversations or default_conversations(concurrency)
        runs.append(await measure(target, conversation, concurrency, count, watched))
        print(runs[-1].row(), flush=True)
    return runs


# --- profile --------------------------------------------------------------------------


@dataclass
class Profile:
    process: str
    seconds: float
    samples: int = 0
    lines: List[str] = field(default_factory=list)


def start_py_spy(processes: Processes, name: str, pid: int) -> Path:
    out = LOGS / f"profile_{name.replace(' ', '_')}.txt"
    out.unlink(missing_ok=True)
    processes.start(f"py-spy {name}", [str(PY_SPY), "record", "--pid", str(pid), "--rate",
                                       str(PROFILE_RATE), "--nolineno", "--format", "raw",
                                       "--output", str(out)], ROOT, child_env())
    return out


def short(frame: str) -> str:
    """'func (/…/site-packages/rasa/core/x.py)' -> 'func (rasa/core/x.py)'."""
    name, _, path = frame.rpartition(" (")
    path = path.rstrip(")")
    for marker in ("site-packages/", "lib/python3.10/", f"{ROOT}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def package(frame: str) -> str:
    path = short(frame).rpartition(" (")[2].rstrip(")")
    top = path.split("/", 1)[0]
    return top[:-3] if top.endswith(".py") else top


def summarise(profile: Profile, raw: Path, top: int = 12) -> None:
    """Top functions by share of samples in which they are on the stack (own + children),
    leaving out the plumbing (PLUMBING, `<module>`) and what is on nearly every stack,
    at most 3 per folder; then own time by function and by package."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    waiting = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";") if f]
        if frames[-1] in WAITING:
            waiting += count
            continue
        profile.samples += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
        by_package[package(stack.split(";")[-1])] += count
    total = profile.samples or 1
    busy = profile.samples / (profile.seconds * PROFILE_RATE)
    profile.lines.append(f"**{profile.process}**: {profile.samples} samples of Python work "
                         f"in {profile.seconds:.1f} s (≈{busy:.0%} of one core at "
                         f"{PROFILE_RATE} Hz), and {waiting} more of a thread waiting for "
                         "work or in the event loop's C code, left out")
    profile.lines += ["", "| function (own + children) | share |", "|---|---:|"]
    shown: List[Tuple[str, int]] = []
    per_package: Counter[str] = Counter()
    for frame, count in inclusive.most_common():
        if (len(shown) == top or count / total >= 0.9 or frame.startswith("<module> ")
                or any(p in frame for p in PLUMBING)):
            continue
        folder = frame.rpartition(" (")[2].rpartition("/")[0]
        per_package[folder] += 1
        if per_package[folder] <= 3:  # the outer frames of a deep library call
            shown.append((frame, count))
    profile.lines += [f"| `{f}` | {c / total:.0%} |" for f, c in shown]
    profile.lines += ["", "| function (own) | share |", "|---|---:|"]
    profile.lines += [f"| `{f}` | {c / total:.0%} |" for f, c in own.most_common(top)]
    packages = ", ".join(f"{p} {c / total:.0%}" for p, c in by_package.most_common(8))
    profile.lines += ["", f"Own time by package: {packages}.", ""]


async def profiled_run(processes: Processes, targets: Dict[str, int],
                       conversation: Conversation, concurrency: int,
                       conversations: int) -> Tuple[Optional[Run], List[Profile], str]:
    if not PY_SPY.exists():
        return None, [], (f"py-spy is not installed ({PY_SPY}): "
                          ".venv/bin/pip install py-spy (see requirements.txt)")
    outputs = {name: start_py_spy(processes, name, pid) for name, pid in targets.items()}
    await asyncio.sleep(1.5)  # attached
    failed = [n for n in targets if processes.started[f"py-spy {n}"].poll() is not None]
    started = time.perf_counter()
    run = await measure("(c) under py-spy", conversation, concurrency, conversations, {})
    seconds = time.perf_counter() - started
    for name in targets:  # SIGINT: py-spy writes its samples and exits
        processes.stop(f"py-spy {name}", sig=signal.SIGINT)
    profiles, problems = [], []
    for name, out in outputs.items():
        if name in failed or not out.exists() or not out.stat().st_size:
            log = (LOGS / f"py-spy_{name.replace(' ', '_')}.log").read_text()[-500:]
            problems.append(f"py-spy could not sample {name} (ptrace not permitted?): {log}")
            continue
        profile = Profile(name, seconds)
        summarise(profile, out)
        profiles.append(profile)
    return run, profiles, "\n".join(problems)


# --- the run --------------------------------------------------------------------------


@dataclass
class Results:
    runs: List[Run] = field(default_factory=list)
    memory: Dict[str, float] = field(default_factory=dict)
    profiles: List[Profile] = field(default_factory=list)
    profile_run: Optional[Run] = None
    profile_problem: str = ""
    stock_model: str = ""
    ours_model: str = ""


async def run_stock(processes: Processes, model: Path, args: argparse.Namespace,
                    results: Results) -> None:
    port = free_port()
    env = child_env()
    if stock_custom_actions():
        action_port = free_port()
        endpoints = WORK / "stock-endpoints.yml"
        endpoints.write_text(f"action_endpoint:\n  url: http://127.0.0.1:{action_port}/webhook\n")
        processes.start("stock action server", [RASA, "run", "actions", "--port",
                                                str(action_port)], PROJECT, env)
        extra = ["--endpoints", str(endpoints)]
    else:
        print("stock project: no custom actions, so no action server", flush=True)
        extra = []
    rasa = processes.start("rasa stock", [RASA, "run", "--model", str(model), "--port",
                                          str(port), "--interface", "127.0.0.1",
                                          "--credentials", "credentials.yml", *extra],
                           PROJECT, env)
    await processes.wait_ready(f"http://127.0.0.1:{port}/", "rasa stock")
    url = f"http://127.0.0.1:{port}/webhooks/rest/webhook"
    watched = {"rasa stock": rasa.pid}
    results.runs += await measure_levels(
        "(a) stock, Rasa REST", lambda s, r: rest_conversation(s, url, STOCK_TURNS, r),
        args, watched)
    results.memory["rasa (a) stock"] = rss_mb(rasa.pid)
    processes.stop()


async def run_ours(processes: Processes, model: Path, args: argparse.Namespace,
                   results: Results) -> None:
    from actions.store.seed import seed_demo_store
    from actions.store.sql import open_store

    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    store_url = f"sqlite:///{RUN / 'store.db'}"
    store = open_store(store_url)
    print(f"demo store seeded: {seed_demo_store(store)} orders ({store_url})", flush=True)
    store.close()
    rasa_port, action_port = free_port(), free_port()
    gw.GATEWAY_PORT, gw.API_PORT = free_port(), free_port()  # read by bench_gateway's helpers
    rasa_url = f"http://127.0.0.1:{rasa_port}"
    settings = {"VAR_DIR": str(RUN), "DATABASE_URL": store_url,
                "GATEWAY_DATABASE_URL": f"sqlite:///{RUN / 'gateway.db'}",
                "ACTION_SERVER_URL": f"http://127.0.0.1:{action_port}/webhook",
                "RASA_TRACKER_DB": str(RUN / "rasa_tracker.db"),
                "RASA_TELEMETRY_ENABLED": "false", "REDIS_URL": "",
                "ACTION_SERVER_TOKEN": ACTION_SERVER_TOKEN}
    os.environ.update(settings)  # bench_gateway.start_gateway passes os.environ on
    env = child_env()
    actions = processes.start("action server", [str(BIN / "python"), "-m", "actions.server",
                                                "--actions", "actions", "--port",
                                                str(action_port)], ROOT, env)
    rasa = processes.start("rasa ours", [RASA, "run", "--model", str(model), "--port",
                                         str(rasa_port), "--interface", "127.0.0.1",
                                         "--endpoints", "endpoints.yml", "--credentials",
                                         "credentials.yml"], ROOT, env)
    await processes.wait_ready(f"http://127.0.0.1:{action_port}/health", "action server")
    await processes.wait_ready(f"{rasa_url}/", "rasa ours")
    watched = {"rasa ours": rasa.pid, "action server": actions.pid}

    rasa_rest = f"{rasa_url}/webhooks/rest/webhook"
    if "b" in args.targets:
        results.runs += await measure_levels(
            "(b) ours, Rasa REST", lambda s, r: rest_conversation(s, rasa_rest, gw.TURNS, r),
            args, watched)
        results.memory["rasa (b) ours, after (b)"] = rss_mb(rasa.pid)
    if "c" not in args.targets:
        results.memory["action server"] = rss_mb(actions.pid)
        return
    api = TelegramAPI()
    runner = await api.start()
    try:
        processes.adopt("gateway", gw.start_gateway(rasa_url, gw.ROOT / ".venv-gateway"))
        gateway = processes.started["gateway"]
        await gw.wait_until_up(f"http://127.0.0.1:{gw.GATEWAY_PORT}/health")
        watched["gateway"] = gateway.pid
        chats = iter(range(10**9 + uuid.uuid4().int % 10**9, 10**12))

        async def telegram(session: aiohttp.ClientSession, run: Run) -> None:
            chat = next(chats)
            try:
                await gw.telegram_conversation(session, api, chat, [], run.turns_ms)
            finally:
                run.replies += api.sent.pop(str(chat), 0)

        results.runs += await measure_levels("(c) full stack, Telegram", telegram, args,
                                             watched)
        gateway_rest = f"http://127.0.0.1:{gw.GATEWAY_PORT}/webhooks/rest/webhook"
        results.runs += await measure_levels(
            "(c, REST) full stack, gateway REST",
            lambda s, r: rest_conversation(s, gateway_rest, gw.TURNS, r, gw.REST_AUTH), args,
            watched)
        results.memory["rasa (b) ours, after (c)"] = rss_mb(rasa.pid)
        results.memory["action server"] = rss_mb(actions.pid)
        results.memory["gateway"] = rss_mb(gateway.pid)
        if args.profile:
            top = max(args.levels)
            count = args.conversations or default_conversations(top)
            results.profile_run, results.profiles, results.profile_problem = (
                await profiled_run(processes, {"rasa": rasa.pid, "gateway": gateway.pid,
                                               "action server": actions.pid},
                                   telegram, top, count))
    finally:
        processes.stop()
        await runner.cleanup()


async def run_production_shape(processes: Processes, args: argparse.Namespace,
                               results: Results) -> None:
    """(c) once more in the production shape (`bot run-prod`): 2 Rasa instances and 2
    gateways on PostgreSQL and Redis behind the balancer, spoken to on its REST channel.
    It uses the newest model in models/ and databases of its own, dropped after."""
    from bot.tools.launcher import LOCAL_POSTGRES, drop_database

    names = [f"bench_prod_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    public, rasa = consecutive_free_ports(3), consecutive_free_ports(2)
    env = child_env(VAR_DIR=str(RUN / "prod"), GATEWAY_PORT=str(public),
                    RASA_URL=f"http://127.0.0.1:{rasa}",
                    ACTION_SERVER_URL=f"http://127.0.0.1:{free_port()}/webhook",
                    DATABASE_URL=f"{LOCAL_POSTGRES}/{names[0]}",
                    TRACKER_DATABASE_URL=f"{LOCAL_POSTGRES}/{names[1]}",
                    REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/3"),
                    GATEWAY_DATABASE_URL="", REST_API_TOKEN=gw.REST_TOKEN)
    shape = processes.start("run-prod", [str(BIN / "bot"), "run-prod", "--no-train"], ROOT,
                            env)
    try:
        await processes.wait_ready(f"http://127.0.0.1:{public + 2}/health", "run-prod")
        await processes.wait_ready(f"http://127.0.0.1:{rasa + 1}/", "run-prod")
        url = f"http://127.0.0.1:{public}/webhooks/rest/webhook"
        results.runs += await measure_levels(
            "(c, 2+2) run-prod shape, balancer REST",
            lambda s, r: rest_conversation(s, url, gw.TURNS, r, gw.REST_AUTH), args,
            {"run-prod (all parts)": shape.pid})
        results.memory["run-prod: all parts (2 Rasa, 2 gateways, actions, balancer)"] = (
            rss_mb(shape.pid))
    finally:
        processes.stop("run-prod", sig=signal.SIGINT)
        for name in names:
            drop_database(f"{LOCAL_POSTGRES}/{name}")


async def main_async(args: argparse.Namespace, processes: Processes) -> Results:
    results = Results()
    stock, ours = prepare_models(args)
    print("\n".join(TABLE_HEAD), flush=True)
    if stock is not None:
        results.stock_model = stock.name
        await run_stock(processes, stock, args, results)
    if ours is not None:
        results.ours_model = str(ours.relative_to(ROOT))
        await run_ours(processes, ours, args, results)
    if "p" in args.targets:
        await run_production_shape(processes, args, results)
    return results


# --- the report -----------------------------------------------------------------------


def find(results: Results, prefix: str, concurrency: int) -> Optional[Run]:
    return next((r for r in results.runs
                 if r.target.startswith(prefix) and r.concurrency == concurrency), None)


def goals(results: Results, level: int) -> List[str]:
    """The issue's goals for each way through the gateway: Telegram, which the gateway
    holds to Telegram's documented 30 messages/s per bot, and REST, which has no
    provider limit (what the gateway, actions and store cost)."""
    a, b = (find(results, p, level) for p in ("(a)", "(b)"))
    lines = ["| goal at %d concurrent conversations | measured | ratio | met |" % level,
             "|---|---|---:|---|"]

    def check(goal: str, measured: str, ratio: float, met: bool) -> None:
        lines.append(f"| {goal} | {measured} | {ratio:.2f} | {'met' if met else 'not met'} |")

    for c in (run for run in results.runs
              if run.target.startswith("(c") and run.concurrency == level):
        name = "(c) " + c.target.rsplit(", ", 1)[-1]
        if a and a.throughput:
            ratio = c.throughput / a.throughput
            check(f"{name} turns/s ≥ 3 × (a)", f"{c.throughput:.1f} vs {a.throughput:.1f}",
                  ratio, ratio >= 3)
        if a:
            ratio = c.p99 / a.p99
            check(f"{name} p99 ≤ (a) p99 / 3", f"{c.p99:.0f} ms vs {a.p99:.0f} ms", ratio,
                  ratio <= 1 / 3)
        if b and b.throughput:
            ratio = c.throughput / b.throughput
            check(f"{name} turns/s ≥ 0.8 × (b)", f"{c.throughput:.1f} vs {b.throughput:.1f}",
                  ratio, ratio >= 0.8)
    if len(lines) == 2:
        lines.append(f"| (not measured: needs (a), (b) and (c) at {level}) | | | |")
    return lines


def cpu_table(results: Results, level: int) -> List[str]:
    names = ("rasa", "action server", "gateway", "load generator")
    lines = [f"| target at {level} | CPU ms per turn: " + " | ".join(names)
             + " | other processes | wall s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for run in results.runs:
        if run.concurrency != level or not run.turns_ms:
            continue
        cells = []
        for name in names:
            seconds = next((v for k, v in run.cpu.items() if k.startswith(name)), None)
            cells.append("" if seconds is None else f"{seconds * 1000 / len(run.turns_ms):.1f}")
        other = run.other_cores * run.seconds * 1000 / len(run.turns_ms)
        lines.append(f"| {run.target} | " + " | ".join(cells) + f" | {other:.1f} | "
                     f"{run.seconds:.1f} |")
    return lines


def report(results: Results, args: argparse.Namespace, load_before: str,
           started: datetime, minutes: float) -> str:
    times = load_train_times()
    level = 50 if 50 in args.levels else max(args.levels)
    sizes = ", ".join(f"{args.conversations or default_conversations(c)} at {c}"
                      for c in args.levels)
    text = [
        "# Stock Rasa, our bot alone, our full stack (bench/bench_stock.py)", "",
        f"Run {started:%Y-%m-%d %H:%M} UTC ({minutes:.1f} min, training included) on "
        f"{os.cpu_count()} cores "
        f"(nproc), Python {platform.python_version()}, {platform.platform()}; load average "
        f"before the run {load_before}. Other work may have shared the 2 cores: read "
        "differences of less than ~20% as noise.", "",
        f"Conversations of 3 turns, {PAUSE_SECONDS} s between a customer's turns; {sizes} "
        "concurrent conversations; every target warmed up first (10 conversations). "
        "(a) says \"hello\", \"I am sad\", \"yes\" to the stock `rasa init` assistant "
        f"(model {results.stock_model or '-'}); (b) and (c) run the verified order-status "
        f"conversation {list(gw.TURNS)} on our model ({results.ours_model or '-'}), the "
        "custom actions reading a freshly seeded SQLite demo store; Rasa's tracker store is "
        "SQLite (ours, endpoints.yml) and in memory (stock). (c) measures a turn from the "
        "Telegram webhook POST to the first reply at the local Bot API stand-in "
        "(bench_gateway.telegram_conversation); (c, REST) is the same stack "
        "through the gateway's REST channel, for reference. turns/s counts turns over the "
        "wall time of the level, pauses included.", "",
        *TABLE_HEAD, *(run.row() for run in results.runs), "",
        "## Goals", "", *goals(results, level), "",
        "## Memory after the load (VmRSS with children)", "",
        "| process | MiB |", "|---|---:|",
        *(f"| {name} | {mb:.0f} |" for name, mb in results.memory.items()), "",
        "## CPU per turn", "", *cpu_table(results, level), "",
        "## Training (`rasa train --force`, wall clock)", "",
        "| assistant | seconds | trained |", "|---|---:|---|",
        *(f"| {name} | {entry['seconds']} | {entry['date']} |" for name, entry in times.items()),
        "",
    ]
    if results.profile_run or results.profile_problem:
        text += ["## Profile: (c) at %d concurrent conversations under py-spy" % level, ""]
        if results.profile_problem:
            text += [results.profile_problem, ""]
        if results.profile_run:
            text += [f"py-spy {PROFILE_RATE} Hz on Rasa, the gateway and the action server "
                     "during one more (c) run (figures under sampling: "
                     f"p50 {results.profile_run.p50:.0f} ms, p99 {results.profile_run.p99:.0f} "
                     f"ms, {results.profile_run.throughput:.1f} turns/s). Shares are of the "
                     "samples in which the process was running Python code; entry points, "
                     "thread and event-loop frames, and functions on ≥ 90% of the stacks, "
                     "are left out of the first table, which shows at most 3 functions of a "
                     "folder (the outermost).", ""]
        for profile in results.profiles:
            text += profile.lines
    return "\n".join(text).rstrip() + "\n"


def keep_notes(path: Path) -> str:
    if path.exists():
        existing = path.read_text()
        at = existing.find(f"\n{NOTES_HEADING}")
        if at >= 0:
            return existing[at + 1:]
    return DEFAULT_NOTES


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,10,50",
                        help="concurrent conversations, comma separated (default 1,10,50)")
    parser.add_argument("--conversations", type=int, default=0,
                        help="conversations per level (default: 20 at 1, 50 at 10, 100 at 50)")
    parser.add_argument("--targets", default="a,b,c,p",
                        help="which of a,b,c and p, (c) in run-prod's shape (default all)")
    parser.add_argument("--skip-train", action="store_true",
                        help="reuse the newest models under var/bench/stock (ours: else "
                             "models/); training times come from the last training")
    parser.add_argument("--profile", action="store_true",
                        help="one more (c) run at the highest level under py-spy")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not args.levels or min(args.levels) < 1 or not set(args.targets) <= {"a", "b", "c", "p"}:
        parser.error("--levels takes positive numbers, --targets some of a,b,c,p")
    return args


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM (and SIGINT, even when started in the background) ends the run cleanly."""
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main() -> int:
    args = parse_args()
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    processes = Processes()
    with interrupts_raise():
        try:
            results = asyncio.run(main_async(args, processes))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            processes.stop()
    text = report(results, args, load_before, started, (time.perf_counter() - clock) / 60)
    print("\n" + text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    notes = keep_notes(args.output)
    args.output.write_text(text + "\n" + notes)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
