"""`bot run` and `bot run-prod`: train if the data changed, seed the demo store, start
the parts, wait until each says it is up, watch them, and stop them all cleanly on
Ctrl-C.

`bot run` is the embedded shape (one action server, Rasa and gateway on SQLite);
`bot run-prod` the production shape on PostgreSQL and Redis (docs/operations.md)."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url

from actions.store.backend import backend_name, check_config
from actions.store.types import StoreConfigError
from bot.settings import (
    ACTION_TOKEN_FILE,
    REST_TOKEN_FILE,
    Settings,
    load_settings,
    local_secret,
    port_of,
)
from common.paths import REPO_ROOT
from common.sql import POSTGRESQL_TIMEOUTS, STORE_WAIT_SECONDS, keep_private

# Rasa, the action server and training run in Rasa's environment; the gateway and its
# balancer in the gateway's own, on newer releases (docs/development.md#two-environments)
RASA_BIN = REPO_ROOT / ".venv" / "bin"
GATEWAY_BIN = REPO_ROOT / ".venv-gateway" / "bin"
ADMIN_TOKEN_FILE = "agent-admin.token"
STARTUP_TIMEOUT_SECONDS = 180
RESTARTS_PER_MINUTE = 3
# what a model is trained from (with data/), and how many models `models/` keeps
TRAINING_INPUTS = ("config.yml", "domain.yml")
MODELS_KEPT = 3
# Rasa's own default; longer than the longest turn (check_turn_lock)
TURN_LOCK_SECONDS = 60


def rasa_command(*args: str) -> List[str]:
    return [str(RASA_BIN / "rasa"), *args]


def child_environment(settings: Settings) -> Dict[str, str]:
    env = dict(os.environ)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    env.setdefault("ACTION_SERVER_URL", settings.action_server_url)
    env.setdefault("RASA_TRACKER_DB", str(settings.var_dir / "rasa_tracker.db"))
    env.setdefault("AGENT_API_TOKEN", local_secret(settings.var_dir, ADMIN_TOKEN_FILE))
    env.setdefault("REST_API_TOKEN", local_secret(settings.var_dir, REST_TOKEN_FILE))
    # Rasa sends it to the action server, which refuses requests without it
    env.setdefault("ACTION_SERVER_TOKEN", local_secret(settings.var_dir, ACTION_TOKEN_FILE))
    # Rasa reports usage to Rasa's servers unless told not to
    env.setdefault("RASA_TELEMETRY_ENABLED", "false")
    return env


def training_fingerprint(root: Path = REPO_ROOT) -> str:
    """What a model is trained from (Rasa's version, config, domain, training data):
    `rasa train` writes a new model on every call, even when this is unchanged."""
    digest = hashlib.sha256(f"rasa {importlib.metadata.version('rasa')}\0".encode())
    files = [root / name for name in TRAINING_INPUTS if (root / name).is_file()]
    files += sorted(p for p in (root / "data").rglob("*") if p.is_file())
    for path in files:
        digest.update(f"{path.relative_to(root)}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


def fingerprint_file(model: Path) -> Path:
    return model.with_name(model.name + ".fingerprint")


def models_oldest_first(models: Path) -> List[Path]:
    return sorted(models.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)


def newest_model(models: Path = REPO_ROOT / "models") -> Optional[Path]:
    found = models_oldest_first(models)
    return found[-1] if found else None


def train_if_changed(env: Dict[str, str], log: Path, models: Path = REPO_ROOT / "models",
                     keep: int = MODELS_KEPT) -> Path:
    """The newest model when it was trained from what is here now, else a new one
    (Rasa's output goes to `log`); at most `keep` models stay."""
    fingerprint = training_fingerprint()
    model = newest_model(models)
    marker = fingerprint_file(model) if model else None
    if model and marker and marker.exists() and marker.read_text() == fingerprint:
        return model
    print(f"training the model (the data changed; Rasa's output in {log})", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        done = subprocess.run(rasa_command("train", "--quiet", "--out", str(models)),
                              cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    model = newest_model(models)
    if done.returncode or model is None:
        raise RuntimeError(f"training failed; see {log}")
    fingerprint_file(model).write_text(fingerprint)
    keep_newest(models, keep)
    return model


def keep_newest(models: Path, keep: int) -> None:
    """Delete all but the newest `keep` models (3.5 MB each), with their fingerprints."""
    for old in models_oldest_first(models)[:-keep]:
        old.unlink()
        fingerprint_file(old).unlink(missing_ok=True)


@dataclass(frozen=True)
class Component:
    name: str
    command: List[str]
    ready_url: str
    env: Dict[str, str] = field(default_factory=dict)
    # parts of a later wave start once the earlier waves are up
    wave: int = 0


def components(settings: Settings) -> List[Component]:
    """The embedded shape: one action server, one Rasa, one gateway."""
    return [
        action_server(settings),
        rasa_instance("rasa", settings.rasa_urls[0], "endpoints.yml"),
        gateway("gateway", settings.gateway_port),
    ]


def action_server(settings: Settings) -> Component:
    """rasa_sdk's server on loopback, refusing requests without Rasa's secret."""
    return Component("action server",
                     [str(RASA_BIN / "python"), "-m", "actions.server", "--actions", "actions",
                      "--port", str(settings.action_port)],
                     settings.action_health_url)


def rasa_instance(name: str, url: str, endpoints: str, wave: int = 0) -> Component:
    return Component(name, rasa_command("run", "--model", "models", "--port", str(port_of(url)),
                                        "--endpoints", endpoints, "--credentials",
                                        "credentials.yml", "--interface", "127.0.0.1"),
                     f"{url}/", wave=wave)


def gateway(name: str, port: int, **env: str) -> Component:
    return Component(name, [str(GATEWAY_BIN / "bot"), "serve"],
                     f"http://127.0.0.1:{port}/health", {"GATEWAY_PORT": str(port), **env})


def start_components(settings: Settings, env: Dict[str, str],
                     parts: List[Component]) -> Dict[str, subprocess.Popen]:
    logs = settings.var_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes = {}
    for part in parts:
        log_file = (logs / f"{part.name.replace(' ', '_')}.log").open("ab")
        processes[part.name] = subprocess.Popen(
            part.command, cwd=REPO_ROOT, env={**env, **part.env}, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True)
    return processes


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until_healthy(settings: Settings, parts: List[Component],
                       processes: Dict[str, subprocess.Popen]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    waiting = list(parts)
    while waiting:
        waiting = [part for part in waiting if not healthy(part.ready_url)]
        dead = [name for name, p in processes.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} stopped during start-up; see "
                               f"{settings.var_dir / 'logs'}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not healthy after {STARTUP_TIMEOUT_SECONDS}s: "
                               f"{', '.join(part.name for part in waiting)}")
        if waiting:
            time.sleep(0.5)


def stop(processes: Dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def seed_demo_store_if_used(env: Dict[str, str]) -> str:
    """Reseed the demo store, which wipes the bot's own records beside it (write log,
    codes, contact log): only when the demo store is the order platform. What was done."""
    name = backend_name(env)
    if name != "sql":
        return f"store: {name} (the demo store is not seeded; the bot's records are kept)"
    from actions.store.seed import seed_demo_store
    from actions.store.sql import open_store

    count = seed_demo_store(open_store(env.get("DATABASE_URL") or None))
    return f"demo store seeded: {count} orders"


def run_system(train: bool = True, seed: bool = True) -> int:
    settings = load_settings()
    env = child_environment(settings)
    # Rasa would create its SQLite file readable by all; made first, it stays the owner's
    keep_private(Path(env["RASA_TRACKER_DB"]))
    return launch(settings, env, components(settings), train, seed, restart=True)


def launch(settings: Settings, env: Dict[str, str], parts: List[Component], train: bool,
           seed: bool, restart: bool = False) -> int:
    """Start the parts and watch them. With `restart`, a part that exits is started
    again (as a container platform would), unless it keeps exiting."""
    try:
        check_config(env)  # the order platform's variables, before anything starts
    except StoreConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if train:
        try:
            train_if_changed(env, settings.var_dir / "logs" / "train.log")
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    if seed:
        print(seed_demo_store_if_used(env))
    missing = sorted({part.command[0] for part in parts if not Path(part.command[0]).exists()})
    if missing:
        print(f"error: {', '.join(missing)} missing; run `make setup`", file=sys.stderr)
        return 1
    processes: Dict[str, subprocess.Popen] = {}
    # explicit for both: a process started in the background inherits SIGINT ignored
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        for wave in sorted({part.wave for part in parts}):
            started = [part for part in parts if part.wave == wave]
            processes.update(start_components(settings, env, started))
            wait_until_healthy(settings, started, processes)
        base = f"http://localhost:{settings.gateway_port}"
        print(f"ready: web chat {base}/ , agent console {base}/agent , dashboard "
              f"{base}/dashboard , REST channel {base}/webhooks/rest/webhook, health "
              f"{base}/health, metrics {base}/metrics", flush=True)
        token = ("$AGENT_API_TOKEN" if os.environ.get("AGENT_API_TOKEN")
                 else f"var/{ADMIN_TOKEN_FILE}")
        print(f"agent console and dashboard: sign in with the admin token in {token}, or add "
              "agents with 'bot agents add'; channel webhooks: see docs/channels.md",
              flush=True)
        print(f"REST channel: {rest_example(base, settings.var_dir)}", flush=True)
        print("logs in var/logs/; press Ctrl-C to stop", flush=True)
        return _supervise(settings, env, parts, processes, restart)
    except KeyboardInterrupt:
        return 0
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C while stopping
        stop(processes)
        print("stopped", flush=True)


def rest_example(base: str, var_dir: Path) -> str:
    """A ready curl line for the REST channel, naming where its token is."""
    token = ("$REST_API_TOKEN" if os.environ.get("REST_API_TOKEN")
             else f"$(cat {var_dir / REST_TOKEN_FILE})")
    return (f"curl -s {base}/webhooks/rest/webhook -H \"Authorization: Bearer {token}\" "
            """-d '{"sender": "me", "message": "where is my order A1001?"}'""")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _supervise(settings: Settings, env: Dict[str, str], parts: List[Component],
               processes: Dict[str, subprocess.Popen], restart: bool) -> int:
    """Wait; when a part dies, start it again after a pause that doubles with each exit
    in the last minute or, without `restart` or when it keeps dying, stop the rest and
    say which one. The other parts stay up meanwhile: the gateway keeps taking
    messages and answers them once the bot is back (or hands them to a person)."""
    exits: Dict[str, List[float]] = {}
    due: Dict[str, float] = {}  # parts waiting to be started again, and when
    while True:
        now = time.monotonic()
        for part in parts:
            if part.name in due:
                if now >= due[part.name]:
                    del due[part.name]
                    processes.update(start_components(settings, env, [part]))
                continue
            code: Optional[int] = processes[part.name].poll()
            if code is None:
                continue
            recent = [t for t in exits.get(part.name, []) if t > now - 60]
            exits[part.name] = recent + [now]
            if not restart or len(recent) >= RESTARTS_PER_MINUTE:
                print(f"error: {part.name} exited with code {code}; see var/logs/",
                      file=sys.stderr)
                return 1
            pause = 2 ** len(recent)
            print(f"{part.name} exited with code {code}; starting it again in {pause}s "
                  "(see var/logs/)", flush=True)
            due[part.name] = now + pause
        time.sleep(0.5)


LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def run_production(instances: int, train: bool = True, seed: bool = True) -> int:
    """`bot run-prod`: the production shape from local processes, on PostgreSQL and Redis:
    one action server, `instances` Rasa instances and gateways, and the balancer on
    the public port."""
    settings = load_settings()
    try:
        env = production_environment(settings, instances)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return launch(settings, env, production_components(settings, instances), train, seed,
                  restart=True)


def production_environment(settings: Settings, instances: int) -> Dict[str, str]:
    """The children's environment: the databases (created when missing) and Redis, and
    the variables endpoints.production.yml gives Rasa, derived from their URLs."""
    env = child_environment(settings)
    env.setdefault("DATABASE_URL", f"{LOCAL_POSTGRES}/store_support")
    env.setdefault("TRACKER_DATABASE_URL", f"{LOCAL_POSTGRES}/store_support_tracker")
    env.setdefault("REDIS_URL", LOCAL_REDIS)
    for name in ("DATABASE_URL", "TRACKER_DATABASE_URL"):
        if not env[name].startswith("postgresql"):
            raise ValueError(f"{name} must be a postgresql:// URL for the production shape")
        ensure_database(env[name])
    tracker = make_url(env["TRACKER_DATABASE_URL"])
    redis = urlsplit(env["REDIS_URL"])
    env.update(TRACKER_DB_HOST=tracker.host or "127.0.0.1",
               TRACKER_DB_PORT=str(tracker.port or 5432),
               TRACKER_DB_NAME=tracker.database or "", TRACKER_DB_USER=tracker.username or "",
               TRACKER_DB_PASSWORD=tracker.password or "", TRACKER_DB_LOGIN_DB="postgres",
               LOCK_REDIS_HOST=redis.hostname or "127.0.0.1",
               LOCK_REDIS_PORT=str(redis.port or 6379),
               LOCK_REDIS_DB=redis.path.strip("/") or "0",
               LOCK_REDIS_PASSWORD=unquote(redis.password or ""))
    env["RASA_URL"] = ",".join(production_rasa_urls(settings, instances))
    env.setdefault("TICKET_LOCK_LIFETIME", str(TURN_LOCK_SECONDS))
    check_turn_lock(float(env["TICKET_LOCK_LIFETIME"]), settings.rasa_timeout_seconds)
    return env


def check_turn_lock(lock_seconds: float, rasa_timeout_seconds: float) -> None:
    """Rasa holds a conversation's lock (TICKET_LOCK_LIFETIME) while it runs a turn; a
    lock that lapses mid-turn lets the conversation's next message run beside it. The
    next message comes once the gateway stops waiting (RASA_TIMEOUT_SECONDS), and the
    turn may go on after that while an action waits on the store (STORE_WAIT_SECONDS).
    The price of a long lock: a Rasa that dies mid-turn holds its conversation that
    long, and the gateway hands the conversation's messages to a person meanwhile."""
    worst_turn = rasa_timeout_seconds + STORE_WAIT_SECONDS
    if lock_seconds <= worst_turn:
        raise ValueError(f"TICKET_LOCK_LIFETIME={lock_seconds:g} must outlast the longest "
                         f"turn, {worst_turn:g} s (RASA_TIMEOUT_SECONDS "
                         f"{rasa_timeout_seconds:g} + a store wait of {STORE_WAIT_SECONDS} s)")


def production_rasa_urls(settings: Settings, instances: int) -> List[str]:
    """RASA_URL's instances when it lists several, else consecutive ports from its one."""
    if len(settings.rasa_urls) > 1:
        return list(settings.rasa_urls)
    first = settings.rasa_urls[0]
    base, port = first.rsplit(":", 1)[0], port_of(first)
    return [f"{base}:{port + i}" for i in range(instances)]


def production_components(settings: Settings, instances: int) -> List[Component]:
    rasa_urls = production_rasa_urls(settings, instances)
    gateway_ports = [settings.gateway_port + 1 + i for i in range(instances)]
    balancer = Component(
        "balancer",
        [str(GATEWAY_BIN / "bot"), "balance", "--host", settings.gateway_host, "--port",
         str(settings.gateway_port), *(f"127.0.0.1:{port}" for port in gateway_ports)],
        f"http://127.0.0.1:{settings.gateway_port}/health")
    return [action_server(settings),
            # the first Rasa creates its tables alone: Rasa does not guard against two
            # creating them at once
            *(rasa_instance(f"rasa {i + 1}", url, "endpoints.production.yml", wave=min(i, 1))
              for i, url in enumerate(rasa_urls)),
            *(gateway(f"gateway {i + 1}", port, GATEWAY_HOST="127.0.0.1")
              for i, port in enumerate(gateway_ports)),
            balancer]


def consecutive_free_ports(count: int) -> int:
    """The first of `count` free ports in a row, for a shape started elsewhere (tests,
    benchmarks). Below the kernel's ephemeral range (32768 and up): the parts bind
    them only seconds later, and meanwhile an outgoing connection could take one."""
    while True:
        first = random.randrange(20_000, 32_000)
        if not any(port_open(first + i) for i in range(count)):
            return first


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of `url` when it does not exist yet."""
    with _server(url) as (connection, name):
        exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                    {"name": name}).first()
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{name}"'))


def drop_database(url: str) -> None:
    """Drop the PostgreSQL database of `url`, connections and all (tests, benchmarks)."""
    with _server(url) as (connection, name):
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def _server(url: str) -> Iterator[Tuple[Connection, str]]:
    """A connection to the server of `url` (its `postgres` database, outside any
    transaction: CREATE and DROP DATABASE need that), and the database `url` names."""
    target = make_url(url)
    admin = create_engine(target.set(database="postgres", query={}),
                          isolation_level="AUTOCOMMIT", connect_args=POSTGRESQL_TIMEOUTS)
    try:
        with admin.connect() as connection:
            yield connection, target.database or ""
    finally:
        admin.dispose()
