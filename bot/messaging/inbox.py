"""Inbound queues: each accepted message is kept and processed in order, one at a time
per conversation.

Two implementations of one small interface:
- `SqlInbox` (embedded default, one gateway process): each message is kept in the
  gateway's SQL records before the webhook is answered, so a crash loses none, with a
  queue and a worker task per busy conversation in memory. Provider retries are
  refused when the message is kept: its dedupe key is claimed in the same transaction.
- `RedisInbox` (REDIS_URL, any number of gateway processes): a Redis list per
  conversation, a lock per conversation so exactly one process drains it, and a sweep
  that picks up conversations left behind by a process that stopped. It refuses
  provider retries itself: the dedupe key and the message are written in one step, so
  a message is never marked seen without being kept. While Redis is unreachable,
  messages wait in a spool in the gateway's SQL records and move to Redis, oldest
  first, when it is back: not every provider sends a webhook again (Twilio does not).

A message whose processing meets an outage of the database or Redis is retried until
they are back; any other failure concerns that message only and is passed over.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import asdict
from typing import (
    Any,
    Awaitable,
    Callable,
    Coroutine,
    Dict,
    List,
    Optional,
    Protocol,
    Tuple,
    Type,
    cast,
)

import sqlalchemy.exc
from redis import asyncio as aioredis

from bot.messaging.records import GatewayRecords
from connectors.message import Attachment, Message

log = logging.getLogger("bot.messaging.inbox")

Process = Callable[[Message], Awaitable[None]]


class InboxUnavailable(Exception):
    """The message could not be kept: the sender should send it again later."""


class Inbox(Protocol):
    async def enqueue(self, message: Message) -> bool:
        """Keep the message; it is processed after the conversation's earlier ones.
        False when it is a provider retry of a message already kept. Raises
        InboxUnavailable when it cannot be kept."""

    async def start(self, process: Process) -> None:
        ...

    async def stop(self, grace_seconds: float = 10.0) -> None:
        ...


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


class SqlInbox:
    """Each message is written to the gateway's records before the webhook is answered
    (its dedupe key claimed in the same transaction) and taken out only once processed.
    A gateway that stops or crashes in between finds it there at its next start and
    processes it then, in order (at least once: a message whose turn had already run
    is asked again)."""

    LOAD_BATCH = 500

    def __init__(self, records: GatewayRecords, dedupe_seconds: float) -> None:
        self.records = records
        self.dedupe_seconds = dedupe_seconds
        self.queues: Dict[str, asyncio.Queue[Tuple[int, Message]]] = {}
        self.workers = _ConversationWorkers()
        self.process: Optional[Process] = None

    async def enqueue(self, message: Message) -> bool:
        try:
            kept = await self.records.write(self.records.spool, encode(message),
                                            message.dedupe_key, self.dedupe_seconds)
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise InboxUnavailable("the gateway's database cannot keep the message") \
                from error
        if kept is None:
            return False
        self._queue(kept, message)
        # The worker starts now, not after the webhook is answered: its first trip to
        # the records' thread then overlaps the answer (bench/results/gateway.md).
        await asyncio.sleep(0)
        return True

    def _queue(self, spool_id: int, message: Message) -> None:
        queue = self.queues.setdefault(message.conversation_id, asyncio.Queue())
        queue.put_nowait((spool_id, message))
        self.workers.ensure(message.conversation_id, self._drain)

    async def _drain(self, conversation_id: str) -> None:
        """A message cut off by the gateway's stop stays kept, for the next start."""
        queue = self.queues[conversation_id]
        assert self.process is not None, "enqueue() before start()"
        while not queue.empty() and not self.workers.stopping:
            spool_id, message = queue.get_nowait()
            await process_guarded(self.process, message, self.workers)
            await self.records.write(self.records.unspool, spool_id)
        if queue.empty():
            del self.queues[conversation_id]

    async def start(self, process: Process) -> None:
        """Take up what an earlier run acknowledged and did not finish, oldest first,
        before any new message can arrive."""
        self.process = process
        after, taken_up = 0, 0
        while batch := await self.records.read(self.records.spooled, self.LOAD_BATCH, after):
            for spool_id, raw in batch:
                try:
                    self._queue(spool_id, decode(raw))
                    taken_up += 1
                except (ValueError, TypeError, KeyError):
                    log.error("dropping an undecodable inbox entry")
                    await self.records.write(self.records.unspool, spool_id)
            after = batch[-1][0]
        if taken_up:
            log.info("taking up %d message(s) the last run acknowledged", taken_up)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        await self.workers.stop(grace_seconds)


