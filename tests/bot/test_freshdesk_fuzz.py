"""Freshdesk's webhook under fuzzing (tests/bot/test_fuzz.py's rules: never a 5xx, no
message queued, no call to a provider, nothing written): a body without the secret
header, or with another secret, is refused with 401 whatever it is; with the secret,
anything that is not a documented body is refused with 400, and a documented one for
a ticket that is no handoff's changes nothing."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import AsyncIterator, Dict, Optional

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from bot.app import create_app
from bot.policies import load_channel_policy
from bot.settings import FreshdeskSettings, load_settings
from connectors.telegram import TelegramChannel
from tests.bot.test_fuzz import FUZZ, Gateway, header_text, json_objects, json_values
from tests.connectors.test_telegram import credentials as telegram_credentials
from tests.helpdesk_api.freshdesk import SECRET, SECRET_HEADER
from tests.provider_api import ProviderAPI, free_port


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    api = await ProviderAPI().start()  # Telegram and Freshdesk: answers 404, records calls
    policy = load_channel_policy()
    settings = dataclasses.replace(
        load_settings(), var_dir=tmp_path, redis_url="", gateway_database_override="",
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        rasa_url=f"http://127.0.0.1:{free_port()}", handoff_target="freshdesk",
        freshdesk=FreshdeskSettings(api.url, "key", SECRET))
    channels = {"telegram": TelegramChannel(telegram_credentials(api.url), policy)}
    client = TestClient(TestServer(create_app(settings, dict(channels), policy)))
    await client.start_server()
    fuzzed = Gateway(client, api, [], {})
    fuzzed.baseline = fuzzed.counts()
    yield fuzzed
    await client.close()
    await api.stop()


async def post(gateway: Gateway, body: bytes, secret: Optional[str]) -> int:
    headers: Dict[str, str] = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    return await gateway.request("POST", "/webhooks/freshdesk", data=body, headers=headers)


events = st.fixed_dictionaries({
    "ticket_id": json_values | st.integers(-10, 2**64),
    "event": st.sampled_from(["reply", "note", "status", "deleted", "", 1]) | json_values,
}) | json_objects


@FUZZ
@given(body=st.binary(max_size=300) | events.map(lambda e: json.dumps(e).encode()),
       secret=st.none() | header_text.filter(lambda s: s != SECRET))
async def test_bodies_without_the_secret_are_refused(
        gateway: Gateway, body: bytes, secret: Optional[str]) -> None:
    assert await post(gateway, body, secret) == 401


@FUZZ
@given(body=st.binary(max_size=300) | events.map(lambda e: json.dumps(e).encode()))
async def test_bodies_with_the_secret_that_are_not_ours_change_nothing(
        gateway: Gateway, body: bytes) -> None:
    assert await post(gateway, body, SECRET) in (200, 400)
