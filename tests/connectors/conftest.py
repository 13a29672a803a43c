"""Fixtures for connector tests: a local provider API and a context that records
what a connector hands to the gateway (the gateway's own context is tested in
tests/bot)."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Dict, List, Optional, Sequence, Tuple

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from common.paths import REPO_ROOT
from common.policy_files import parse_yaml_model
from connectors.channel import Channel
from connectors.config import ChannelPolicy, RateSettings
from connectors.message import Button, Message, StatusUpdate, TranscriptTurn
from tests.provider_api import ProviderAPI

FAST = RateSettings(per_second=1000, burst=1000)


def channel_policy(**rates: RateSettings) -> ChannelPolicy:
    """policy/channels.yml with short retry pauses, and every rate fast unless a test
    sets it (the real rates would make each test wait seconds)."""
    policy = parse_yaml_model(ChannelPolicy, REPO_ROOT / "policy" / "channels.yml")
    retry = policy.retry.copy(update={"base_delay_seconds": 0.01, "max_delay_seconds": 0.05})
    fast = {name: FAST for name in policy.rates.__fields__}
    return policy.copy(update={"retry": retry,
                               "rates": policy.rates.copy(update={**fast, **rates})})


@dataclass
class RecordingContext:
    """The gateway side of the channel contract, in memory: accepted messages are
    kept in order, duplicates refused by (connector, message_id)."""

    accepted: List[Message] = field(default_factory=list)
    statuses: List[StatusUpdate] = field(default_factory=list)
    opted_out: Dict[Tuple[str, str], float] = field(default_factory=dict)
    inbound_at: Dict[str, float] = field(default_factory=dict)
    options: Dict[str, List[Button]] = field(default_factory=dict)
    store_addresses: Dict[str, str] = field(default_factory=dict)
    turns: Dict[str, List[TranscriptTurn]] = field(default_factory=dict)

    async def accept(self, message: Message) -> bool:
        if any((m.connector, m.message_id) == (message.connector, message.message_id)
               for m in self.accepted):
            return False
        self.accepted.append(message)
        self.inbound_at[message.conversation_id] = time.time()
        self.store_addresses[message.conversation_id] = message.store_address
        self.turns.setdefault(message.conversation_id, []).append(
            TranscriptTurn("customer", message.text, message.received_at))
        return True

    async def process_now(self, message: Message) -> None:
        """Kept like a webhook's message: nothing here answers it."""
        await self.accept(message)

    async def record_status(self, update: StatusUpdate) -> None:
        self.statuses.append(update)

    async def set_opted_out(self, connector: str, address: str, opted_out: bool) -> None:
        if opted_out:
            self.opted_out[(connector, address)] = time.time()
        else:
            self.opted_out.pop((connector, address), None)

    async def opted_out_since(self, connector: str, address: str) -> Optional[float]:
        return self.opted_out.get((connector, address))

    async def last_inbound_at(self, conversation_id: str) -> Optional[float]:
        return self.inbound_at.get(conversation_id)

    async def store_address(self, conversation_id: str) -> str:
        return self.store_addresses.get(conversation_id, "")

    async def remember_options(self, conversation_id: str, buttons: Sequence[Button]) -> None:
        self.options[conversation_id] = list(buttons)

    async def offered_options(self, conversation_id: str) -> List[Button]:
        return self.options.get(conversation_id, [])

    async def transcript(self, conversation_id: str) -> List[TranscriptTurn]:
        return self.turns.get(conversation_id, [])


@pytest_asyncio.fixture
async def provider_api() -> AsyncIterator[ProviderAPI]:
    api = await ProviderAPI().start()
    yield api
    await api.stop()


@pytest.fixture
def context() -> RecordingContext:
    return RecordingContext()


@contextlib.asynccontextmanager
async def serving(channel: Channel, context: RecordingContext) -> AsyncIterator[TestClient]:
    """A client for an app holding only this channel's webhooks, bound to `context`."""
    app = web.Application()
    channel.install(app, context)
    async with TestClient(TestServer(app)) as client:
        yield client
