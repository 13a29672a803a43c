"""Sending to providers: rate limits, retries with backoff, and a recorded outcome.

Every connector sends through `deliver`, so all channels share one behaviour: wait for
the rate limiter, try, retry on 429/5xx/network errors with exponential backoff (or
the provider's Retry-After), and return a `Delivery` that says `failed` with the
reason when every attempt failed. Nothing is dropped silently.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, Protocol

import aiohttp
from redis import asyncio as aioredis

from common.privacy import loggable_error
from connectors.message import Delivery

log = logging.getLogger("connectors.outbound")


class TransientError(Exception):
    """Worth retrying: rate limited, provider 5xx, network trouble."""

    def __init__(self, reason: str, retry_after: Optional[float] = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentError(Exception):
    """Retrying cannot help: the provider refused the request itself."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: Optional[float]) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff = self.base_delay * (2 ** (attempt - 1))
        return min(backoff * (0.75 + random.random() / 2), self.max_delay)


@dataclass(frozen=True)
class Rate:
    """At most `per_second` on average, with bursts of up to `burst`."""

    per_second: float
    burst: int = 1


class RateLimiter(Protocol):
    async def acquire(self, key: str) -> None:
        """Wait until `key` (a recipient, a sending number, "all") may send again."""


class MemoryRateLimiter:
    """Token buckets by key, in this process. `acquire` waits, in arrival order, until
    the key may send again."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._buckets: Dict[str, tuple[float, float]] = {}
        self._locks: Dict[str, asyncio.Lock] = {}

    async def acquire(self, key: str) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            while True:
                wait = self._take(key)
                if wait <= 0:
                    return
                await asyncio.sleep(wait)

    def _take(self, key: str) -> float:
        now = time.monotonic()
        tokens, updated = self._buckets.get(key, (float(self.rate.burst), now))
        tokens = min(float(self.rate.burst), tokens + (now - updated) * self.rate.per_second)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate.per_second


# GCRA on Redis's own clock: the key holds the theoretical arrival time (ms) of the
# next message; a message may go when that is no more than `tolerance` ahead of now.
# Returns how long to wait (ms), or 0 after taking the slot.
_GCRA = """
local clock = redis.call('time')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('get', KEYS[1]) or now), now)
local wait = tat - now - tolerance
if wait > 0 then return math.ceil(wait) end
redis.call('set', KEYS[1], tat + interval, 'PX', math.ceil(tat + interval - now) + 1000)
return 0
"""


class RedisRateLimiter:
    """The same limit shared by every gateway process through Redis, so two gateways
    together keep a provider's documented rate. While Redis cannot be reached, each
    process keeps the limit on its own (MemoryRateLimiter)."""

    def __init__(self, redis: aioredis.Redis, name: str, rate: Rate,
                 prefix: str = "gw") -> None:
        self.script = redis.register_script(_GCRA)
        self.prefix = f"{prefix}:rate:{name}"
        self.interval_ms = 1000 / rate.per_second
        self.tolerance_ms = self.interval_ms * (rate.burst - 1)
        self.local = MemoryRateLimiter(rate)
        self._locks: Dict[str, asyncio.Lock] = {}

    async def acquire(self, key: str) -> None:
        # in arrival order within this process, as the memory limiter
        async with self._locks.setdefault(key, asyncio.Lock()):
            while True:
                try:
                    wait_ms = await self.script(keys=[f"{self.prefix}:{key}"],
                                                args=[self.interval_ms, self.tolerance_ms])
                except aioredis.RedisError as error:
                    log.warning("rate limit %s kept in this process: Redis %s", self.prefix,
                                type(error).__name__)
                    await self.local.acquire(key)
                    return
                if wait_ms <= 0:
                    return
                await asyncio.sleep(wait_ms / 1000)


Limiters = Callable[[str, Rate], RateLimiter]


def memory_limiters(name: str, rate: Rate) -> RateLimiter:
    """Rate limiters of one gateway process (the embedded default)."""
    return MemoryRateLimiter(rate)


def redis_limiters(redis: aioredis.Redis) -> Limiters:
    """Rate limiters that every gateway process sharing `redis` keeps together."""
    return lambda name, rate: RedisRateLimiter(redis, name, rate)


Attempt = Callable[[], Awaitable[str]]


async def deliver(attempt: Attempt, retry: RetryPolicy, *limiters: tuple[RateLimiter, str],
                  label: str = "") -> Delivery:
    """Run `attempt` (which returns the provider's message id) under the limiters,
    retrying transient failures. Returns the outcome; never raises for a provider error."""
    last_error = ""
    for number in range(1, retry.attempts + 1):
        for limiter, key in limiters:
            await limiter.acquire(key)
        try:
            return Delivery("sent", provider_message_id=await attempt(), attempts=number)
        except PermanentError as error:
            log.warning("%s send refused: %s", label, loggable_error(error))
            return Delivery("failed", error=str(error), attempts=number)
        except TransientError as error:
            last_error = str(error)
            if number < retry.attempts:
                pause = retry.delay(number, error.retry_after)
                log.info("%s send attempt %d failed (%s); retrying in %.2fs",
                         label, number, error, pause)
                await asyncio.sleep(pause)
    log.error("%s send failed after %d attempts: %s", label, retry.attempts,
              loggable_error(last_error))
    return Delivery("failed", error=last_error, attempts=retry.attempts)


def _retry_after(headers: Mapping[str, str]) -> Optional[float]:
    value = headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _never(body: Dict[str, Any]) -> bool:
    return False


async def post(session: aiohttp.ClientSession, url: str, *,
               transient_error: Callable[[Dict[str, Any]], bool] = _never,
               **kwargs: Any) -> Dict[str, Any]:
    """POST and return the JSON answer; classify failures for `deliver`. 429, 5xx and
    network errors are transient; so is a 4xx whose body `transient_error` says is
    (providers that report rate limits as 400 with their own error code)."""
    try:
        async with session.post(url, **kwargs) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}
            status = response.status
            failure = f"HTTP {status}{_error_code(body)}"
            if status == 429 or status >= 500 or (status >= 400 and transient_error(body)):
                raise TransientError(failure, _retry_after(response.headers))
            if status >= 400:
                raise PermanentError(f"{failure}: {_error_text(body)}"[:300])
            return body
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        raise TransientError(type(error).__name__) from error


async def fetch(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> bytes:
    """GET a file's bytes; failures classified as for `post` (429, 5xx, network: transient)."""
    try:
        async with session.get(url, **kwargs) as response:
            if response.status == 429 or response.status >= 500:
                raise TransientError(f"HTTP {response.status}", _retry_after(response.headers))
            if response.status >= 400:
                raise PermanentError(f"HTTP {response.status}")
            return await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        raise TransientError(type(error).__name__) from error


def _error_fields(body: Dict[str, Any]) -> Dict[str, Any]:
    """The provider's error object: Meta nests it under "error", Twilio doesn't."""
    error = body.get("error")
    return error if isinstance(error, dict) else body


def _error_code(body: Dict[str, Any]) -> str:
    code = _error_fields(body).get("code")
    return f" code {code}" if code is not None else ""


def _error_text(body: Dict[str, Any]) -> str:
    return str(_error_fields(body).get("message", ""))[:200]