# the message, the pending mark and the dedupe key in one step, the key last: a script
# that fails midway keeps what it wrote before
_KEEP_ONCE = """
if redis.call('exists', KEYS[1]) == 1 then return 0 end
redis.call('rpush', KEYS[2], ARGV[2])
redis.call('sadd', KEYS[3], ARGV[3])
redis.call('set', KEYS[1], '1', 'EX', ARGV[1])
return 1
"""
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
    SPOOL_BATCH = 100

    def __init__(self, redis: aioredis.Redis, spool: GatewayRecords, dedupe_seconds: float,
                 prefix: str = "gw") -> None:
        self.redis = redis
        self.spool = spool
        self.dedupe_seconds = max(1, int(dedupe_seconds))
        self.prefix = prefix
        self.pending = f"{prefix}:inbox:pending"
        self.workers = _ConversationWorkers()
        self.process: Optional[Process] = None
        self.sweepers: List[asyncio.Task[None]] = []
        self.keep_once = redis.register_script(_KEEP_ONCE)
        self.release = redis.register_script(_RELEASE)
        self.renew = redis.register_script(_RENEW)
        # Set while the spool holds messages (this process spooled them, or its sweep
        # found them there): later ones join them, so none overtakes them. The lock
        # orders spooling against moving them to Redis.
        self.spooling = False
        self.spool_lock = asyncio.Lock()

    def _queue(self, conversation_id: str) -> str:
        return f"{self.prefix}:inbox:{conversation_id}"

    async def enqueue(self, message: Message) -> bool:
        if self.spooling:
            async with self.spool_lock:
                if self.spooling:
                    await self._spool(message)
                    return True
        try:
            return await self._keep(message)
        except REDIS_OUTAGES as error:
            log.warning("Redis cannot take a %s message (%s); it waits in the spool",
                        message.connector, type(error).__name__)
            async with self.spool_lock:
                await self._spool(message)
            return True
        except aioredis.RedisError as error:
            raise InboxUnavailable(f"Redis refused the message: {error}") from error

    async def _keep(self, message: Message) -> bool:
        kept = await self.keep_once(
            keys=[f"{self.prefix}:seen:{message.dedupe_key}",
                  self._queue(message.conversation_id), self.pending],
            args=[self.dedupe_seconds, encode(message), message.conversation_id])
        if kept:
            self.workers.ensure(message.conversation_id, self._drain)
        return bool(kept)

    async def _spool(self, message: Message) -> None:
        try:
            await self.spool.write(self.spool.spool, encode(message))
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise InboxUnavailable("neither Redis nor the spool can keep the message") \
                from error
        self.spooling = True

    async def _unspool(self) -> None:
        """Move spooled messages to Redis, oldest first; provider retries among them are
        refused there as usual. Raises a Redis or database error when one is still out,
        leaving the rest for the next sweep."""
        while True:
            # A batch at a time, so a message arriving meanwhile joins the spool's end
            # rather than wait for all of it. Found here, the spool may be another
            # process's: newer messages wait behind it in this one too.
            async with self.spool_lock:
                batch = await self.spool.read(self.spool.spooled, self.SPOOL_BATCH)
                self.spooling = bool(batch)
                if not batch:
                    return
                for spool_id, raw in batch:
                    try:
                        await self._keep(decode(raw))
                    except (ValueError, TypeError, KeyError):
                        log.error("dropping an undecodable spooled message")
                    await self.spool.write(self.spool.unspool, spool_id)

    async def _drain(self, conversation_id: str) -> None:
        """Process while we hold the lock; after releasing, look again, because a
        message pushed while another process held the lock is ours to pick up."""
        try:
            await self._drain_while_held(conversation_id)
        except aioredis.RedisError as error:
            # the message stays at the head of its queue; the sweep comes back for it
            log.warning("inbox paused, Redis failed: %s", type(error).__name__)

    async def _drain_while_held(self, conversation_id: str) -> None:
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
                    await process_guarded(self.process, message, self.workers)
                await self.redis.lpop(queue)
        finally:
            keepalive.cancel()

    async def _keep_lock(self, lock: str, token: str) -> None:
        """Processing one message may outlast the lock (bot retries, rate limits)."""
        while True:
            await asyncio.sleep(self.LOCK_MS / 3000)
            try:
                await self.renew(keys=[lock], args=[token, self.LOCK_MS])
            except aioredis.RedisError as error:
                # keep trying: a lock that lapses lets another process answer it again
                log.warning("inbox lock not renewed, Redis failed: %s", type(error).__name__)

    async def _pick_up_pending(self) -> None:
        for member in await self.redis.smembers(self.pending):
            # the client does not decode responses: bytes
            self.workers.ensure(cast(bytes, member).decode(), self._drain)

    async def _sweep(self, step: Callable[[], Awaitable[None]], what: str) -> None:
        while True:
            try:
                await step()
            except (aioredis.RedisError, sqlalchemy.exc.SQLAlchemyError) as error:
                log.warning("inbox %s failed: %s", what, type(error).__name__)
            await asyncio.sleep(self.SWEEP_SECONDS)

    async def start(self, process: Process) -> None:
        """Two sweeps, each on its own: one picks up conversations left pending in
        Redis, one moves the spool from the database, so an outage of either, or a
        read hanging on it, holds up only its own."""
        self.process = process
        self.sweepers = [asyncio.create_task(self._sweep(self._pick_up_pending, "sweep")),
                         asyncio.create_task(self._sweep(self._unspool, "spool move"))]

    async def stop(self, grace_seconds: float = 10.0) -> None:
        for sweeper in self.sweepers:
            sweeper.cancel()
        await asyncio.gather(*self.sweepers, return_exceptions=True)
        await self.workers.stop(grace_seconds)


