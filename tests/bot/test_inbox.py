"""Inbound queues: each conversation processed in order and one message at a time,
also with two gateway processes sharing Redis, and nothing lost when a process stops
in the middle or Redis is down; the Redis dedupe keys expire."""
from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Dict, Iterator, List
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import sqlalchemy.exc
from aiohttp.test_utils import TestClient, TestServer
from redis import asyncio as aioredis

import bot.app
import bot.messaging.inbox
import bot.services
from bot.messaging.inbox import InboxUnavailable, RedisInbox, SqlInbox, decode
from bot.messaging.records import GatewayRecords, inbox_spool
from bot.policies import load_channel_policy
from bot.services import connect_redis
from bot.settings import load_settings
from common.sql import create_store_engine
from connectors.message import Attachment, Message
from connectors.telegram import SECRET_HEADER, TelegramChannel
from tests.connectors.test_telegram import SECRET, credentials, message_update
from tests.provider_api import ProviderAPI, free_port
from tests.redis_server import RedisServer, needs_redis_server
from tests.tcp_proxy import CuttableProxy


def message(conversation: str, number: int, message_id: str = "") -> Message:
    return Message(connector="test", channel="sms", sender=conversation,
                   message_id=message_id or f"{conversation}-{number}", text=str(number),
                   attachments=(Attachment("image", "https://example.test/p.jpg"),))


class Processor:
    """Records what was processed, and checks that no conversation ever has two
    messages in processing at once."""

    def __init__(self, seconds: float = 0.005) -> None:
        self.seconds = seconds
        self.done: Dict[str, List[str]] = {}
        self.busy: set[str] = set()
        self.overlaps = 0

    async def __call__(self, msg: Message) -> None:
        if msg.conversation_id in self.busy:
            self.overlaps += 1
        self.busy.add(msg.conversation_id)
        await asyncio.sleep(self.seconds)
        self.done.setdefault(msg.sender, []).append(msg.text)
        self.busy.discard(msg.conversation_id)

    async def wait_for(self, count: int, timeout: float = 10) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while sum(map(len, self.done.values())) < count:
            assert asyncio.get_running_loop().time() < deadline, self.done
            await asyncio.sleep(0.01)


async def spool_moved(inbox: RedisInbox, spool: GatewayRecords, timeout: float = 10) -> None:
    """Until the spool is empty and the inbox knows it: the sweep that finds it empty
    clears `spooling`, which may come after the last spooled message was processed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while spool.spooled(10) or inbox.spooling:
        assert asyncio.get_running_loop().time() < deadline, "the spool was not moved"
        await asyncio.sleep(0.05)


@pytest.fixture
def records(tmp_path: Path) -> Iterator[GatewayRecords]:
    """The gateway's records, where the Redis inbox spools while Redis is down."""
    kept = GatewayRecords(create_store_engine(f"sqlite:///{tmp_path / 'gateway.db'}"))
    yield kept
    kept.close()


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.close()


@pytest.fixture
def prefix(redis_url: str) -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


async def test_sql_inbox_orders_each_conversation(records: GatewayRecords) -> None:
    inbox, processor = SqlInbox(records, 60), Processor()
    await inbox.start(processor)
    for number in range(20):
        for conversation in ("alice", "bob"):
            await inbox.enqueue(message(conversation, number))
    await processor.wait_for(40)
    await inbox.stop()
    assert processor.done == {c: [str(n) for n in range(20)] for c in ("alice", "bob")}
    assert processor.overlaps == 0
    assert records.spooled(100) == [], "processed messages are not kept"


async def test_sql_inbox_refuses_a_provider_retry(records: GatewayRecords) -> None:
    inbox, processor = SqlInbox(records, 60), Processor()
    await inbox.start(processor)
    assert await inbox.enqueue(message("alice", 1))
    assert not await inbox.enqueue(message("alice", 1))
    await processor.wait_for(1)
    await inbox.stop()
    assert processor.done == {"alice": ["1"]}


async def test_sql_inbox_leaves_what_it_did_not_finish_to_the_next_start(
        records: GatewayRecords) -> None:
    """Stopped in the middle of a message, the inbox keeps it and those behind it; the
    next start processes them in order before any new one."""
    stuck, processor = asyncio.Event(), Processor()

    async def hangs(msg: Message) -> None:
        await stuck.wait()

    first = SqlInbox(records, 60)
    await first.start(hangs)
    for number in range(1, 4):
        await first.enqueue(message("alice", number))
    await first.enqueue(message("bob", 1))
    await first.stop(grace_seconds=0.05)
    assert len(records.spooled(10)) == 4

    second = SqlInbox(records, 60)
    await second.start(processor)
    await second.enqueue(message("alice", 4))
    await processor.wait_for(5)
    await second.stop()
    assert processor.done == {"alice": ["1", "2", "3", "4"], "bob": ["1"]}
    assert records.spooled(10) == []


