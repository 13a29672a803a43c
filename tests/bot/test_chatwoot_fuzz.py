"""Fuzzing (hypothesis) POST /webhooks/chatwoot of a gateway with HANDOFF_TARGET=chatwoot,
in front of an unreachable Rasa and a Chatwoot that only records calls: bytes and JSON
of any shape, unsigned, wrongly signed and correctly signed, for conversations that are
not the gateway's. The gateway answers below 500, refuses every unsigned or wrongly
signed body with 401, writes nothing, sends nothing and calls nothing."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Optional

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from bot.app import create_app
from bot.policies import load_channel_policy
from bot.settings import ChatwootSettings, load_settings
from connectors.telegram import TelegramChannel
from tests.bot.test_fuzz import FUZZ, Gateway, header_text, json_objects, json_values
from tests.connectors.test_telegram import credentials as telegram_credentials
from tests.helpdesk_api.chatwoot import SECRET, sign
from tests.provider_api import ProviderAPI, free_port


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    api = await ProviderAPI().start()  # Telegram and Chatwoot: answers 404, records calls
    policy = load_channel_policy()
    settings = dataclasses.replace(
        load_settings(), var_dir=tmp_path, redis_url="", gateway_database_override="",
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        rasa_url=f"http://127.0.0.1:{free_port()}", handoff_target="chatwoot",
        chatwoot=ChatwootSettings(api.url, 1, "token", 2, SECRET))
    channels = {"telegram": TelegramChannel(telegram_credentials(api.url), policy)}
    client = TestClient(TestServer(create_app(settings, dict(channels), policy)))
    await client.start_server()
    fuzzed = Gateway(client, api, [], {})
    fuzzed.baseline = fuzzed.counts()
    yield fuzzed
    await client.close()
    await api.stop()


async def post(gateway: Gateway, body: bytes, signature: Optional[str],
               timestamp: Optional[str] = None) -> int:
    headers: Dict[str, str] = {"Content-Type": "application/json"}
    stamp = timestamp if timestamp is not None else str(int(time.time()))
    headers["X-Chatwoot-Timestamp"] = stamp
    if signature is not None:
        headers["X-Chatwoot-Signature"] = signature
    return await gateway.request("POST", "/webhooks/chatwoot", data=body, headers=headers)


events = st.fixed_dictionaries({
    "event": st.sampled_from(["message_created", "conversation_status_changed",
                              "conversation_created", "message_updated"]),
    "message_type": st.sampled_from(["outgoing", "incoming", "template", 1]),
    "private": st.booleans() | st.none(),
    "status": st.sampled_from(["open", "resolved", "pending", None]),
    "id": json_values,
    "content": json_values,
    "conversation": st.fixed_dictionaries({"id": json_values}) | json_values,
    "meta": json_values, "sender": json_values,
}) | json_objects


@FUZZ
@given(body=st.binary(max_size=300) | events.map(lambda e: json.dumps(e).encode()),
       signature=st.none() | header_text)
async def test_unsigned_or_wrongly_signed_bodies_are_refused(
        gateway: Gateway, body: bytes, signature: Optional[str]) -> None:
    assert await post(gateway, body, signature) == 401


@FUZZ
@given(body=st.binary(max_size=300) | events.map(lambda e: json.dumps(e).encode()))
async def test_signed_bodies_that_are_not_ours_change_nothing(gateway: Gateway,
                                                              body: bytes) -> None:
    timestamp = str(int(time.time()))
    assert await post(gateway, body, sign(SECRET, timestamp, body), timestamp) in (200, 400)


# 30 s clear of the 300 s allowed: a timestamp 301 s ahead, checked a second later on a
# busy machine, was 300 s ahead and rightly taken
@FUZZ
@given(event=events, skew=st.integers(330, 10**6) | st.integers(-10**6, -301))
async def test_stale_signatures_are_refused(gateway: Gateway, event: Dict[str, Any],
                                            skew: int) -> None:
    timestamp = str(int(time.time()) + skew)
    body = json.dumps(event).encode()
    assert await post(gateway, body, sign(SECRET, timestamp, body), timestamp) == 401
