"""Shopify's Admin GraphQL API over HTTP: authentication, the pinned version, pacing by
the cost-based leaky bucket, and errors sorted into StoreError (the shop refused: a
clear reason) and StoreUnavailable (could not ask, or no answer worth trusting).

Calls block (httpx's synchronous client, with timeouts); the actions run them off the
action server's event loop (actions/conversation.py).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import httpx

from actions.store.types import StoreConfigError, StoreUnavailable

log = logging.getLogger("actions.store.shopify")

DEFAULT_API_VERSION = "2025-10"
# A turn must be answered within the gateway's wait for Rasa (RASA_TIMEOUT_SECONDS, 10 s
# by default), else the customer is handed over while the turn may still write: each
# wait here is kept short.
REQUEST_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
# how long one call may wait for the bucket (pacing and THROTTLED retries together)
THROTTLE_PATIENCE_SECONDS = 5.0
FIRST_BACKOFF_SECONDS = 0.5
# a client-credentials token is fetched again this long before it expires
TOKEN_REFRESH_MARGIN_SECONDS = 300
# the cost asked of a document never sent before (the answer then says the real one)
UNKNOWN_COST = 50.0


@dataclass(frozen=True)
class ShopifyConfig:
    shop: str
    api_version: str
    base_url: str
    access_token: str = ""
    client_id: str = ""
    client_secret: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ShopifyConfig:
        shop = env.get("SHOPIFY_SHOP", "").strip()
        if not shop:
            raise StoreConfigError("STORE_BACKEND=shopify needs SHOPIFY_SHOP "
                                   "(the shop's domain, e.g. mystore.myshopify.com)")
        token = env.get("SHOPIFY_ACCESS_TOKEN", "").strip()
        client_id = env.get("SHOPIFY_CLIENT_ID", "").strip()
        client_secret = env.get("SHOPIFY_CLIENT_SECRET", "").strip()
        if not token and not (client_id and client_secret):
            missing = "SHOPIFY_CLIENT_SECRET" if client_id else (
                "SHOPIFY_CLIENT_ID" if client_secret else "SHOPIFY_ACCESS_TOKEN")
            raise StoreConfigError(
                f"STORE_BACKEND=shopify needs {missing}: set SHOPIFY_ACCESS_TOKEN, or "
                "SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET for the client-credentials grant")
        version = env.get("SHOPIFY_API_VERSION", "").strip() or DEFAULT_API_VERSION
        base = env.get("SHOPIFY_API_BASE_URL", "").strip() or f"https://{shop}"
        return cls(shop=shop, api_version=version, base_url=base.rstrip("/"),
                   access_token=token, client_id=client_id, client_secret=client_secret)

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/admin/api/{self.api_version}/graphql.json"


@dataclass
class Bucket:
    """The shop's leaky bucket as the last answer described it."""

    maximum: float = 1000.0
    available: float = 1000.0
    restore_rate: float = 50.0
    seen_at: float = 0.0

    def now_available(self, at: float) -> float:
        return min(self.maximum, self.available + (at - self.seen_at) * self.restore_rate)

    def wait_for(self, cost: float, at: float) -> float:
        """Seconds until `cost` points are in the bucket."""
        missing = min(cost, self.maximum) - self.now_available(at)
        return max(0.0, missing / self.restore_rate) if self.restore_rate > 0 else 0.0

    def update(self, throttle_status: Mapping[str, Any], at: float) -> None:
        self.maximum = float(throttle_status.get("maximumAvailable", self.maximum))
        self.available = float(throttle_status.get("currentlyAvailable", self.available))
        self.restore_rate = float(throttle_status.get("restoreRate", self.restore_rate))
        self.seen_at = at


