"""WooCommerce's REST API (v3) over HTTP: Basic authentication with the REST API key,
bounded retries with backoff, and errors sorted into StoreError (the store refused: a
clear reason), StoreUnavailable (could not ask, or no answer worth trusting) and
WooNotFound (no such order).

Calls block (httpx's synchronous client, with timeouts); the actions run them off the
action server's event loop (actions/conversation.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional
from urllib.parse import urlsplit

import httpx

from actions.store.types import StoreConfigError, StoreError, StoreUnavailable

log = logging.getLogger("actions.store.woocommerce")

# A turn must be answered within the gateway's wait for Rasa (RASA_TIMEOUT_SECONDS, 10 s
# by default): each request, and all the retries of one call, are kept short.
DEFAULT_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 2.0
# tries of one call when WooCommerce throttles (429) or fails (5xx, timeouts: reads only)
ATTEMPTS = 3
FIRST_BACKOFF_SECONDS = 0.25
# the longest wait for a Retry-After before giving up
MAX_BACKOFF_SECONDS = 2.0
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class WooNotFound(Exception):
    """WooCommerce answered 404: no such order (or route)."""


@dataclass(frozen=True)
class WooConfig:
    url: str
    key: str
    secret: str
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    # the custom order status (slug) a tracking plugin sets when the parcel arrived
    delivered_status: str = "delivered"
    # what WooCommerce's own `completed` means in this shop: shipped (the default) or
    # delivered
    completed_means: str = "shipped"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WooConfig:
        url = env.get("WOOCOMMERCE_URL", "").strip().rstrip("/")
        if not url:
            raise StoreConfigError("STORE_BACKEND=woocommerce needs WOOCOMMERCE_URL "
                                   "(the shop's address, e.g. https://shop.example.com)")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StoreConfigError(f"WOOCOMMERCE_URL={url!r} is not a web address "
                                   "(https://shop.example.com)")
        if parts.scheme != "https" and parts.hostname not in LOCAL_HOSTS:
            raise StoreConfigError(
                "WOOCOMMERCE_URL must start with https://: the REST API key is sent with "
                "every request (plain http is allowed only for localhost)")
        for name in ("WOOCOMMERCE_KEY", "WOOCOMMERCE_SECRET"):
            if not env.get(name, "").strip():
                raise StoreConfigError(f"STORE_BACKEND=woocommerce needs {name} (the REST "
                                       "API key's consumer key ck_… and secret cs_…)")
        timeout = _seconds(env, "WOOCOMMERCE_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS)
        completed = (env.get("WOOCOMMERCE_COMPLETED_MEANS") or "shipped").strip().lower()
        if completed not in ("shipped", "delivered"):
            raise StoreConfigError(f"WOOCOMMERCE_COMPLETED_MEANS={completed!r}: expected "
                                   "shipped or delivered")
        delivered = (env.get("WOOCOMMERCE_DELIVERED_STATUS") or "delivered").strip().lower()
        return cls(url=url, key=env["WOOCOMMERCE_KEY"].strip(),
                   secret=env["WOOCOMMERCE_SECRET"].strip(), timeout=timeout,
                   delivered_status=delivered.removeprefix("wc-"), completed_means=completed)

    @property
    def api_url(self) -> str:
        return f"{self.url}/wp-json/wc/v3"

    @property
    def tracking_url(self) -> str:
        """The Shipment Tracking extension's routes."""
        return f"{self.url}/wp-json/wc-shipment-tracking/v3"


@dataclass(frozen=True)
class Answer:
    body: Any
    headers: Mapping[str, str]

    @property
    def total_pages(self) -> int:
        try:
            return int(self.headers.get("X-WP-TotalPages", "1"))
        except ValueError:
            return 1


