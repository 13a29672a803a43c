"""What the helpdesk handoff tests (Chatwoot, Freshdesk, Zendesk) do alike: a copy of
the policy with the helpdesk's retries quickened, a gateway handing off to it, and a
Telegram customer asking for a person."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List, Protocol

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from bot.app import ROUTER, create_app
from bot.handoff.desk import HandoffDesk
from bot.handoff.store import Handoff
from bot.policies import load_channel_policy
from bot.settings import Settings
from common.paths import REPO_ROOT
from connectors.channel import Channel
from tests.bot.test_gateway import post_update, sent_texts, until, update
from tests.provider_api import ProviderAPI

# how often a helpdesk that did not take a handoff is offered it again, in these tests
RETRY_SECONDS = 0.5


class HelpdeskStandIn(Protocol):
    webhook_url: str


def policy_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, helpdesk: str,
                **changes: Any) -> Path:
    """The shipped policy, with `helpdesk` offered a handoff again every RETRY_SECONDS
    and its section of helpdesk.yml changed so."""
    directory = tmp_path / "policy"
    shutil.copytree(REPO_ROOT / "policy", directory)
    path = directory / "helpdesk.yml"
    data = yaml.safe_load(path.read_text())
    data[helpdesk].update(retry_seconds=RETRY_SECONDS, **changes)
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("POLICY_DIR", str(directory))
    return directory


async def serve(settings: Settings, channels: Dict[str, Channel], server: HelpdeskStandIn,
                **policy_changes: Any) -> TestClient:
    """A gateway handing off to settings.handoff_target, whose stand-in sends its
    webhooks there."""
    policy = load_channel_policy().copy(update=policy_changes)
    client = TestClient(TestServer(create_app(settings, channels, policy)))
    await client.start_server()
    server.webhook_url = str(client.make_url(f"/webhooks/{settings.handoff_target}"))
    return client


def desk_of(client: TestClient) -> HandoffDesk:
    return client.app[ROUTER].desk


async def open_handoff(client: TestClient, conversation_id: str) -> Handoff:
    desk = desk_of(client)
    await until(lambda: desk.store.open_for(conversation_id) is not None)
    handoff = desk.store.open_for(conversation_id)
    assert handoff is not None
    return handoff


async def ask_for_a_person(client: TestClient, bot_api: ProviderAPI,
                           chat: int, update_id: int) -> Handoff:
    assert await post_update(client, update(update_id, "I want to talk to a human",
                                            chat=chat)) == 200
    await until(lambda: len(sent_texts(bot_api, chat)) >= 2)
    return await open_handoff(client, f"telegram:{chat}")


def audit(client: TestClient, handoff_id: int) -> List[tuple]:
    return [(a["actor"], a["action"]) for a in desk_of(client).store.audit_trail(handoff_id)]


def status_of(client: TestClient, handoff_id: int) -> str:
    record = desk_of(client).store.get(handoff_id)
    assert record is not None
    return record["status"]
