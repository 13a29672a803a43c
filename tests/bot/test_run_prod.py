"""The production shape (`bot run-prod`): two Rasa instances and two gateways behind the
balancer, on PostgreSQL and Redis, spoken to on Telegram as customers would, under load
and through faults: a Rasa instance killed, Redis restarted, PostgreSQL cut off.

The shape runs on its own Redis server (with an append-only file and a password, as in
production) so it can be restarted, and reaches PostgreSQL through a proxy the tests can cut. The
Telegram Bot API is a local server in a thread that records each chat's replies."""
from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence
from urllib.parse import parse_qs

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web

from bot.policies import load_channel_policy
from bot.tools.launcher import consecutive_free_ports, drop_database, port_open
from tests.conftest import POSTGRES_URL, REPO_ROOT, stop_group
from tests.connectors.test_telegram import TOKEN
from tests.provider_api import free_port
from tests.redis_server import RedisServer, needs_redis_server
from tests.tcp_proxy import CuttableProxy

SECRET = "prod-shape-secret"
ADMIN = "prod-shape-admin-token"
# ten turns whose answers differ, so a reply out of place shows
TURNS = ("hi", "what is your return policy", "how long does shipping take",
         "do you ship internationally", "what payment methods do you accept",
         "how do I cancel an order", "do you have a warranty", "how do refunds work",
         "thanks", "bye")
CONVERSATIONS = 200
CHAT_IDS = itertools.count(700_000_000 + uuid.uuid4().int % 100_000_000)
UPDATE_IDS = itertools.count(uuid.uuid4().int % 2**40)

pytestmark = needs_redis_server


