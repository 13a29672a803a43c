"""The live state of the queues: who waits in each queue, in the order agents are
offered them, and which agent has each active conversation.

SQL keeps the record of every handoff. With Redis, every gateway also keeps this
state there (a sorted set per queue, a hash of active conversations), so each of
them answers "what is my place in the queue" from memory, and a wallboard or another
tool can read the queues without touching the database. Redis is rebuilt from SQL
when a gateway starts and every `reconcile_seconds`, so a write it missed (Redis down
for a moment) is mended; while it is unreachable, positions come from SQL."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, cast

from redis import asyncio as aioredis

from bot.handoff.store import Handoff, HandoffStore
from bot.messaging.records import GatewayRecords

log = logging.getLogger("bot.handoff.live")

# Scores sort by priority first (higher first), then by age; a tier step outweighs
# any age difference, and the member (the zero-padded id) breaks exact ties.
PRIORITY_STEP = 1e10


class LiveQueues:
    """Without Redis: the live state is read from SQL when needed."""

    def __init__(self, store: HandoffStore, records: GatewayRecords) -> None:
        self.store = store
        self.records = records

    async def changed(self, handoff: Handoff) -> Optional[int]:
        """A handoff was opened, claimed, transferred or resolved; its position when it
        waits, if that came with the update (None: ask `position`)."""
        return None

    async def position(self, handoff: Handoff) -> int:
        """1 for the next waiting handoff agents of its queue are offered."""
        return await self.records.read(self.store.position, handoff)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class RedisLiveQueues(LiveQueues):
    def __init__(self, store: HandoffStore, records: GatewayRecords, redis: aioredis.Redis,
                 queues: Sequence[str], reconcile_seconds: float = 60.0,
                 prefix: str = "gw") -> None:
        super().__init__(store, records)
        self.redis = redis
        self.queues = list(queues)
        self.reconcile_seconds = reconcile_seconds
        self.prefix = prefix
        self.active_key = f"{prefix}:handoff:active"
        self._reconciler: Optional[asyncio.Task[None]] = None

    def waiting_key(self, queue: str) -> str:
        return f"{self.prefix}:handoff:waiting:{queue}"

    async def changed(self, handoff: Handoff) -> Optional[int]:
        waiting = handoff["status"] == "waiting"
        member = _member(handoff["id"])
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for queue in self.queues:
                    pipe.zrem(self.waiting_key(queue), member)
                pipe.hdel(self.active_key, member)
                self._place(pipe, handoff)
                if waiting:  # in the same round trip: under load each one waits its turn
                    pipe.zrank(self.waiting_key(handoff["queue"]), member)
                results = await pipe.execute()
        except aioredis.RedisError as error:
            log.warning("live queue state of handoff %s not updated in Redis (%s); the next "
                        "reconciliation mends it", handoff["id"], type(error).__name__)
            return None
        return int(results[-1]) + 1 if waiting and results[-1] is not None else None

    def _place(self, pipe: Any, handoff: Mapping[str, Any]) -> None:
        member = _member(handoff["id"])
        if handoff["status"] == "waiting":
            pipe.zadd(self.waiting_key(handoff["queue"]), {member: _score(handoff)})
        elif handoff["status"] == "active":
            pipe.hset(self.active_key, member, handoff["agent"])

    async def position(self, handoff: Handoff) -> int:
        try:
            rank = await self.redis.zrank(self.waiting_key(handoff["queue"]),
                                          _member(handoff["id"]))
            if isinstance(rank, int):
                return rank + 1
        except aioredis.RedisError as error:
            log.warning("queue position read from SQL: Redis failed (%s)", type(error).__name__)
        return await super().position(handoff)

    async def waiting(self, queue: str) -> List[int]:
        """The ids waiting in the queue, in the order they are offered."""
        waiting = await self.redis.zrange(self.waiting_key(queue), 0, -1)
        return [int(cast(bytes, member)) for member in waiting]

    async def active(self) -> Dict[int, str]:
        """Active handoff id -> the agent who has it."""
        active = await self.redis.hgetall(self.active_key)
        return {int(k): cast(bytes, v).decode() for k, v in active.items()}

    async def reconcile(self) -> None:
        """Replace the Redis state with what SQL holds, in one transaction."""
        handoffs = await self.records.read(self.store.open_handoffs)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.active_key, *(self.waiting_key(q) for q in self.queues))
            for handoff in handoffs:
                self._place(pipe, handoff)
            await pipe.execute()

    async def start(self) -> None:
        try:
            await self.reconcile()
        except aioredis.RedisError as error:
            log.warning("live queue state not loaded into Redis (%s); retrying every %.0f s",
                        type(error).__name__, self.reconcile_seconds)
        self._reconciler = asyncio.create_task(self._reconcile_every())

    async def stop(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler

    async def _reconcile_every(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_seconds)
            try:
                await self.reconcile()
            except aioredis.RedisError as error:
                log.warning("live queue state not reconciled (%s)", type(error).__name__)


def _member(handoff_id: int) -> str:
    return f"{handoff_id:012d}"


def _score(handoff: Mapping[str, Any]) -> float:
    return float(handoff["created_at"]) - handoff["priority"] * PRIORITY_STEP
