"""What the tracking services' clients share: a JSON API over HTTPS with a key, short
timeouts (a turn must be answered within the gateway's wait for Rasa), bounded retries
with backoff when the service throttles (429) or fails (5xx, timeouts), and errors sorted
into StoreUnavailable (transient as far as the customer is concerned) and
TrackingNotFound (the service cannot track this number).

Calls block (httpx's synchronous client); the actions run them off the action server's
event loop.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import httpx

from actions.store.types import StoreConfigError, StoreUnavailable, TrackingNotFound

log = logging.getLogger("actions.store.tracking")

DEFAULT_TIMEOUT_SECONDS = 4.0
CONNECT_TIMEOUT_SECONDS = 2.0
# tries of one call when the service throttles (429) or fails (5xx, timeouts)
ATTEMPTS = 3
FIRST_BACKOFF_SECONDS = 0.25
# the longest wait the service may ask for before the bot gives up on this turn
MAX_BACKOFF_SECONDS = 2.0
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]


def base_url(env: Mapping[str, str], name: str, default: str) -> str:
    """An API base URL from the environment: https, or plain http on localhost only
    (the key goes with every request)."""
    url = (env.get(name) or default).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreConfigError(f"{name}={url!r} is not a web address")
    if parts.scheme != "https" and parts.hostname not in LOCAL_HOSTS:
        raise StoreConfigError(f"{name} must start with https://: the API key is sent with "
                               "every request (plain http is allowed only for localhost)")
    return url


def required(env: Mapping[str, str], name: str, backend: str, what: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise StoreConfigError(f"TRACKING_BACKEND={backend} needs {name} ({what})")
    return value


class JsonApi:
    """One service's API; thread-safe (httpx's client is). `wait_of` reads how long the
    service asks to wait from a throttled answer (seconds, 0 if it does not say)."""

    def __init__(self, name: str, base: str, *, auth: Optional[httpx.Auth] = None,
                 headers: Optional[Mapping[str, str]] = None,
                 wait_of: Callable[[httpx.Response], float],
                 timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name = name
        self.base = base
        self._wait_of = wait_of
        self._sleep = sleep
        self._http = httpx.Client(
            auth=auth, headers={"Accept": "application/json", **(headers or {})},
            timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT_SECONDS, timeout)))

    def call(self, method: str, path: str, *, json: Optional[Mapping[str, Any]] = None,
             params: Optional[Mapping[str, Any]] = None) -> Answer:
        """The answer (any status below 500 but 429); retried on throttling, server
        errors and timeouts. Creating a tracker is safe to repeat (both services answer
        the one that exists), so writes are retried as reads are."""
        backoff = FIRST_BACKOFF_SECONDS
        for attempt in range(1, ATTEMPTS + 1):
            last = attempt == ATTEMPTS
            try:
                response = self._http.request(method, f"{self.base}{path}", json=json,
                                              params=params)
            except httpx.HTTPError as error:
                if last:
                    raise StoreUnavailable(f"{self.name} could not be reached: "
                                           f"{type(error).__name__}") from error
                log.info("%s %s %s: %s; asking again in %.2f s", self.name, method, path,
                         type(error).__name__, backoff)
                self._sleep(backoff)
                backoff *= 2
                continue
            status = response.status_code
            if status == 429 or status >= 500:
                if last:
                    raise StoreUnavailable(
                        f"{self.name} kept throttling the requests" if status == 429 else
                        f"{self.name} answered HTTP {status}")
                wait = min(MAX_BACKOFF_SECONDS, max(backoff, self._wait_of(response)))
                log.info("%s answered HTTP %s to %s %s; asking again in %.2f s", self.name,
                         status, method, path, wait)
                self._sleep(wait)
                backoff *= 2
                continue
            try:
                body = response.json()
            except ValueError:
                body = None
            return Answer(status, body, response.headers)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._http.close()


class KnownParcels:
    """The service's own id of each parcel read before (by tracking number and
    carrier), so a later read gets it by id instead of creating it again."""

    def __init__(self) -> None:
        self._ids: Dict[Tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def remember(self, key: Tuple[str, str], service_id: str) -> None:
        with self._lock:
            self._ids[key] = service_id

    def read(self, api: JsonApi, key: Tuple[str, str], path: str) -> Optional[Answer]:
        """The service's answer for the parcel at `path`/its id; None when it was never
        read, or the service no longer has it (404)."""
        with self._lock:
            known = self._ids.get(key)
        if known is None:
            return None
        answer = api.call("GET", f"{path}/{known}")
        return None if answer.status == 404 else answer


def retry_after(response: httpx.Response) -> float:
    """Retry-After in seconds (an HTTP date is not worth waiting for here)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0


def failure(name: str, key_variable: str, status: int, code: str, message: str) -> Exception:
    """What a service's refusal is for the bot: its key refused (logged, naming the
    variable to check), a number it cannot track, or the service unavailable."""
    if status in (401, 403):
        log.error("%s refused the API key (HTTP %s, %s): check %s", name, status,
                  code or "no code", key_variable)
        return StoreUnavailable(f"{name} refused the API key (HTTP {status})")
    if status in (400, 404, 422):
        return TrackingNotFound(f"{name} cannot track it: {code or status} {message}")
    return StoreUnavailable(f"{name} answered HTTP {status}{' ' + code if code else ''}")


def moment_of(text: Any) -> Optional[datetime]:
    """A service's time (ISO 8601, a trailing Z, or a bare date: its midnight), in UTC
    when it names no zone; None when it is not one."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        try:
            return datetime.combine(date.fromisoformat(str(text)[:10]), datetime.min.time(),
                                    timezone.utc)
        except ValueError:
            return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