class ThreadedBotAPI:
    """Telegram's Bot API on its own thread and loop: the shape outlives each test's
    event loop. Keeps each chat's sent texts in order."""

    def __init__(self) -> None:
        self.port = free_port()
        self.texts: Dict[str, List[str]] = {}
        self.lock = threading.Lock()
        self.message_ids = itertools.count(1)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def send_message(self, request: web.Request) -> web.Response:
        form = parse_qs((await request.read()).decode())
        chat, text = form["chat_id"][0], form["text"][0]
        with self.lock:
            self.texts.setdefault(chat, []).append(text)
        return web.json_response({"ok": True, "result": {
            "message_id": next(self.message_ids), "date": int(time.time()), "text": text,
            "chat": {"id": int(chat), "type": "private"}}})

    async def ok(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "result": True})

    async def _serve(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post(f"/bot{TOKEN}/sendMessage", self.send_message)
        app.router.add_post(f"/bot{TOKEN}/answerCallbackQuery", self.ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner

    def start(self) -> None:
        self.thread.start()
        self.runner = asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def replies(self, chat: int) -> List[str]:
        with self.lock:
            return list(self.texts.get(str(chat), []))


@dataclass
class Shape:
    process: subprocess.Popen
    public: str
    gateways: List[str]
    rasa_ports: List[int]
    action_port: int
    env: Dict[str, str]
    api: ThreadedBotAPI
    redis: RedisServer
    database: CuttableProxy
    output: List[str] = field(default_factory=list)



def listener_pid(port: int) -> int:
    """The process listening on `port` (ss prints 'users:(("rasa",pid=123,fd=9))')."""
    listing = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                             text=True, check=True).stdout
    pids = {int(part.split("=")[1].split(",")[0]) for part in listing.split("pid=")[1:]
            for part in [f"pid={part}"]}
    assert len(pids) == 1, listing
    return pids.pop()


def _database(url: str, name: str) -> str:
    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def shape(trained_model: Path, tmp_path_factory: pytest.TempPathFactory,
          postgres_url: str) -> Iterator[Shape]:
    var = tmp_path_factory.mktemp("run_prod")
    # a password as production's, with characters a URL must quote: the gateways and
    # Rasa's lock store must all unquote it from REDIS_URL
    api, redis = ThreadedBotAPI(), RedisServer(var, password="prod/shape:redis@pass")
    api.start()
    redis.start()
    pg_port = sa.engine.make_url(POSTGRES_URL).port or 5432
    database = CuttableProxy(pg_port)
    database.mend()
    through_proxy = sa.engine.make_url(POSTGRES_URL).set(host="127.0.0.1", port=database.port)
    names = [f"pytest_prod_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    public, rasa, action = (consecutive_free_ports(3), consecutive_free_ports(2),
                            consecutive_free_ports(1))
    env = {**os.environ, "VAR_DIR": str(var), "GATEWAY_PORT": str(public),
           "RASA_URL": f"http://127.0.0.1:{rasa}",
           "ACTION_SERVER_URL": f"http://127.0.0.1:{action}/webhook",
           "DATABASE_URL": _database(str(through_proxy), names[0]),
           "TRACKER_DATABASE_URL": _database(str(through_proxy), names[1]),
           "REDIS_URL": redis.url,
           "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_SECRET_TOKEN": SECRET,
           "TELEGRAM_API_BASE_URL": f"http://127.0.0.1:{api.port}",
           "AGENT_API_TOKEN": ADMIN,
           # Two Rasa instances, two gateways, the action server, the databases and the
           # load itself share this machine's two cores: a turn can take over the default
           # 10 s, and a turn not answered in time goes to a person, not back to Rasa.
           "RASA_TIMEOUT_SECONDS": "25"}
    process = subprocess.Popen([str(REPO_ROOT / ".venv" / "bin" / "bot"), "run-prod",
                                "--no-train"], cwd=REPO_ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    shape = Shape(process, f"http://127.0.0.1:{public}",
                  [f"http://127.0.0.1:{public + 1}", f"http://127.0.0.1:{public + 2}"],
                  [rasa, rasa + 1], action, env, api, redis, database)
    threading.Thread(target=lambda: shape.output.extend(process.stdout or []),
                     daemon=True).start()
    try:
        deadline = time.monotonic() + 300
        while not any(line.startswith("ready:") for line in shape.output):
            assert process.poll() is None, "".join(shape.output) + _logs(var)
            assert time.monotonic() < deadline, "".join(shape.output) + _logs(var)
            time.sleep(0.5)
        yield shape
    finally:
        stop_group(process, signal.SIGINT, 60)
        redis.stop()
        api.stop()
        for name in names:
            drop_database(_database(POSTGRES_URL, name))


def _logs(var: Path) -> str:
    return "".join(f"\n--- {log.name}\n{log.read_text()[-2000:]}"
                   for log in sorted((var / "logs").glob("*.log")))


def update(chat: int, text: str) -> Dict[str, Any]:
    update_id = next(UPDATE_IDS)
    return {"update_id": update_id, "message": {
        "message_id": update_id, "date": int(time.time()), "text": text,
        "chat": {"id": chat, "type": "private"},
        "from": {"id": chat, "is_bot": False, "first_name": "Load"}}}


async def post_as_telegram(session: aiohttp.ClientSession, url: str,
                           body: Dict[str, Any]) -> List[int]:
    """Telegram retries an update until it is answered 2xx: the statuses it saw."""
    statuses: List[int] = []
    while True:
        try:
            async with session.post(f"{url}/webhooks/telegram", json=body, headers={
                    "X-Telegram-Bot-Api-Secret-Token": SECRET}) as response:
                statuses.append(response.status)
                if response.status < 300:
                    return statuses
        except aiohttp.ClientError:
            statuses.append(0)
        assert len(statuses) < 60, statuses
        await asyncio.sleep(0.5)


async def converse(shape: Shape, chats: Sequence[int], turns: Sequence[str] = TURNS) -> None:
    """Each chat sends its turns one after another (each acknowledged), all at once."""
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(chat: int) -> None:
            for text in turns:
                await post_as_telegram(session, shape.public, update(chat, text))

        await asyncio.gather(*(one(chat) for chat in chats))


async def settled(shape: Shape, chats: Sequence[int], count: int, seconds: float) -> None:
    """Until each chat has `count` replies, then a moment for any extra one."""
    deadline = time.monotonic() + seconds
    while any(len(shape.api.replies(chat)) < count for chat in chats):
        behind = [chat for chat in chats if len(shape.api.replies(chat)) < count]
        assert time.monotonic() < deadline, (
            f"{len(behind)} conversations unanswered, e.g. {shape.api.replies(behind[0])}")
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)


@pytest.fixture(scope="module")
def expected(shape: Shape) -> List[str]:
    """The bot's replies to TURNS in one quiet conversation, each turn's replies all
    in before the next turn (a turn may bring more than one)."""
    chat = next(CHAT_IDS)

    async def reference() -> None:
        for text in TURNS:
            before = len(shape.api.replies(chat))
            await converse(shape, [chat], [text])
            await settled(shape, [chat], before + 1, 60)

    asyncio.run(reference())
    replies = shape.api.replies(chat)
    assert len(replies) >= len(TURNS), replies
    return replies


async def test_health_shows_every_part_through_the_balancer(shape: Shape) -> None:
    async with aiohttp.ClientSession() as session:
        for url in (shape.public, *shape.gateways):
            async with session.get(f"{url}/health") as response:
                health = await response.json()
            assert response.status == 200, health
            assert {k: health[k] for k in ("rasa", "action_server", "store", "redis")} == {
                "rasa": True, "action_server": True, "store": True, "redis": True}


async def test_200_conversations_of_10_turns_each_get_every_reply_once_in_order(
        shape: Shape, expected: List[str]) -> None:
    chats = [next(CHAT_IDS) for _ in range(CONVERSATIONS)]
    started = time.monotonic()
    await converse(shape, chats)
    await settled(shape, chats, len(expected), 600)
    wrong = {chat: shape.api.replies(chat) for chat in chats
             if shape.api.replies(chat) != expected}
    assert not wrong, f"{len(wrong)} conversations differ, e.g. {next(iter(wrong.values()))}"
    print(f"\n{CONVERSATIONS * len(TURNS)} turns in {time.monotonic() - started:.0f}s")
    # both gateways did the work: the balancer spread the webhooks
    async with aiohttp.ClientSession() as session:
        for url in shape.gateways:
            async with session.get(f"{url}/metrics") as response:
                metrics = await response.text()
            line = next(row for row in metrics.splitlines()
                        if row.startswith("gateway_webhook_requests_total")
                        and 'channel="telegram"' in row and 'code="200"' in row)
            assert float(line.rsplit(" ", 1)[1]) > CONVERSATIONS, line


async def test_a_handoff_claimed_through_one_gateway_shows_on_the_others_console(
        shape: Shape) -> None:
    agent = f"agent-{uuid.uuid4().hex[:6]}"
    add = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "bot"), "agents", "add", agent,
                          "--team", "general"],
                         env=shape.env, cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True)
    token = add.stdout.rsplit(": ", 1)[1].strip()
    chat = next(CHAT_IDS)
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(f"{shape.gateways[1]}/api/events") as console:
        await console.send_json({"token": token})
        assert (await console.receive_json(timeout=5))["type"] == "ready"
        await post_as_telegram(session, shape.public, update(chat, "I want to talk to a human"))
        opened = await _event_for(console, chat, "handoff.opened")
        handoff_id = opened["handoff"]["id"]
        async with session.post(f"{shape.gateways[0]}/api/handoffs/{handoff_id}/claim",
                                json={"agent": agent},
                                headers={"Authorization": f"Bearer {token}"}) as claim:
            assert claim.status == 200, await claim.text()
        claimed = await _event_for(console, chat, "handoff.claimed")
        assert claimed["handoff"]["status"] == "active"


