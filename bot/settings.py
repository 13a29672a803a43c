"""Runtime settings, all from the environment, with embedded defaults."""
from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Tuple

from common.paths import var_dir

# the secrets `make run` makes in var/ when the environment gives none
REST_TOKEN_FILE = "rest-api.token"
ACTION_TOKEN_FILE = "action-server.token"


HANDOFF_TARGETS = ("console", "chatwoot", "freshdesk", "zendesk")
CHATWOOT_VARIABLES = ("CHATWOOT_URL", "CHATWOOT_ACCOUNT_ID", "CHATWOOT_API_TOKEN",
                      "CHATWOOT_INBOX_ID", "CHATWOOT_WEBHOOK_SECRET")


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the variable."""


@dataclass(frozen=True)
class ChatwootSettings:
    """Chatwoot as the handoff target: its Application API (a token sent as the
    `api_access_token` header), the API-channel inbox the conversations go to, and
    the secret its webhooks are signed with."""

    url: str
    account_id: int
    api_token: str
    inbox_id: int
    webhook_secret: str


@dataclass(frozen=True)
class FreshdeskSettings:
    """Freshdesk as the handoff target: its API v2 at `api_url` (https://<domain>,
    or a local stand-in in tests), an agent's API key (HTTP Basic, the key as user and
    "X" as password), and the secret its automation webhooks send in a header."""

    api_url: str
    api_key: str
    webhook_secret: str


@dataclass(frozen=True)
class ZendeskSettings:
    """Zendesk as the handoff target, through Sunshine Conversations (SunCo): the SunCo
    app the conversations go to, an app API key (HTTP Basic: key id and secret), the
    API at `api_url` (https://api.smooch.io, or a local stand-in in tests), the secret
    SunCo sends in the X-API-Key header of the integration's webhooks, and the
    switchboard integration (id or name) of Zendesk's Agent Workspace."""

    app_id: str
    key_id: str
    key_secret: str
    webhook_secret: str
    api_url: str = "https://api.smooch.io"
    agent_integration: str = "zd-agentWorkspace"


@dataclass(frozen=True)
class Settings:
    gateway_host: str
    gateway_port: int
    rasa_url: str
    action_server_url: str
    var_dir: Path
    rasa_timeout_seconds: float
    redis_url: str
    database_url: str
    webchat_secret: str
    gateway_database_override: str
    agent_api_token: str
    metrics_token: str
    rest_api_token: str
    # Rasa's tracker store, where the KPIs find each message's intent
    tracker_database_url: str
    # where agents work handoffs (HANDOFF_TARGET), and that helpdesk's settings
    handoff_target: str = "console"
    chatwoot: Optional[ChatwootSettings] = None
    freshdesk: Optional[FreshdeskSettings] = None
    zendesk: Optional[ZendeskSettings] = None
    # the carrier-tracking services' webhook secrets: each one set serves its webhook
    # (bot/outreach/carriers.py)
    easypost_webhook_secret: str = ""
    aftership_webhook_secret: str = ""
    # the store platforms' webhook secrets: each one set serves its webhook
    # (bot/outreach/store_hooks.py); SHOPIFY_SHOP: the only shop whose webhooks are taken
    shopify_webhook_secret: str = ""
    woocommerce_webhook_secret: str = ""
    shopify_shop: str = ""

    @property
    def action_health_url(self) -> str:
        return self.action_server_url.rsplit("/webhook", 1)[0] + "/health"

    @property
    def gateway_database_url(self) -> str:
        """Where the gateway keeps conversations and deliveries: GATEWAY_DATABASE_URL,
        else DATABASE_URL (PostgreSQL handles both writers), else its own SQLite file,
        so it never waits on the action server's writes to var/store.db."""
        return (self.gateway_database_override or self.database_url
                or f"sqlite:///{self.var_dir / 'gateway.db'}")

    @property
    def rasa_urls(self) -> Tuple[str, ...]:
        """RASA_URL may list several instances, comma separated."""
        return tuple(url.strip().rstrip("/") for url in self.rasa_url.split(",") if url.strip())

    @property
    def rasa_port(self) -> int:
        return port_of(self.rasa_urls[0])

    @property
    def action_port(self) -> int:
        return port_of(self.action_server_url)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def load_settings() -> Settings:
    env = os.environ
    var = var_dir()
    return Settings(
        gateway_host=env.get("GATEWAY_HOST", "0.0.0.0"),
        gateway_port=int(env.get("GATEWAY_PORT", "8080")),
        rasa_url=env.get("RASA_URL", "http://127.0.0.1:5005").rstrip("/"),
        action_server_url=env.get("ACTION_SERVER_URL", "http://127.0.0.1:5055/webhook"),
        var_dir=var,
        rasa_timeout_seconds=float(env.get("RASA_TIMEOUT_SECONDS", "10")),
        redis_url=env.get("REDIS_URL", ""),
        database_url=env.get("DATABASE_URL", ""),
        webchat_secret=env.get("WEBCHAT_SECRET", ""),
        gateway_database_override=env.get("GATEWAY_DATABASE_URL", ""),
        agent_api_token=env.get("AGENT_API_TOKEN", ""),
        metrics_token=env.get("METRICS_TOKEN", ""),
        rest_api_token=env.get("REST_API_TOKEN", ""),
        tracker_database_url=env.get("TRACKER_DATABASE_URL") or
        f"sqlite:///{env.get('RASA_TRACKER_DB') or var / 'rasa_tracker.db'}",
        handoff_target=handoff_target(env),
        chatwoot=chatwoot_settings(env) if handoff_target(env) == "chatwoot" else None,
        freshdesk=freshdesk_settings(env) if handoff_target(env) == "freshdesk" else None,
        zendesk=zendesk_settings(env) if handoff_target(env) == "zendesk" else None,
        easypost_webhook_secret=env.get("EASYPOST_WEBHOOK_SECRET", ""),
        aftership_webhook_secret=env.get("AFTERSHIP_WEBHOOK_SECRET", "").strip(),
        shopify_webhook_secret=env.get("SHOPIFY_WEBHOOK_SECRET", "").strip(),
        woocommerce_webhook_secret=env.get("WOOCOMMERCE_WEBHOOK_SECRET", "").strip(),
        shopify_shop=env.get("SHOPIFY_SHOP", "").strip(),
    )


def handoff_target(env: Mapping[str, str]) -> str:
    target = env.get("HANDOFF_TARGET", "").strip().lower() or "console"
    if target not in HANDOFF_TARGETS:
        raise SettingsError(f"HANDOFF_TARGET={target!r}: one of {', '.join(HANDOFF_TARGETS)}")
    return target


def chatwoot_settings(env: Mapping[str, str]) -> ChatwootSettings:
    """Every CHATWOOT_ variable, or SettingsError naming the missing or wrong ones."""
    missing = [name for name in CHATWOOT_VARIABLES if not env.get(name, "").strip()]
    if missing:
        raise SettingsError(f"HANDOFF_TARGET=chatwoot needs {', '.join(missing)}")
    numbers = {}
    for name in ("CHATWOOT_ACCOUNT_ID", "CHATWOOT_INBOX_ID"):
        value = env[name].strip()
        if not value.isdigit():
            raise SettingsError(f"{name} must be a number, the id Chatwoot shows")
        numbers[name] = int(value)
    return ChatwootSettings(url=env["CHATWOOT_URL"].strip().rstrip("/"),
                            account_id=numbers["CHATWOOT_ACCOUNT_ID"],
                            api_token=env["CHATWOOT_API_TOKEN"].strip(),
                            inbox_id=numbers["CHATWOOT_INBOX_ID"],
                            webhook_secret=env["CHATWOOT_WEBHOOK_SECRET"].strip())


def freshdesk_settings(env: Mapping[str, str]) -> FreshdeskSettings:
    """The FRESHDESK_ variables, or SettingsError naming the missing or wrong ones."""
    domain = env.get("FRESHDESK_DOMAIN", "").strip().lower().rstrip("/")
    base = env.get("FRESHDESK_API_BASE_URL", "").strip().rstrip("/")
    missing = [name for name in ("FRESHDESK_API_KEY", "FRESHDESK_WEBHOOK_SECRET")
               if not env.get(name, "").strip()]
    if not domain and not base:
        missing.insert(0, "FRESHDESK_DOMAIN (or FRESHDESK_API_BASE_URL)")
    if missing:
        raise SettingsError(f"HANDOFF_TARGET=freshdesk needs {', '.join(missing)}")
    if domain and not base:
        if domain.startswith(("http://", "https://")) or not re.fullmatch(
                r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+",
                domain):
            raise SettingsError(f"FRESHDESK_DOMAIN={domain!r}: the helpdesk's host name, "
                                "e.g. mystore.freshdesk.com")
        base = f"https://{domain}"
    if not base.startswith(("http://", "https://")):
        raise SettingsError("FRESHDESK_API_BASE_URL must be an http(s) URL, e.g. "
                            "https://mystore.freshdesk.com")
    return FreshdeskSettings(api_url=base, api_key=env["FRESHDESK_API_KEY"].strip(),
                             webhook_secret=env["FRESHDESK_WEBHOOK_SECRET"].strip())


ZENDESK_VARIABLES = ("ZENDESK_SUNCO_APP_ID", "ZENDESK_SUNCO_KEY_ID",
                     "ZENDESK_SUNCO_KEY_SECRET", "ZENDESK_SUNCO_WEBHOOK_SECRET")


def zendesk_settings(env: Mapping[str, str]) -> ZendeskSettings:
    """The ZENDESK_ variables, or SettingsError naming the missing or wrong ones."""
    missing = [name for name in ZENDESK_VARIABLES if not env.get(name, "").strip()]
    if missing:
        raise SettingsError(f"HANDOFF_TARGET=zendesk needs {', '.join(missing)}")
    app_id = env["ZENDESK_SUNCO_APP_ID"].strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", app_id):
        raise SettingsError(f"ZENDESK_SUNCO_APP_ID={app_id!r}: the app's id as Admin Center "
                            "shows it (letters and digits), e.g. 5d8cff3cd55ffa010958a2b5")
    base = (env.get("ZENDESK_SUNCO_API_BASE_URL", "").strip().rstrip("/")
            or ZendeskSettings.api_url)
    if not base.startswith(("http://", "https://")):
        raise SettingsError("ZENDESK_SUNCO_API_BASE_URL must be an http(s) URL, e.g. "
                            "https://api.smooch.io or https://<subdomain>.zendesk.com/sc")
    agent = (env.get("ZENDESK_SWITCHBOARD_AGENT_INTEGRATION", "").strip()
             or ZendeskSettings.agent_integration)
    return ZendeskSettings(app_id=app_id, key_id=env["ZENDESK_SUNCO_KEY_ID"].strip(),
                           key_secret=env["ZENDESK_SUNCO_KEY_SECRET"].strip(),
                           webhook_secret=env["ZENDESK_SUNCO_WEBHOOK_SECRET"].strip(),
                           api_url=base, agent_integration=agent)


def local_secret(var_dir: Path, name: str) -> str:
    """A random secret kept (owner-only) in var/, for running without configuration.
    Several processes starting at once (run-prod's gateways) agree on one: the file
    appears whole, by a link that fails when another process linked first."""
    path = var_dir / name
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        draft = var_dir / f".{name}.{secrets.token_hex(8)}"
        draft.write_text(secrets.token_hex(32))
        draft.chmod(0o600)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()
