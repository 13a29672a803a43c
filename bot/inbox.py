"""Inbound queues: each accepted message is kept and processed in order, one at a time
per conversation; and the Redis dedupe of provider retries.

Two implementations of one small interface:
- `MemoryInbox` (embedded default, one gateway process): a queue and a worker task per
  busy conversation.
- `RedisInbox` (REDIS_URL, any number of gateway processes): a Redis list per
  conversation, a lock per conversation so exactly one process drains it, and a sweep
  that picks up conversations left behind by a process that stopped.
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import asdict
from typing import Any, Awaitable, Callable, Coroutine, Dict, Optional, Protocol

from redis import asyncio as aioredis

from connectors.message import Attachment, Message

log = logging.getLogger("bot.inbox")

Process = Callable[[Message], Awaitable[None]]


class Inbox(Protocol):
    async def enqueue(self, message: Message) -> None:
        """Keep the message; it is processed after the conversation's earlier ones."""

    async def start(self, process: Process) -> None:
        ...

    async def stop(self, grace_seconds: float = 10.0) -> None:
        ...


class RedisDedupe:
    """Provider message ids seen within `seconds`, as Redis keys that expire. (Without
    Redis, the dedupe key is written in the same SQL transaction as the message.)"""

    def __init__(self, redis: aioredis.Redis, seconds: float, prefix: str = "gw") -> None:
        self.redis = redis
        self.seconds = max(1, int(seconds))
        self.prefix = prefix

    async def claim(self, message: Message) -> bool:
        """True the first time this message id is seen; False for a provider retry."""
        return bool(await self.redis.set(f"{self.prefix}:seen:{message.dedupe_key}", "1",
                                         nx=True, ex=self.seconds))