async def _event_for(console: aiohttp.ClientWebSocketResponse, chat: int,
                     kind: str) -> Dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        event = await console.receive_json(timeout=max(0.1, deadline - time.monotonic()))
        if event.get("type") == kind and \
                event["handoff"]["conversation_id"] == f"telegram:{chat}":
            return dict(event)


async def test_a_rasa_instance_killed_under_load_loses_no_message(
        shape: Shape, expected: List[str]) -> None:
    """A turn refused by the dead instance goes to the live one. A turn that was under
    way in it may have run (and written), so it is not asked again: that customer
    hears the apology and waits for a person, the conversation's next messages with
    them. Every other conversation gets every reply, once, in order."""
    chats = [next(CHAT_IDS) for _ in range(40)]
    load = asyncio.ensure_future(converse(shape, chats))
    await asyncio.sleep(1.5)
    killed = listener_pid(shape.rasa_ports[0])
    os.kill(killed, signal.SIGKILL)
    await load
    handed_over = await answered_or_handed_over(shape, chats, expected)
    assert len(handed_over) < len(chats) / 2, "only turns under way in the dead instance"
    await _until_restarted(shape, shape.rasa_ports[0], killed)


async def answered_or_handed_over(shape: Shape, chats: Sequence[int], expected: List[str],
                                  repeats: bool = False, seconds: float = 300
                                  ) -> List[List[str]]:
    """Until every chat has every reply, once, in order, or has been handed to a person
    where its turn may have run: the replies before, the apology, where they stand in
    the queue, then nothing from the bot. With `repeats`, a reply may come twice in a
    row (at least once, see _without_repeats). The handed-over chats' replies."""
    apology = load_channel_policy().texts.bot_unavailable

    def replies(chat: int) -> List[str]:
        got = shape.api.replies(chat)
        return _without_repeats(got) if repeats else got

    deadline = time.monotonic() + seconds
    while not all(replies(chat) == expected or apology in replies(chat) for chat in chats):
        assert time.monotonic() < deadline, "conversations neither answered nor handed over"
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)  # a moment for any extra reply
    handed_over = [replies(chat) for chat in chats if replies(chat) != expected]
    for these in handed_over:
        cut = these.index(apology)
        assert these[:cut] == expected[:cut], these
        assert len(these) == cut + 2, f"the apology, where they stand; then a person: {these}"
    return handed_over