# errors of the infrastructure, which pass: the message waits for it, not the bin
REDIS_OUTAGES: Tuple[Type[BaseException], ...] = (aioredis.ConnectionError,
                                                  aioredis.TimeoutError)
OUTAGES: Tuple[Type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, *REDIS_OUTAGES)
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.5, 5.0
# longer than any outage worth waiting for; past it the error is not an outage
OUTAGE_PATIENCE_SECONDS = 600.0


async def process_guarded(process: Process, message: Message,
                          workers: _ConversationWorkers) -> None:
    """Process the message; while the database or Redis is out, try again (until the
    gateway stops). A message that fails otherwise is logged and passed over, so the
    rest of its conversation still flows. Only the error's type is logged: database
    errors quote the statement's parameters, which hold the customer's text."""
    pause = RETRY_FIRST_SECONDS
    give_up = time.monotonic() + OUTAGE_PATIENCE_SECONDS
    while True:
        try:
            await process(message)
            return
        except OUTAGES as error:
            if workers.stopping or time.monotonic() > give_up:
                raise
            log.warning("processing %s message %s met an outage (%s); retrying in %.1fs",
                        message.connector, message.message_id, type(error).__name__, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX_SECONDS)
        except Exception as error:  # whatever went wrong, it concerns this message only
            log.error("processing %s message %s failed: %s", message.connector,
                      message.message_id, type(error).__name__)
            return


def encode(message: Message) -> str:
    return json.dumps(asdict(message))


def decode(raw: bytes | str) -> Message:
    fields = json.loads(raw)
    fields["attachments"] = tuple(Attachment(**a) for a in fields.get("attachments", []))
    return Message(**fields)