async def test_sql_inbox_answers_unavailable_when_the_database_cannot_keep_it(
        records: GatewayRecords) -> None:
    inbox = SqlInbox(records, 60)
    await inbox.start(Processor())
    inbox_spool.drop(records.engine)
    with pytest.raises(InboxUnavailable):
        await inbox.enqueue(message("alice", 1))
    await inbox.stop()


async def test_sql_inbox_starts_processing_before_the_webhook_is_answered(
        records: GatewayRecords) -> None:
    """Processing starts inside enqueue, so its first wait (a trip to the records'
    thread) overlaps the webhook's answer instead of following it."""
    inbox, processor = SqlInbox(records, 60), Processor()
    await inbox.start(processor)
    await inbox.enqueue(message("alice", 1))
    assert processor.busy == {"test:alice"}
    await processor.wait_for(1)
    await inbox.stop()


async def test_two_redis_inboxes_keep_order_with_no_overlap_or_loss(
        redis: aioredis.Redis, records: GatewayRecords, prefix: str) -> None:
    """Two gateway processes take messages of the same conversations alternately."""
    processor = Processor()
    inboxes = [RedisInbox(redis, records, 60, prefix=prefix) for _ in range(2)]
    for inbox in inboxes:
        await inbox.start(processor)
    for number in range(30):
        for conversation in ("alice", "bob", "carol"):
            await inboxes[number % 2].enqueue(message(conversation, number))
    await processor.wait_for(90)
    for inbox in inboxes:
        await inbox.stop()
    assert processor.done == {c: [str(n) for n in range(30)]
                              for c in ("alice", "bob", "carol")}
    assert processor.overlaps == 0
    assert not await redis.smembers(f"{prefix}:inbox:pending")


# with the spool unreadable too: the sweep that picks up conversations does not wait on
# the database (it once came after the spool's move in one loop)
@pytest.mark.parametrize("spool_readable", [True, False])
async def test_a_message_left_by_a_stopped_process_is_processed_by_another(
        redis: aioredis.Redis, records: GatewayRecords, prefix: str,
        spool_readable: bool) -> None:
    if not spool_readable:
        inbox_spool.drop(records.engine)
    stopping = RedisInbox(redis, records, 60, prefix=prefix)
    blocked = asyncio.Event()

    async def never_finishes(msg: Message) -> None:
        blocked.set()
        await asyncio.sleep(3600)

    await stopping.start(never_finishes)
    await stopping.enqueue(message("alice", 1))
    await asyncio.wait_for(blocked.wait(), 5)
    await stopping.stop(grace_seconds=0.1)  # stops mid-message: the message is still at the head
    # as if it had crashed: its lock stays until it expires
    await redis.set(f"{prefix}:lock:test:alice", "crashed-process", px=300)

    processor = Processor()
    survivor = RedisInbox(redis, records, 60, prefix=prefix)
    survivor.SWEEP_SECONDS = 0.1
    await survivor.start(processor)
    await processor.wait_for(1)
    await survivor.stop()
    assert processor.done == {"alice": ["1"]}


async def test_a_provider_retry_is_refused_until_its_key_expires(
        redis: aioredis.Redis, records: GatewayRecords, prefix: str) -> None:
    inbox, processor = RedisInbox(redis, records, 1, prefix=prefix), Processor()
    await inbox.start(processor)
    assert await inbox.enqueue(message("alice", 1))
    assert not await inbox.enqueue(message("alice", 1))
    assert await inbox.enqueue(message("alice", 2))
    assert 0 < await redis.ttl(f"{prefix}:seen:test:alice-1") <= 1
    await processor.wait_for(2)
    await inbox.stop()
    assert processor.done == {"alice": ["1", "2"]}


async def test_a_message_is_never_marked_seen_without_being_kept(
        redis: aioredis.Redis, records: GatewayRecords, prefix: str) -> None:
    """The dedupe key and the queue entry are one step: when the push cannot happen
    (here the queue key holds another type), neither does the key, so the provider's
    retry is taken."""
    inbox = RedisInbox(redis, records, 60, prefix=prefix)
    await redis.set(f"{prefix}:inbox:test:alice", "not a list")
    with pytest.raises(InboxUnavailable):
        await inbox.enqueue(message("alice", 1))
    assert not await redis.exists(f"{prefix}:seen:test:alice-1")