async def _until_restarted(shape: Shape, port: int, old_pid: int) -> None:
    """run-prod starts a dead part again."""
    deadline = time.monotonic() + 180
    async with aiohttp.ClientSession() as session:
        while True:
            assert time.monotonic() < deadline, "".join(shape.output)
            try:
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    if response.status == 200 and listener_pid(port) != old_pid:
                        return
            except (aiohttp.ClientError, AssertionError):
                pass
            await asyncio.sleep(1)


async def test_redis_restarted_under_load_loses_no_message(
        shape: Shape, expected: List[str]) -> None:
    """Turns that fail while Redis is away are answered 503 and asked again. A turn
    whose conversation lock Rasa could not release waits for it to lapse
    (TICKET_LOCK_LIFETIME, longer than a turn) and runs out of the gateway's time:
    that customer is handed to a person, never answered twice or out of order."""
    chats = [next(CHAT_IDS) for _ in range(40)]
    load = asyncio.ensure_future(converse(shape, chats))
    await asyncio.sleep(1.5)
    await asyncio.to_thread(shape.redis.stop)
    await asyncio.sleep(1)
    await asyncio.to_thread(shape.redis.start)
    await load
    handed_over = await answered_or_handed_over(shape, chats, expected, repeats=True)
    # at most the turns under way when Redis went: each gateway runs at most
    # bot_requests_in_flight at once (on this shared machine, 10 to 12 of the 40)
    in_flight = len(shape.gateways) * load_channel_policy().bot_requests_in_flight
    assert len(handed_over) <= min(in_flight, len(chats) / 2), \
        f"only conversations caught mid-turn: {len(handed_over)} of {len(chats)}"


def _without_repeats(replies: List[str]) -> List[str]:
    """A message being processed as Redis went away is processed again after: at least
    once, so its reply may come twice in a row; nothing may be missing or misplaced."""
    return [reply for i, reply in enumerate(replies) if i == 0 or reply != replies[i - 1]]


async def test_postgresql_cut_off_for_seconds_loses_no_message(
        shape: Shape, expected: List[str]) -> None:
    chats = [next(CHAT_IDS) for _ in range(40)]
    load = asyncio.ensure_future(converse(shape, chats))
    await asyncio.sleep(1.5)
    shape.database.cut()
    await asyncio.sleep(4)
    shape.database.mend()
    await load
    await settled(shape, chats, len(expected), 300)
    lost = {chat: replies for chat in chats
            if (replies := _without_repeats(shape.api.replies(chat))) != expected}
    assert not lost, f"{len(lost)} conversations differ, e.g. {next(iter(lost.values()))}"
    async with aiohttp.ClientSession() as session, \
            session.get(f"{shape.public}/health") as response:
        assert response.status == 200, await response.text()


def test_ctrl_c_stops_every_part(shape: Shape) -> None:
    ports = [*shape.rasa_ports, shape.action_port,
             *(int(url.rsplit(":", 1)[1]) for url in [shape.public, *shape.gateways])]
    os.killpg(shape.process.pid, signal.SIGINT)
    assert shape.process.wait(60) == 0
    assert not [port for port in ports if port_open(port)]
    assert "stopped" in "".join(shape.output)