class WooClient:
    """One shop's REST API; thread-safe (httpx's client is)."""

    def __init__(self, config: WooConfig,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self._http = httpx.Client(
            auth=httpx.BasicAuth(config.key, config.secret),
            timeout=httpx.Timeout(config.timeout, connect=min(CONNECT_TIMEOUT_SECONDS,
                                                              config.timeout)),
            headers={"Accept": "application/json"})
        self._sleep = sleep

    def get(self, path: str, params: Optional[Mapping[str, Any]] = None,
            base: str = "") -> Answer:
        return self._call("GET", path, params=params, base=base)

    def put(self, path: str, body: Mapping[str, Any]) -> Answer:
        return self._call("PUT", path, json=body)

    def post(self, path: str, body: Mapping[str, Any]) -> Answer:
        return self._call("POST", path, json=body)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, *, params: Optional[Mapping[str, Any]] = None,
              json: Optional[Mapping[str, Any]] = None, base: str = "") -> Answer:
        """A read is retried on throttling, server errors and timeouts; a write only when
        WooCommerce cannot have acted on it (throttled, or never connected): a write
        that failed otherwise may have been made, and only a fresh read can tell."""
        url = f"{base or self.config.api_url}{path}"
        reading = method == "GET"
        backoff = FIRST_BACKOFF_SECONDS
        for attempt in range(1, ATTEMPTS + 1):
            last = attempt == ATTEMPTS
            try:
                response = self._http.request(method, url, params=params, json=json)
            except httpx.HTTPError as error:
                sent = not isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
                if last or (sent and not reading):
                    raise StoreUnavailable(f"WooCommerce could not be reached: "
                                           f"{type(error).__name__}") from error
                log.info("WooCommerce %s %s: %s; asking again in %.2f s", method, path,
                         type(error).__name__, backoff)
                self._sleep(backoff)
                backoff *= 2
                continue
            status = response.status_code
            if status == 429 or (status >= 500 and reading):
                if last:
                    raise StoreUnavailable(
                        "WooCommerce kept throttling the requests" if status == 429 else
                        f"WooCommerce answered HTTP {status}")
                wait = min(MAX_BACKOFF_SECONDS, max(backoff, _retry_after(response)))
                log.info("WooCommerce answered HTTP %s to %s %s; asking again in %.2f s",
                         status, method, path, wait)
                self._sleep(wait)
                backoff *= 2
                continue
            return self._answer(method, path, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(self, method: str, path: str, response: httpx.Response) -> Answer:
        status, reading = response.status_code, method == "GET"
        try:
            body = response.json()
        except ValueError:
            body = None
        code, message = _error_of(body)
        if status in (401, 403):
            log.error("WooCommerce refused the REST API key (HTTP %s, %s): check "
                      "WOOCOMMERCE_KEY and WOOCOMMERCE_SECRET and that the key has %s "
                      "permission", status, code or "no code",
                      "Read" if reading else "Read/Write")
            raise StoreUnavailable(f"WooCommerce refused the credentials (HTTP {status}"
                                   f"{', ' + code if code else ''})")
        if status == 404:
            raise WooNotFound(message or f"{method} {path}: not found")
        if (status == 400 and not reading) or (status == 500 and code in REFUSALS):
            # WooCommerce refused the change and says why (an invalid refund amount, a
            # payment gateway that could not refund, an invalid status)
            raise StoreError(message or code or f"WooCommerce refused {method} {path}")
        if status >= 300:
            raise StoreUnavailable(f"WooCommerce answered HTTP {status}"
                                   f"{' (' + code + ')' if code else ''}")
        if body is None:
            raise StoreUnavailable("WooCommerce's answer was not JSON")
        return Answer(body=body, headers=response.headers)  # names in any case


# codes WooCommerce answers with HTTP 500 for a change it refused for a reason
REFUSALS = ("woocommerce_rest_cannot_create_order_refund",)


def _error_of(body: Any) -> tuple[str, str]:
    """WooCommerce's (WordPress's) error shape: {code, message, data: {status}}."""
    if isinstance(body, Mapping) and "code" in body:
        return str(body.get("code") or ""), _plain(str(body.get("message") or ""))
    return "", ""


def _plain(text: str) -> str:
    """WordPress messages may carry HTML entities or tags."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("Retry-After", "0"))
    except ValueError:
        return 0.0


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0 < value <= 60:
        raise StoreConfigError(f"{name}={text!r}: expected seconds, more than 0 and at most 60")
    return value
