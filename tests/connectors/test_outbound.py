"""The providers' rate limits: in one process, and shared by several gateway processes
through Redis, so that together they keep the documented rate; while Redis is away
each process keeps it alone."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import List

import pytest
from redis import asyncio as aioredis

from connectors.outbound import MemoryRateLimiter, Rate, RateLimiter, RedisRateLimiter
from tests.provider_api import free_port

RATE = Rate(per_second=40, burst=2)
SENDS = 12  # past the burst, (SENDS - burst) / per_second = 0.25 s of waiting


async def send_alternately(limiters: List[RateLimiter], key: str) -> float:
    """Seconds for SENDS sends through the limiters in turn, as two gateways would."""
    started = time.monotonic()
    await asyncio.gather(*(limiters[n % len(limiters)].acquire(key) for n in range(SENDS)))
    return time.monotonic() - started


async def test_two_gateways_on_redis_keep_one_rate_together(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url)
    name = f"test-{uuid.uuid4().hex[:8]}"
    try:
        gateways: List[RateLimiter] = [RedisRateLimiter(redis, name, RATE) for _ in range(2)]
        elapsed = await send_alternately(gateways, "chat-1")
    finally:
        await redis.close()
    assert elapsed >= (SENDS - RATE.burst) / RATE.per_second * 0.9


async def test_in_memory_each_gateway_keeps_only_its_own_rate() -> None:
    """Why Redis is needed with several gateways: alone, two would send twice as fast."""
    gateways: List[RateLimiter] = [MemoryRateLimiter(RATE) for _ in range(2)]
    together = await send_alternately(gateways, "chat-1")
    alone = await send_alternately([MemoryRateLimiter(RATE)], "chat-1")
    assert together < alone * 0.75


async def test_keys_have_their_own_rate(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url)
    limiter = RedisRateLimiter(redis, f"test-{uuid.uuid4().hex[:8]}", Rate(1, burst=1))
    try:
        await asyncio.wait_for(asyncio.gather(*(limiter.acquire(f"chat-{n}")
                                                for n in range(5))), timeout=0.5)
    finally:
        await redis.close()


async def test_with_redis_unreachable_the_process_keeps_the_rate_alone(
        caplog: pytest.LogCaptureFixture) -> None:
    redis = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    limiter = RedisRateLimiter(redis, "down", RATE)
    try:
        elapsed = await send_alternately([limiter], "chat-1")
    finally:
        await redis.close()
    assert elapsed >= (SENDS - RATE.burst) / RATE.per_second * 0.9
    assert "kept in this process" in caplog.text
