"""The inbound counters behind the per-sender limit: fixed windows, in process and in
Redis, where two gateways count one sender together and the counts expire."""
from __future__ import annotations

import uuid
from typing import List

from redis import asyncio as aioredis

from bot.messaging.inbound_limit import MemoryInboundCounter, RedisInboundCounter


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_counts_start_again_in_each_window() -> None:
    clock = Clock()
    counter = MemoryInboundCounter(60, clock)
    assert [await counter.count("telegram:1") for _ in range(3)] == [1, 2, 3]
    assert await counter.count("telegram:2") == 1
    clock.now += 60
    assert await counter.count("telegram:1") == 1


async def test_two_gateways_count_one_sender_together_in_redis(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url)
    clock, prefix = Clock(), f"test-{uuid.uuid4().hex[:8]}"
    gateways = [RedisInboundCounter(redis, 30, prefix, clock) for _ in range(2)]
    try:
        counts: List[int] = [await gateways[n % 2].count("sms:+1555") for n in range(5)]
        assert counts == [1, 2, 3, 4, 5]
        [key] = await redis.keys(f"{prefix}:inbound:sms:+1555:*")
        assert 0 < await redis.ttl(key) <= 31
        clock.now += 30
        assert await gateways[0].count("sms:+1555") == 1
    finally:
        await redis.close()