# -- while Redis is down: the spool --------------------------------------------------

@pytest.fixture
def spool(store_url: str) -> Iterator[GatewayRecords]:
    """The records on SQLite and on PostgreSQL, with an empty spool."""
    kept = GatewayRecords(create_store_engine(store_url))
    with kept.engine.begin() as db:
        db.execute(inbox_spool.delete())
    yield kept
    kept.close()


@pytest.fixture
def down_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of the test's own, not started yet."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@needs_redis_server
async def test_messages_arriving_while_redis_is_down_are_spooled_and_processed_after(
        down_redis: RedisServer, spool: GatewayRecords, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept (so the webhook is answered 200: Twilio would not send it again), then
    processed in order once Redis is back, with no one restarting anything; moved one
    batch at a time."""
    monkeypatch.setattr(RedisInbox, "SWEEP_SECONDS", 0.1)
    monkeypatch.setattr(RedisInbox, "SPOOL_BATCH", 2)
    redis = aioredis.from_url(down_redis.url)
    inbox, processor = RedisInbox(redis, spool, 60, prefix=prefix), Processor()
    await inbox.start(processor)
    for sent in (message("alice", 1), message("bob", 1), message("alice", 2)):
        assert await inbox.enqueue(sent)
    await asyncio.sleep(0.3)
    assert processor.done == {} and len(spool.spooled(10)) == 3

    await asyncio.to_thread(down_redis.start)
    await processor.wait_for(3)
    assert processor.done == {"alice": ["1", "2"], "bob": ["1"]}
    await spool_moved(inbox, spool)
    assert not await inbox.enqueue(message("alice", 2)), "a provider retry, refused as usual"
    assert await inbox.enqueue(message("alice", 3))
    await processor.wait_for(4)
    await inbox.stop()
    await redis.close()
    assert processor.done == {"alice": ["1", "2", "3"], "bob": ["1"]}


@needs_redis_server
async def test_a_message_arriving_as_redis_returns_waits_behind_the_spooled_ones(
        down_redis: RedisServer, spool: GatewayRecords, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis is back before the spool is moved: a new message joins the spool rather
    than overtake it, in the process that spooled and in another that saw the spool
    as it swept. Processes that stop with messages spooled leave them to the next
    one, which moves them as it starts."""
    monkeypatch.setattr(RedisInbox, "SWEEP_SECONDS", 3600)
    redis = aioredis.from_url(down_redis.url)
    processor = Processor()
    spooling, other = (RedisInbox(redis, spool, 60, prefix=prefix) for _ in range(2))
    await spooling.start(processor)
    assert await spooling.enqueue(message("alice", 1))
    await other.start(processor)  # its first sweep finds alice's message, Redis still down
    await asyncio.sleep(0.2)
    await asyncio.to_thread(down_redis.start)
    assert await spooling.enqueue(message("alice", 2))
    assert await other.enqueue(message("alice", 3))
    assert [decode_text(raw) for _, raw in spool.spooled(10)] == ["1", "2", "3"]
    await spooling.stop()
    await other.stop()

    successor = RedisInbox(redis, spool, 60, prefix=prefix)
    await successor.start(processor)
    await processor.wait_for(3)
    await successor.stop()
    await redis.close()
    assert processor.done == {"alice": ["1", "2", "3"]} and spool.spooled(10) == []


@needs_redis_server
async def test_after_a_redis_restart_idle_connections_send_no_message_to_the_spool(
        down_redis: RedisServer, spool: GatewayRecords, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pooled connection died with the restart; each is checked and opened again
    before use, so Redis takes the messages: none waits in the spool, where the
    conversation's next message, taken by another gateway, could overtake it."""
    monkeypatch.setattr(bot.services, "REDIS_IDLE_CHECK_SECONDS", 0.1)
    await asyncio.to_thread(down_redis.start)
    redis = connect_redis(down_redis.url)
    inbox, processor = RedisInbox(redis, spool, 60, prefix=prefix), Processor()
    await inbox.start(processor)
    conversations = [f"c{n}" for n in range(5)]
    # at once, so the pool holds several connections
    await asyncio.gather(*(inbox.enqueue(message(c, 1)) for c in conversations))
    await processor.wait_for(len(conversations))

    await asyncio.to_thread(down_redis.stop)
    await asyncio.to_thread(down_redis.start)
    await asyncio.sleep(0.3)
    assert all(await asyncio.gather(*(inbox.enqueue(message(c, 2)) for c in conversations)))
    await spool_moved(inbox, spool)
    await processor.wait_for(2 * len(conversations))
    await inbox.stop()
    await redis.close()
    assert processor.done == {c: ["1", "2"] for c in conversations}


async def test_the_gateways_redis_serves_more_commands_at_once_than_a_default_pool(
        redis_url: str, prefix: str) -> None:
    """redis-py 6 and later cap a pool at 100 connections and fail the next command at
    once; 200 conversations at once paused the inbox that way. Each BLPOP here holds its
    connection for a moment, as a busy turn's commands do."""
    redis = connect_redis(redis_url)
    try:
        waits = [redis.blpop([f"{prefix}:empty"], timeout=0.5) for _ in range(150)]
        assert await asyncio.gather(*waits) == [None] * 150
    finally:
        await redis.close()


@needs_redis_server
async def test_when_neither_redis_nor_the_spool_can_keep_a_message_the_inbox_says_so(
        down_redis: RedisServer, records: GatewayRecords, prefix: str) -> None:
    """The router answers the webhook 503 then, and the provider sends it again."""
    inbox_spool.drop(records.engine)
    redis = aioredis.from_url(down_redis.url)
    inbox = RedisInbox(redis, records, 60, prefix=prefix)
    with pytest.raises(InboxUnavailable):
        await inbox.enqueue(message("alice", 1))
    await redis.close()


def decode_text(raw: str) -> str:
    return bot.messaging.inbox.decode(raw).text


@pytest.mark.parametrize(("failure", "processed"), [
    # a failure of that message only: logged and passed over, the rest still flows
    (RuntimeError("a bug"), ["1", "3", "4"]),
    # an outage of the database or Redis: waited out, the message keeps its place
    (sqlalchemy.exc.OperationalError("UPDATE", {}, ConnectionRefusedError()),
     ["1", "2", "3", "4"]),
    (aioredis.ConnectionError("Connection refused"), ["1", "2", "3", "4"]),
])
async def test_a_failing_message_is_passed_over_and_an_outage_waited_out(
        failure: Exception, processed: List[str], monkeypatch: pytest.MonkeyPatch,
        records: GatewayRecords) -> None:
    monkeypatch.setattr(bot.messaging.inbox, "RETRY_FIRST_SECONDS", 0.01)
    processor, failures = Processor(), [failure, failure]

    async def failing(msg: Message) -> None:
        if msg.text == "2" and failures:
            raise failures.pop()
        await processor(msg)

    inbox = SqlInbox(records, 60)
    await inbox.start(failing)
    for number in range(1, 5):
        await inbox.enqueue(message("alice", number))
    await processor.wait_for(len(processed))
    await inbox.stop()
    assert processor.done == {"alice": processed}


async def test_a_black_holed_redis_does_not_hang_a_webhook(
        redis_url: str, tmp_path: Path) -> None:
    """Redis's host stops answering (no refusal, no reset): the webhook is still
    answered 200 within the client's timeout, its message kept in the spool."""
    proxy = CuttableProxy(urlsplit(redis_url).port or 6379)
    proxy.mend()
    telegram = await ProviderAPI().start()
    settings = dataclasses.replace(
        load_settings(), var_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'store.db'}",
        gateway_database_override=f"sqlite:///{tmp_path / 'gateway.db'}",
        redis_url=f"redis://127.0.0.1:{proxy.port}/0", rasa_url=f"http://127.0.0.1:{free_port()}")
    policy = load_channel_policy()
    client = TestClient(TestServer(bot.app.create_app(
        settings, {"telegram": TelegramChannel(credentials(telegram.url), policy)}, policy)))
    await client.start_server()
    try:
        proxy.swallow()
        started = time.monotonic()
        response = await client.post("/webhooks/telegram", json=message_update(9001, text="hi"),
                                     headers={SECRET_HEADER: SECRET})
        assert response.status == 200
        # at most two waits: an idle connection's PING, then the command on a new one
        assert time.monotonic() - started < 2 * bot.services.REDIS_TIMEOUT_SECONDS + 1
        records = client.app[bot.app.ROUTER].records
        assert [decode(raw).text for _, raw in records.spooled(10)] == ["hi"]
    finally:
        proxy.cut()
        await client.close()
        await telegram.stop()