class _ConversationWorkers:
    """One drain task per conversation at a time, tracked so stop() can wait for them."""

    def __init__(self) -> None:
        self.tasks: Dict[str, asyncio.Task[None]] = {}
        self.stopping = False

    def ensure(self, conversation_id: str,
               drain: Callable[[str], Coroutine[Any, Any, None]]) -> None:
        task = self.tasks.get(conversation_id)
        if self.stopping:
            return
        if task is None or task.done():
            task = asyncio.create_task(drain(conversation_id))
            self.tasks[conversation_id] = task
            task.add_done_callback(lambda _: self._forget(conversation_id, task))

    def _forget(self, conversation_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(conversation_id) is task:
            del self.tasks[conversation_id]

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Let messages in processing finish (drains stop taking new ones once
        `stopping` is set), then cancel what is still running."""
        self.stopping = True
        tasks = list(self.tasks.values())
        if tasks:
            _, running = await asyncio.wait(tasks, timeout=grace_seconds)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)


class MemoryInbox:
    def __init__(self) -> None:
        self.queues: Dict[str, asyncio.Queue[Message]] = {}
        self.workers = _ConversationWorkers()
        self.process: Optional[Process] = None

    async def enqueue(self, message: Message) -> None:
        self.queues.setdefault(message.conversation_id, asyncio.Queue()).put_nowait(message)
        self.workers.ensure(message.conversation_id, self._drain)

    async def _drain(self, conversation_id: str) -> None:
        queue = self.queues[conversation_id]
        assert self.process is not None, "enqueue() before start()"
        while not queue.empty():  # in memory: finish the queue even when stopping
            await process_guarded(self.process, queue.get_nowait())
        del self.queues[conversation_id]

    async def start(self, process: Process) -> None:
        self.process = process

    async def stop(self, grace_seconds: float = 10.0) -> None:
        await self.workers.stop(grace_seconds)


_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


class RedisInbox:
    """Messages wait in `gw:inbox:<conversation>`; the process holding
    `gw:lock:<conversation>` processes the head, then pops it, so a process that dies
    mid-message leaves it for the next one (at least once, never lost)."""

    LOCK_MS = 30_000
    SWEEP_SECONDS = 2.0

    def __init__(self, redis: aioredis.Redis, prefix: str = "gw") -> None:
        self.redis = redis
        self.prefix = prefix
        self.pending = f"{prefix}:inbox:pending"
        self.workers = _ConversationWorkers()
        self.process: Optional[Process] = None
        self.sweeper: Optional[asyncio.Task[None]] = None
        self.release = redis.register_script(_RELEASE)
        self.renew = redis.register_script(_RENEW)

    def _queue(self, conversation_id: str) -> str:
        return f"{self.prefix}:inbox:{conversation_id}"

    async def enqueue(self, message: Message) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self._queue(message.conversation_id), encode(message))
            pipe.sadd(self.pending, message.conversation_id)
            await pipe.execute()
        self.workers.ensure(message.conversation_id, self._drain)

    async def _drain(self, conversation_id: str) -> None:
        """Process while we hold the lock; after releasing, look again, because a
        message pushed while another process held the lock is ours to pick up."""
        queue, lock = self._queue(conversation_id), f"{self.prefix}:lock:{conversation_id}"
        while True:
            token = uuid.uuid4().hex
            if not await self.redis.set(lock, token, nx=True, px=self.LOCK_MS):
                return  # another process is draining; it looks again after releasing
            try:
                await self._drain_locked(queue, lock, token)
            finally:
                await self.release(keys=[lock], args=[token])
            if not await self.redis.llen(queue):
                await self.redis.srem(self.pending, conversation_id)
                if not await self.redis.llen(queue):
                    return
                await self.redis.sadd(self.pending, conversation_id)
            if self.workers.stopping:
                return  # what is left stays pending for the other processes

    async def _drain_locked(self, queue: str, lock: str, token: str) -> None:
        assert self.process is not None, "enqueue() before start()"
        keepalive = asyncio.create_task(self._keep_lock(lock, token))
        try:
            while not self.workers.stopping and \
                    (raw := await self.redis.lindex(queue, 0)) is not None:
                try:
                    message = decode(raw)
                except (ValueError, TypeError, KeyError):
                    log.error("dropping an undecodable inbox entry in %s", queue)
                else:
                    await process_guarded(self.process, message)
                await self.redis.lpop(queue)
        finally:
            keepalive.cancel()

    async def _keep_lock(self, lock: str, token: str) -> None:
        """Processing one message may outlast the lock (bot retries, rate limits)."""
        while True:
            await asyncio.sleep(self.LOCK_MS / 3000)
            await self.renew(keys=[lock], args=[token, self.LOCK_MS])

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.SWEEP_SECONDS)
            try:
                for member in await self.redis.smembers(self.pending):
                    self.workers.ensure(member.decode(), self._drain)
            except aioredis.RedisError as error:
                log.warning("inbox sweep failed: %s", type(error).__name__)

    async def start(self, process: Process) -> None:
        self.process = process
        self.sweeper = asyncio.create_task(self._sweep())

    async def stop(self, grace_seconds: float = 10.0) -> None:
        if self.sweeper:
            self.sweeper.cancel()
            await asyncio.gather(self.sweeper, return_exceptions=True)
        await self.workers.stop(grace_seconds)


async def process_guarded(process: Process, message: Message) -> None:
    """A message whose processing fails is logged and passed over, so the rest of its
    conversation still flows. Only the error's type is logged: database errors quote
    the statement's parameters, which hold the customer's text."""
    try:
        await process(message)
    except Exception as error:  # whatever went wrong, it concerns this message only
        log.error("processing %s message %s failed: %s", message.connector,
                  message.message_id, type(error).__name__)


def encode(message: Message) -> str:
    return json.dumps(asdict(message))


def decode(raw: bytes | str) -> Message:
    fields = json.loads(raw)
    fields["attachments"] = tuple(Attachment(**a) for a in fields.get("attachments", []))
    return Message(**fields)

