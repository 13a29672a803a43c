"""Orders read from a store platform (Shopify, WooCommerce), kept a short while across
turns, so a conversation does not ask the platform for the same order every turn.

- What is kept is the platform's own answer (JSON), keyed by backend, order number and
  what was read of the order (`KINDS`: the order; WooCommerce's tracking items and
  refunds of it), for `order_cache.ttl_seconds` (policy/escalation.yml).
- In Redis when REDIS_URL is set (every action-server process shares it, and the
  gateway's store webhooks delete an order's keys when the platform says it changed),
  else in the action server's memory (the gateway cannot reach it: then only the TTL
  bounds how stale a kept order can be).
- Only a turn's plain reads use it. A write, and the eligibility check and read-back
  around it (actions/guarded.py), read the platform afresh and forget what was kept of
  the order (`TurnReads.read_fresh`, `TurnReads.forget`). Reads outside a turn (the
  gateway's, the monitors') always ask the platform.
- An answer that found no order is not kept (the customer may have just placed it).
- Redis failing is not the customer's problem: a read then asks the platform, and the
  failure is logged (without keys: they hold order numbers).

Imported by the gateway too (the keys it deletes): nothing here needs Rasa's packages.
"""
from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Mapping, Optional, Protocol, Tuple, TypeVar

import redis

from actions.store.types import normalize_order_id

log = logging.getLogger("actions.store.cache")

PREFIX = "store-cache"
# what is kept of an order, each under its own key
KINDS = ("order", "trackings", "refunds")
# the most orders one process keeps in memory (the oldest go first)
MEMORY_ENTRIES = 10_000
REDIS_TIMEOUT_SECONDS = 0.5
R = TypeVar("R")


def cache_key(backend: str, number: str, kind: str) -> str:
    """The key of what is kept of the platform's order `number` (its own number, as
    the platform names it: '1001')."""
    return f"{PREFIX}:{backend}:{number}:{kind}"


def id_key(backend: str, platform_id: str) -> str:
    """The key that names, while the order is kept, its number from the platform's own
    id of it (Shopify's webhooks of refunds, fulfilments and returns name the order by
    id only)."""
    return f"{PREFIX}:{backend}:id:{platform_id}"


def order_keys(backend: str, number: str) -> Tuple[str, ...]:
    """Every key kept of the order: what a webhook saying it changed deletes."""
    return tuple(cache_key(backend, number, kind) for kind in KINDS)


class OrderCache(Protocol):
    ttl_seconds: int

    def get(self, key: str) -> Optional[Any]:
        """The kept value, or None (not kept, expired, or the cache failed)."""
        ...

    def put(self, key: str, value: Any) -> None: ...

    def delete(self, keys: Tuple[str, ...]) -> None: ...

    def close(self) -> None: ...


class MemoryOrderCache:
    """In this process (without REDIS_URL): JSON text per key with its expiry."""

    def __init__(self, ttl_seconds: int, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = MEMORY_ENTRIES) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._max = max_entries
        self._kept: OrderedDict[str, Tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Optional[Any]:
        with self._lock:
            found = self._kept.get(key)
            if found is None:
                return None
            expires, text = found
            if self._clock() >= expires:
                del self._kept[key]
                return None
        return json.loads(text)

    def put(self, key: str, value: Any) -> None:
        text = json.dumps(value)
        with self._lock:
            self._kept.pop(key, None)
            self._kept[key] = (self._clock() + self.ttl_seconds, text)
            while len(self._kept) > self._max:
                self._kept.popitem(last=False)

    def delete(self, keys: Tuple[str, ...]) -> None:
        with self._lock:
            for key in keys:
                self._kept.pop(key, None)

    def close(self) -> None:
        with self._lock:
            self._kept.clear()


class RedisOrderCache:
    """In Redis (REDIS_URL): shared by every action-server process, and emptied of an
    order by the gateway when the platform's webhook says the order changed."""

    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self.ttl_seconds = ttl_seconds
        self._redis = client

    @classmethod
    def from_url(cls, url: str, ttl_seconds: int) -> RedisOrderCache:
        return cls(redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                        socket_connect_timeout=REDIS_TIMEOUT_SECONDS),
                   ttl_seconds)

    def get(self, key: str) -> Optional[Any]:
        try:
            text = self._redis.get(key)
        except redis.RedisError as error:
            log.warning("order cache: Redis did not answer a read (%s): reading the store",
                        type(error).__name__)
            return None
        return None if text is None else json.loads(text)

    def put(self, key: str, value: Any) -> None:
        try:
            self._redis.set(key, json.dumps(value), ex=self.ttl_seconds)
        except redis.RedisError as error:
            log.warning("order cache: Redis did not keep an order (%s)", type(error).__name__)

    def delete(self, keys: Tuple[str, ...]) -> None:
        """A failure here is an error: an order that changed may be told as it was, for
        up to the TTL."""
        try:
            self._redis.delete(*keys)
        except redis.RedisError as error:
            log.error("order cache: Redis did not forget an order (%s): it may be told as "
                      "it was for up to %d s", type(error).__name__, self.ttl_seconds)

    def close(self) -> None:
        self._redis.close()


