"""Shared fixtures: the store systems on SQLite and on PostgreSQL, seeded relative to `now`.

A test that takes `store` runs twice, `[sqlite]` and `[postgresql]`. PostgreSQL is
`postgresql://postgres@127.0.0.1:5432/test` or TEST_DATABASE_URL; each test session
works in a private schema of that database, so parallel runs don't collide. When the
server cannot be reached the PostgreSQL variants are skipped, with the reason.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Dict, Iterator, List, cast

import pytest
import sqlalchemy as sa

from actions.store.backend import open_systems
from actions.store.seed import seed_demo_store
from actions.store.sql import Store, open_store
from actions.store.types import StoreSystems
from bot.tools.launcher import GATEWAY_BIN, RASA_BIN, newest_model
from tests.provider_api import free_port
from tests.store_api.shopify import ShopifyStandIn
from tests.store_api.woocommerce import WooCommerceStandIn

# The gateway's tests (tests/bot/, tests/connectors/) run in the gateway's environment,
# .venv-gateway, except those marked `rasa_env`, which use Rasa's own Python code; all
# other tests run in Rasa's .venv (scripts/test.sh; docs/development.md#tests).
GATEWAY_TEST_DIRS = ("bot", "connectors")


def gateway_python() -> str:
    """The gateway's Python version (X.Y), as scripts/setup.sh builds .venv-gateway."""
    setup = (Path(__file__).resolve().parent.parent / "scripts" / "setup.sh").read_text()
    found = re.search(r"^GATEWAY_PYTHON=(\d+\.\d+)$", setup, re.MULTILINE)
    assert found, "scripts/setup.sh names GATEWAY_PYTHON"
    return found[1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rasa_env: a gateway test that imports rasa, so it "
                            "runs in Rasa's environment (.venv)")
    config.addinivalue_line("markers", "gateway_env: runs in the gateway's environment "
                            "(.venv-gateway); set on tests/bot/ and tests/connectors/")


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        place = item.path.relative_to(tests).parts
        if place[0] in GATEWAY_TEST_DIRS and not item.get_closest_marker("rasa_env"):
            item.add_marker(pytest.mark.gateway_env)


@pytest.fixture(scope="session", autouse=True)
def unredacted_logs() -> None:
    """Importing actions or components redacts every log record of the process, as in
    the action server and Rasa; the tests check what our own code logs, so they see
    records as written (tests/bot/test_log_privacy.py covers the redaction)."""
    logging.setLogRecordFactory(logging.LogRecord)


POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def now() -> datetime:
    """The time the demo data is seeded relative to: the wall clock at session start
    (UTC, whole seconds), so code that reads the clock agrees with the seeded dates."""
    return datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """POSTGRES_URL confined to a fresh schema, dropped at the end of the session."""
    schema = f"pytest_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, future=True, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL} ({reason}); start it "
                    "(pg_ctlcluster <version> main start) or set TEST_DATABASE_URL")
    url = sa.engine.make_url(POSTGRES_URL).update_query_dict(
        {"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each backend: a SQLite file in tmp_path, or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(store_url: str, now: datetime) -> Iterator[Store]:
    """The store on an empty schema (dropped and recreated), seeded relative to `now`."""
    opened = seeded_sql_store(store_url, now)
    yield opened
    opened.close()


def seeded_sql_store(url: str, now: datetime) -> Store:
    opened = open_store(url)
    opened.reset_schema()
    seed_demo_store(opened, now)
    return opened


@pytest.fixture
def shopify_shop(now: datetime, tmp_path: Path) -> Iterator[ShopifyStandIn]:
    """The Shopify stand-in holding the demo orders, serving on a free port."""
    shop = ShopifyStandIn.from_demo(now, tmp_path)
    shop.start()
    yield shop
    shop.stop()


def shopify_env(shop: ShopifyStandIn, **more: str) -> Dict[str, str]:
    """The variables of STORE_BACKEND=shopify pointed at the stand-in."""
    return {"STORE_BACKEND": "shopify", "SHOPIFY_SHOP": "demo-store.myshopify.com",
            "SHOPIFY_ACCESS_TOKEN": shop.access_token, "SHOPIFY_API_BASE_URL": shop.url,
            **more}


@pytest.fixture
def woocommerce_shop(now: datetime, tmp_path: Path) -> Iterator[WooCommerceStandIn]:
    """The WooCommerce stand-in holding the demo orders, serving on a free port."""
    shop = WooCommerceStandIn.from_demo(now, tmp_path)
    shop.start()
    yield shop
    shop.stop()


def woocommerce_env(shop: WooCommerceStandIn, **more: str) -> Dict[str, str]:
    """The variables of STORE_BACKEND=woocommerce pointed at the stand-in."""
    return {"STORE_BACKEND": "woocommerce", "WOOCOMMERCE_URL": shop.url,
            "WOOCOMMERCE_KEY": shop.key, "WOOCOMMERCE_SECRET": shop.secret, **more}


@pytest.fixture(params=["sqlite", "postgresql", "shopify", "woocommerce"])
def systems(request: pytest.FixtureRequest, now: datetime,
            tmp_path: Path) -> Iterator[StoreSystems]:
    """The store systems on each backend, holding the demo data: the SQL store on SQLite
    and on PostgreSQL, and a Shopify and a WooCommerce shop (the stand-ins) with the
    bot's own records on SQLite. For the store tests whose meaning every platform
    shares."""
    for marker in request.node.iter_markers("not_on"):
        if request.param == marker.args[0]:
            pytest.skip(f"not on {request.param}: {marker.kwargs['reason']}")
    bot_db = f"sqlite:///{tmp_path / 'store.db'}"
    if request.param == "shopify":
        shop: ShopifyStandIn = request.getfixturevalue("shopify_shop")
        opened: StoreSystems = open_systems({**shopify_env(shop), "DATABASE_URL": bot_db})
    elif request.param == "woocommerce":
        woo: WooCommerceStandIn = request.getfixturevalue("woocommerce_shop")
        opened = open_systems({**woocommerce_env(woo), "DATABASE_URL": bot_db})
    else:
        url = bot_db if request.param == "sqlite" else request.getfixturevalue("postgres_url")
        opened = seeded_sql_store(url, now)
    yield opened
    opened.close()


REPO_ROOT = Path(__file__).resolve().parent.parent
RASA = RASA_BIN / "rasa"
PYTHON = RASA_BIN / "python"
# the secret Rasa sends the action server (endpoints.yml) in the tests' stacks
ACTION_SERVER_TOKEN = "action-server-token-for-tests"


def action_server_command(port: int) -> List[str]:
    return [str(PYTHON), "-m", "actions.server", "--actions", "actions", "--port", str(port)]


@pytest.fixture(scope="session")
def trained_model() -> Path:
    """The model for the current config, domain and data (`bot train`, in Rasa's
    environment: trained only when they changed), so the suite trains at most once."""
    done = subprocess.run([str(RASA_BIN / "bot"), "train"], cwd=REPO_ROOT,
                          env={**os.environ, "RASA_TELEMETRY_ENABLED": "false"},
                          capture_output=True, text=True)
    model = newest_model()
    if done.returncode or model is None:
        raise RuntimeError(f"bot train failed: {done.stdout}{done.stderr}")
    return model


@dataclass(frozen=True)
class RasaStack:
    """The action server and Rasa, started once per session on free ports."""

    rasa_url: str
    action_server_url: str
    database_url: str
    var_dir: Path

    @property
    def tracker_db(self) -> Path:
        """Rasa's SQL tracker store (SQLite), where the KPIs read intents."""
        return self.var_dir / "tracker.db"

    def env(self, **extra: str) -> Dict[str, str]:
        return {**os.environ, "RASA_URL": self.rasa_url,
                "ACTION_SERVER_URL": self.action_server_url,
                "ACTION_SERVER_TOKEN": ACTION_SERVER_TOKEN,
                "DATABASE_URL": self.database_url, "VAR_DIR": str(self.var_dir),
                "REDIS_URL": "", "RASA_TELEMETRY_ENABLED": "false", **extra}


def wait_for(url: str, process: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {seconds}s: {log.read_text()[-3000:]}")


@contextlib.contextmanager
def background(command: List[str], env: Dict[str, str], log: Path,
               ready_url: str) -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(ready_url, process, log)
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen, signum: int = signal.SIGTERM,
               seconds: float = 5) -> None:
    """Signal the process's group (it was started in a session of its own), then kill
    what is left after `seconds`."""
    if process.poll() is None:
        os.killpg(process.pid, signum)
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def start_rasa_stack(model: Path, var: Path, now: datetime, database_url: str = "",
                     **extra_env: str) -> Iterator[RasaStack]:
    """Rasa (on loopback, as `make run` starts it) on `model` and the action server on a
    seeded store (`database_url`, else SQLite in `var`); `extra_env` (POLICY_DIR, say)
    goes to both."""
    database_url = database_url or f"sqlite:///{var / 'store.db'}"
    seeded = open_store(database_url)
    seed_demo_store(seeded, now)
    seeded.close()
    rasa_port, action_port = free_port(), free_port()
    stack = RasaStack(f"http://127.0.0.1:{rasa_port}",
                      f"http://127.0.0.1:{action_port}/webhook", database_url, var)
    env = stack.env(RASA_TRACKER_DB=str(stack.tracker_db), **extra_env)
    with background(action_server_command(action_port),
                    env, var / "actions.log", f"http://127.0.0.1:{action_port}/health"), \
         background([str(RASA), "run", "--model", str(model), "--port",
                     str(rasa_port), "--interface", "127.0.0.1", "--endpoints",
                     "endpoints.yml", "--credentials", "credentials.yml"], env,
                    var / "rasa.log", f"{stack.rasa_url}/"):
        yield stack


@pytest.fixture(scope="session")
def rasa_stack(trained_model: Path, tmp_path_factory: pytest.TempPathFactory,
               now: datetime) -> Iterator[RasaStack]:
    """Rasa on the trained model and the action server on a seeded SQLite store."""
    with start_rasa_stack(trained_model, tmp_path_factory.mktemp("rasa_stack"), now) as stack:
        yield stack


LIVE_REST_TOKEN = "rest-token-for-the-live-gateway"


@pytest.fixture(scope="session")
def live_gateway(rasa_stack: RasaStack) -> Iterator[str]:
    """`bot serve` on a free port in front of `rasa_stack`: its base URL. Its REST
    channel takes LIVE_REST_TOKEN."""
    port = free_port()
    env = rasa_stack.env(GATEWAY_PORT=str(port), GATEWAY_HOST="127.0.0.1",
                         REST_API_TOKEN=LIVE_REST_TOKEN)
    with background([str(GATEWAY_BIN / "bot"), "serve"], env,
                    rasa_stack.var_dir / "gateway.log", f"http://127.0.0.1:{port}/health"):
        yield f"http://127.0.0.1:{port}"


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis server; the tests that need it skip, with the reason, without it."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        pytest.skip(f"Redis not reachable at {REDIS_URL} ({error}); start it "
                    "(redis-server --daemonize yes) or set TEST_REDIS_URL")
    return REDIS_URL


@dataclass
class MailServer:
    """A local SMTP server (aiosmtpd) standing in for the store's mail server."""

    url: str
    received: List[EmailMessage]

    def codes_to(self, address: str) -> List[str]:
        """The one-time codes in the emails sent to `address`, oldest first."""
        return [re.findall(r"\b\d{6}\b", str(m.get_content()))[0]
                for m in self.received if m["To"] == address]


@pytest.fixture(scope="module")
def mail_server() -> Iterator[MailServer]:
    from aiosmtpd.controller import Controller

    received: List[EmailMessage] = []

    class Keep:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            message = message_from_bytes(envelope.content, policy=email_policy.default)
            received.append(cast(EmailMessage, message))
            return "250 Message accepted for delivery"

    port = free_port()
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    yield MailServer(f"smtp://127.0.0.1:{port}", received)
    controller.stop()
