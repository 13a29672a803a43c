"""Live handoff events for open consoles. Each process fans events out to its own
subscribers; with Redis, events travel through one pub/sub channel, so a console on
one gateway sees what happened on another."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from enum import Enum
from typing import Any, AsyncIterator, Dict, Optional, Set

from redis import asyncio as aioredis

log = logging.getLogger("bot.handoff.events")

Event = Dict[str, Any]


class EventType(str, Enum):
    """Every kind of live event a console receives (its "type"); the console's script
    (console_page/agent.js, EVENT) names the same ones."""

    READY = "ready"
    HANDOFF_OPENED = "handoff.opened"
    HANDOFF_CLAIMED = "handoff.claimed"
    HANDOFF_MESSAGE = "handoff.message"
    HANDOFF_NOTE = "handoff.note"
    HANDOFF_TRANSFERRED = "handoff.transferred"
    HANDOFF_RESOLVED = "handoff.resolved"
    HANDOFF_CSAT = "handoff.csat"
    PEAK_CHANGED = "peak.changed"
    MONITOR_ALERT = "monitor.alert"


CHANNEL = "handoff-events"
# how long one read of the subscription waits for an event before it looks again
LISTEN_SECONDS = 1.0
# A console that stops reading loses old events rather than holding memory forever;
# it reloads the lists when it reconnects.
SUBSCRIBER_BACKLOG = 1000


class EventBus:
    """In-process fan-out; the base of the Redis bus."""

    def __init__(self) -> None:
        self._subscribers: Set[asyncio.Queue[Event]] = set()

    async def publish(self, event: Event) -> None:
        self._fan_out(event)

    def _fan_out(self, event: Event) -> None:
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class RedisEventBus(EventBus):
    def __init__(self, redis: aioredis.Redis) -> None:
        super().__init__()
        self.redis = redis
        self._listener: Optional[asyncio.Task[None]] = None
        self._stopping = False

    async def publish(self, event: Event) -> None:
        try:
            await self.redis.publish(CHANNEL, json.dumps(event))
        except aioredis.RedisError as error:
            # The record is safe in SQL; only other processes' consoles miss the update.
            log.warning("handoff event not shared through Redis (%s)", type(error).__name__)
            self._fan_out(event)

    async def start(self) -> None:
        self._stopping = False
        self._listener = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        """Cancel the listener. redis-py can swallow a cancellation that lands in a read
        with a timeout (the read returns nothing), so the listener also stops at its next
        read on its own, and stop() waits no longer than that."""
        self._stopping = True
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.wait({self._listener}, timeout=2 * LISTEN_SECONDS + 1)

    async def _listen(self) -> None:
        while not self._stopping:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    while not self._stopping:
                        # a wait of its own: the client's socket timeout, meant for
                        # commands, would end a quiet subscription
                        item = await pubsub.get_message(timeout=LISTEN_SECONDS)
                        if item is not None:
                            self._fan_out(json.loads(item["data"]))
            except aioredis.RedisError as error:
                log.warning("handoff events: Redis subscription lost (%s); retrying",
                            type(error).__name__)
                await asyncio.sleep(1)