def open_order_cache(env: Mapping[str, str], ttl_seconds: int) -> Optional[OrderCache]:
    """Redis when REDIS_URL is set, else this process's memory; None when the TTL is 0."""
    if ttl_seconds <= 0:
        return None
    url = (env.get("REDIS_URL") or "").strip()
    if url:
        return RedisOrderCache.from_url(url, ttl_seconds)
    return MemoryOrderCache(ttl_seconds)


class TurnReads:
    """What an action run reads of a platform's orders: each thing once a turn (per
    worker thread, from `begin_turn`), and, across turns, from the order cache. Outside a
    turn every read asks the platform."""

    def __init__(self, backend: str, cache: Optional[OrderCache] = None) -> None:
        self.backend = backend
        self.cache = cache
        self._turn = threading.local()

    def begin_turn(self) -> None:
        self._turn.kept = {}
        self._turn.fresh = False

    def end_turn(self) -> None:
        self._turn.kept = None
        self._turn.fresh = False

    def keep(self, number: str, kind: str, value: Any) -> None:
        """What a search read of the order, for the rest of the turn (a monitor's scan
        then reads each order it found without asking again); nothing outside a turn."""
        kept: Optional[dict[Tuple[str, str], Any]] = getattr(self._turn, "kept", None)
        if kept is not None:
            kept[(kind, number)] = value

    def read_fresh(self) -> None:
        """From now until the next turn, reads ask the platform (once each) and neither
        use nor fill the cache: a write's eligibility, the write, its read-back. Outside
        a turn every read is fresh already."""
        if getattr(self._turn, "kept", None) is not None:
            self._turn.kept = {}
            self._turn.fresh = True

    def forget_turn(self) -> None:
        """What this turn read is no longer true (a write changed it)."""
        if getattr(self._turn, "kept", None) is not None:
            self._turn.kept = {}

    def forget(self, number: str) -> None:
        """The order changed (a write): this turn reads it again, and so will the next."""
        self.forget_turn()
        if self.cache is not None:
            self.cache.delete(order_keys(self.backend, number))

    def forget_order(self, order_id: str, letter: str) -> None:
        """`forget` by the bot's order id (`letter` before the platform's number); an id
        of another letter names no order of this platform, but the turn still forgets."""
        canonical = normalize_order_id(order_id)
        if canonical is not None and canonical[0] == letter:
            self.forget(canonical[1:])
        else:
            self.forget_turn()

    @property
    def fresh(self) -> bool:
        return bool(getattr(self._turn, "fresh", False))

    def read(self, number: str, kind: str, read: Callable[[], Any],
             platform_id: Optional[Callable[[Any], str]] = None) -> Any:
        """What `read` gives of the order `number`: once a turn, kept across turns (when
        not None) unless this turn reads afresh; `platform_id` gives the platform's id of
        the order from what was read, to keep beside it (`id_key`)."""
        kept: Optional[dict[Tuple[str, str], Any]] = getattr(self._turn, "kept", None)
        if kept is None:
            return read()
        if (kind, number) in kept:
            return kept[(kind, number)]
        shared = None if self.fresh else self.cache
        key = cache_key(self.backend, number, kind)
        value = shared.get(key) if shared is not None else None
        if value is None:
            value = read()
            if shared is not None and value is not None:
                shared.put(key, value)
                if platform_id is not None and platform_id(value):
                    shared.put(id_key(self.backend, platform_id(value)), number)
        kept[(kind, number)] = value
        return value

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def forgets_the_turn(write: Callable[..., R]) -> Callable[..., R]:
    """A platform's write starts from the order as the platform has it now (never what
    the order cache kept), and whatever it leaves (done, refused, unknown) is read afresh
    after it. `self` is the platform's orders system, or holds it as `_orders`."""

    @functools.wraps(write)
    def forgetting(self: Any, order_id: str, *args: Any, **kwargs: Any) -> R:
        orders = getattr(self, "_orders", self)
        orders.reads.read_fresh()
        try:
            return write(self, order_id, *args, **kwargs)
        finally:
            orders.forget(order_id)

    return forgetting
