"""The per-sender limit on inbound messages (`inbound_limit` in policy/channels.yml):
each conversation's messages are counted in fixed windows of `per_seconds`; past
`messages` in a window, a message is still recorded (the transcript and an agent see
it) but not passed to the bot, and the sender is told once per window. It keeps a
script or a stuck client from spending the bot, the store and the channel's outbound
rate on one sender.

In process for one gateway; in Redis (one counter per conversation and window, which
expires) when several gateways share the traffic."""
from __future__ import annotations

import time
from typing import Callable, Dict, Protocol, Tuple

from redis import asyncio as aioredis

Clock = Callable[[], float]


class InboundCounter(Protocol):
    async def count(self, conversation_id: str) -> int:
        """Count one more message of the conversation: its number in the window."""


class MemoryInboundCounter:
    def __init__(self, per_seconds: float, clock: Clock = time.time) -> None:
        self.per_seconds = per_seconds
        self.clock = clock
        self.windows: Dict[str, Tuple[int, int]] = {}

    async def count(self, conversation_id: str) -> int:
        window = int(self.clock() // self.per_seconds)
        start, count = self.windows.get(conversation_id, (window, 0))
        count = count + 1 if start == window else 1
        self.windows[conversation_id] = (window, count)
        if len(self.windows) > 10_000:  # forget conversations of past windows
            self.windows = {c: w for c, w in self.windows.items() if w[0] == window}
        return count


class RedisInboundCounter:
    def __init__(self, redis: aioredis.Redis, per_seconds: float, prefix: str = "gw",
                 clock: Clock = time.time) -> None:
        self.redis = redis
        self.per_seconds = per_seconds
        self.prefix = prefix
        self.clock = clock

    async def count(self, conversation_id: str) -> int:
        window = int(self.clock() // self.per_seconds)
        key = f"{self.prefix}:inbound:{conversation_id}:{window}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, int(self.per_seconds) + 1)
            count, _ = await pipe.execute()
        return int(count)