class ShopifyClient:
    """One shop's GraphQL endpoint; thread-safe (actions run on worker threads)."""

    def __init__(self, config: ShopifyConfig,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._http = httpx.Client(timeout=REQUEST_TIMEOUT)
        self._sleep, self._clock = sleep, clock
        self._lock = threading.Lock()
        self._bucket = Bucket(seen_at=clock())
        self._costs: dict[str, float] = {}
        self._token, self._token_expires = "", 0.0  # client-credentials grant
        self._version_warned = False

    def execute(self, document: str, variables: Optional[Mapping[str, Any]] = None
                ) -> dict[str, Any]:
        """The `data` of the answer; waits for the bucket first, retries THROTTLED."""
        deadline = self._clock() + THROTTLE_PATIENCE_SECONDS
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            self._pace(document, deadline)
            body = self._post(document, variables)
            errors = body.get("errors") or []
            if not any(_code(e) == "THROTTLED" for e in errors):
                if errors:
                    log.error("Shopify answered errors: %s", _error_summary(errors))
                    raise StoreUnavailable(f"Shopify answered errors: {_error_summary(errors)}")
                return dict(body.get("data") or {})
            wait = max(backoff, self._bucket.wait_for(self._costs[document], self._clock()))
            if self._clock() + wait > deadline:
                raise StoreUnavailable("Shopify kept throttling the app's requests")
            log.info("Shopify throttled a request; asking again in %.1f s", wait)
            self._sleep(wait)
            backoff *= 2

    def close(self) -> None:
        self._http.close()

    def _pace(self, document: str, deadline: float) -> None:
        """Wait until the bucket holds what the document cost last time: asking sooner
        would only be throttled."""
        with self._lock:
            wait = self._bucket.wait_for(self._costs.get(document, UNKNOWN_COST), self._clock())
        if wait > 0:
            if self._clock() + wait > deadline:
                raise StoreUnavailable("Shopify's rate limit leaves no room for this request")
            log.info("pacing Shopify requests: waiting %.1f s for the rate limit", wait)
            self._sleep(wait)

    def _post(self, document: str, variables: Optional[Mapping[str, Any]]) -> dict[str, Any]:
        for attempt in (1, 2):
            response = self._send(document, variables)
            if response.status_code in (401, 403) and attempt == 1 and self._can_refresh():
                self._token_expires = 0  # a refreshed token may be accepted
                continue
            break
        if response.status_code in (401, 403):
            log.error("Shopify refused the app's credentials (HTTP %s): check "
                      "SHOPIFY_ACCESS_TOKEN (or SHOPIFY_CLIENT_ID/SECRET) and the app's "
                      "access scopes", response.status_code)
            raise StoreUnavailable(f"Shopify refused the credentials (HTTP {response.status_code})")
        if response.status_code != 200:
            raise StoreUnavailable(f"Shopify answered HTTP {response.status_code}")
        self._check_version(response)
        try:
            body = response.json()
        except ValueError as error:
            raise StoreUnavailable("Shopify's answer was not JSON") from error
        self._note_cost(document, body)
        return dict(body)

    def _send(self, document: str, variables: Optional[Mapping[str, Any]]) -> httpx.Response:
        headers = {"X-Shopify-Access-Token": self._access_token(),
                   "Content-Type": "application/json"}
        try:
            return self._http.post(self.config.graphql_url, headers=headers,
                                   json={"query": document, "variables": dict(variables or {})})
        except httpx.HTTPError as error:
            raise StoreUnavailable(f"Shopify could not be reached: {type(error).__name__}"
                                   ) from error

    def _note_cost(self, document: str, body: Mapping[str, Any]) -> None:
        cost = (body.get("extensions") or {}).get("cost") or {}
        with self._lock:
            if "requestedQueryCost" in cost:
                self._costs[document] = float(cost["requestedQueryCost"])
            if cost.get("throttleStatus"):
                self._bucket.update(cost["throttleStatus"], self._clock())

    def _check_version(self, response: httpx.Response) -> None:
        served = response.headers.get("X-Shopify-API-Version", "")
        if served and served != self.config.api_version and not self._version_warned:
            self._version_warned = True
            log.warning("Shopify served API version %s, not the pinned %s: the pinned "
                        "version is no longer supported; test and pin a newer one "
                        "(SHOPIFY_API_VERSION)", served, self.config.api_version)

    def _can_refresh(self) -> bool:
        return not self.config.access_token

    def _access_token(self) -> str:
        """The static token, or one from the client-credentials grant, fetched again
        before it expires."""
        if self.config.access_token:
            return self.config.access_token
        with self._lock:
            if self._clock() >= self._token_expires - TOKEN_REFRESH_MARGIN_SECONDS:
                self._token, self._token_expires = self._grant()
            return self._token

    def _grant(self) -> tuple[str, float]:
        url = f"{self.config.base_url}/admin/oauth/access_token"
        try:
            response = self._http.post(url, data={"grant_type": "client_credentials",
                                                  "client_id": self.config.client_id,
                                                  "client_secret": self.config.client_secret})
        except httpx.HTTPError as error:
            raise StoreUnavailable(f"Shopify's token endpoint could not be reached: "
                                   f"{type(error).__name__}") from error
        if response.status_code != 200:
            log.error("Shopify refused the client-credentials grant (HTTP %s): check "
                      "SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET", response.status_code)
            raise StoreUnavailable(f"Shopify refused the client credentials "
                                   f"(HTTP {response.status_code})")
        granted = response.json()
        return str(granted["access_token"]), self._clock() + float(granted.get("expires_in", 0))


def _code(error: Mapping[str, Any]) -> str:
    return str((error.get("extensions") or {}).get("code") or "")


def _error_summary(errors: list[Mapping[str, Any]]) -> str:
    return "; ".join(f"{_code(e) or 'ERROR'}: {e.get('message', '')}" for e in errors)[:300]
