"""Inbound queues: each conversation processed in order and one message at a time,
also with two gateway processes sharing Redis, and nothing lost when a process stops
in the middle; the Redis dedupe keys expire."""
from __future__ import annotations

import asyncio
import uuid
from typing import AsyncIterator, Dict, List

import pytest
import pytest_asyncio
import sqlalchemy.exc
from redis import asyncio as aioredis

import bot.inbox
from bot.inbox import MemoryInbox, RedisInbox
from connectors.message import Attachment, Message


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


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.close()


@pytest.fixture
def prefix(redis_url: str) -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


async def test_memory_inbox_orders_each_conversation() -> None:
    inbox, processor = MemoryInbox(), Processor()
    await inbox.start(processor)
    for number in range(20):
        for conversation in ("alice", "bob"):
            await inbox.enqueue(message(conversation, number))
    await processor.wait_for(40)
    await inbox.stop()
    assert processor.done == {c: [str(n) for n in range(20)] for c in ("alice", "bob")}
    assert processor.overlaps == 0


async def test_two_redis_inboxes_keep_order_with_no_overlap_or_loss(
        redis: aioredis.Redis, prefix: str) -> None:
    """Two gateway processes take messages of the same conversations alternately."""
    processor = Processor()
    inboxes = [RedisInbox(redis, 60, prefix=prefix), RedisInbox(redis, 60, prefix=prefix)]
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


async def test_a_message_left_by_a_stopped_process_is_processed_by_another(
        redis: aioredis.Redis, prefix: str) -> None:
    stopping = RedisInbox(redis, 60, prefix=prefix)
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
    survivor = RedisInbox(redis, 60, prefix=prefix)
    survivor.SWEEP_SECONDS = 0.1
    await survivor.start(processor)
    await processor.wait_for(1)
    await survivor.stop()
    assert processor.done == {"alice": ["1"]}


async def test_a_provider_retry_is_refused_until_its_key_expires(
        redis: aioredis.Redis, prefix: str) -> None:
    inbox, processor = RedisInbox(redis, 1, prefix=prefix), Processor()
    await inbox.start(processor)
    assert await inbox.enqueue(message("alice", 1))
    assert not await inbox.enqueue(message("alice", 1))
    assert await inbox.enqueue(message("alice", 2))
    assert 0 < await redis.ttl(f"{prefix}:seen:test:alice-1") <= 1
    await processor.wait_for(2)
    await inbox.stop()
    assert processor.done == {"alice": ["1", "2"]}


async def test_a_message_is_never_marked_seen_without_being_kept(
        redis: aioredis.Redis, prefix: str) -> None:
    """The dedupe key and the queue entry are one step: when the push cannot happen
    (here the queue key holds another type), neither does the key, so the provider's
    retry is taken."""
    inbox = RedisInbox(redis, 60, prefix=prefix)
    await redis.set(f"{prefix}:inbox:test:alice", "not a list")
    with pytest.raises(aioredis.ResponseError):
        await inbox.enqueue(message("alice", 1))
    assert not await redis.exists(f"{prefix}:seen:test:alice-1")


@pytest.mark.parametrize(("failure", "processed"), [
    # a failure of that message only: logged and passed over, the rest still flows
    (RuntimeError("a bug"), ["1", "3", "4"]),
    # an outage of the database or Redis: waited out, the message keeps its place
    (sqlalchemy.exc.OperationalError("UPDATE", {}, ConnectionRefusedError()),
     ["1", "2", "3", "4"]),
    (aioredis.ConnectionError("Connection refused"), ["1", "2", "3", "4"]),
])
async def test_a_failing_message_is_passed_over_and_an_outage_waited_out(
        failure: Exception, processed: List[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bot.inbox, "RETRY_FIRST_SECONDS", 0.01)
    processor, failures = Processor(), [failure, failure]

    async def failing(msg: Message) -> None:
        if msg.text == "2" and failures:
            raise failures.pop()
        await processor(msg)

    inbox = MemoryInbox()
    await inbox.start(failing)
    for number in range(1, 5):
        await inbox.enqueue(message("alice", number))
    await processor.wait_for(len(processed))
    await inbox.stop()
    assert processor.done == {"alice": processed}
