"""Team-scoped agents, end to end through the gateway's HTTP API and live WebSocket (no
Rasa needed: handoffs are opened through the desk as the bot's escalations open them):
an agent reads and works only their teams' handoffs and hears only their events, the
admin everything; slots come masked like the contact; tokens expire; a console whose
token stops working (agent removed by `bot agents remove`, token re-issued or expired)
is closed within seconds. Embedded (SQLite, no Redis) and production (PostgreSQL and
Redis) alike."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional

import pytest
import pytest_asyncio
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from bot.app import ROUTER, create_app
from bot.cli import main
from bot.handoff.console import RECHECK_SECONDS, UNAUTHORIZED_CLOSE
from bot.handoff.desk import HandoffDesk
from bot.handoff.store import HandoffStore, metadata
from bot.policies import load_channel_policy
from bot.settings import load_settings
from common.privacy import mask
from common.sql import create_store_engine
from connectors.message import Message
from connectors.telegram import TelegramChannel
from tests.bot.conftest import ADMIN_TOKEN
from tests.bot.test_agent_console import bearer, call
from tests.connectors.test_telegram import credentials
from tests.provider_api import ProviderAPI, free_port

DAY = 86400
# what the bot hands over with an escalation: personal slots beside the ones agents need
SLOTS = {"order_id": "A1001", "request": "change_address", "contact": "ann.smith@example.com",
         "new_address": "221B Baker Street, London NW1", "one_time_code": "493817",
         "code_sent_to": "ann.smith@example.com", "next_request": "call me on +44 7700 900123",
         "codes_sent": 1.0, "peak_deflected": False}


@pytest_asyncio.fixture(params=["embedded", "production"])
async def gateway(request: pytest.FixtureRequest, tmp_path: Path,
                  bot_api: ProviderAPI) -> AsyncIterator[TestClient]:
    """The gateway without Rasa: on SQLite without Redis, or on PostgreSQL with Redis."""
    database_url, redis_url = f"sqlite:///{tmp_path / 'store.db'}", ""
    if request.param == "production":
        database_url = request.getfixturevalue("postgres_url")
        redis_url = request.getfixturevalue("redis_url")
        metadata.drop_all(create_store_engine(database_url))  # the session's schema is shared
    settings = dataclasses.replace(load_settings(), rasa_url=f"http://127.0.0.1:{free_port()}",
                                   database_url=database_url, var_dir=tmp_path,
                                   redis_url=redis_url, agent_api_token=ADMIN_TOKEN)
    policy = load_channel_policy()
    client = TestClient(TestServer(create_app(
        settings, {"telegram": TelegramChannel(credentials(bot_api.url), policy)}, policy)))
    await client.start_server()
    yield client
    await client.close()


def desk_of(client: TestClient) -> HandoffDesk:
    return client.app[ROUTER].desk


async def agent(client: TestClient, name: str, *teams: str, issued: Optional[float] = None,
                ) -> str:
    desk = desk_of(client)
    return await desk.records.write(desk.store.add_agent, name, list(teams), 3,
                                    time.time() if issued is None else issued)


async def escalated(client: TestClient, queue: str, slots: Dict[str, Any] = SLOTS,
                    ) -> Dict[str, Any]:
    """A handoff in `queue`, opened as the bot's escalation opens one."""
    chat = str(uuid.uuid4().int % 10**9)
    message = Message("telegram", "telegram", chat, f"m{chat}", "I want a person",
                      profile_name="Ann")
    opened = await desk_of(client).escalate(message, {
        "reason_code": "customer_request", "rule": "customer_request", "tier": 1,
        "queue": queue, "customer": {"name": "Ann", "verified": True,
                                     "contact": "ann.smith@example.com"},
        "order_id": None, "slots": slots, "summary": {"what_happened": "asked for a person"}})
    assert opened is not None
    return opened


async def console(client: TestClient, token: str) -> Any:
    socket = await client.ws_connect("/api/events")
    await socket.send_json({"token": token})
    assert (await socket.receive_json(timeout=5))["type"] == "ready"
    return socket


async def opened_events(socket: Any, mine: List[str], last: str) -> List[str]:
    """The conversations of the handoff.opened events the console got, of those in
    `mine` (Redis may carry other gateways' events), up to `last`'s."""
    seen: List[str] = []
    while last not in seen:
        event = await socket.receive_json(timeout=10)
        conversation = (event.get("handoff") or {}).get("conversation_id")
        if event["type"] == "handoff.opened" and conversation in mine:
            seen.append(conversation)
    return seen


async def closed_within(socket: Any, seconds: float) -> str:
    """The close frame's reason, once the server closed the console."""
    deadline = time.monotonic() + seconds
    while True:
        message = await socket.receive(timeout=max(0.1, deadline - time.monotonic()))
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
            assert socket.close_code == UNAUTHORIZED_CLOSE
            return str(message.extra or "")


async def test_an_agent_of_another_team_is_refused_on_every_endpoint(
        gateway: TestClient) -> None:
    record = await escalated(gateway, "general")
    path = f"/api/handoffs/{record['id']}"
    dan = await agent(gateway, "dan", "logistics")
    bea = await agent(gateway, "bea", "general")
    refused = [("GET", path, None), ("GET", "/api/handoffs?queue=general", None),
               ("GET", f"{path}/attachment?url=tg-file:x", None),
               ("POST", f"{path}/claim", {"agent": "dan"}),
               ("POST", f"{path}/messages", {"text": "hi"}),
               ("POST", f"{path}/notes", {"text": "not mine"}),
               ("POST", f"{path}/transfer", {"queue": "logistics"}),
               ("POST", f"{path}/resolve", {"disposition": "solved"})]
    for state in ("waiting", "active"):
        for method, url, body in refused:
            status, answer = await call(gateway, method, url, dan, body)
            assert (status, answer["error"]) == (403, "dan is not in the general team"), \
                (state, url)
        status, listed = await call(gateway, "GET", "/api/handoffs", dan)
        assert status == 200 and record["id"] not in [h["id"] for h in listed]
        assert (await call(gateway, "POST", "/api/queues/next", dan))[0] == 409
        for token in (bea, ADMIN_TOKEN):
            status, shown = await call(gateway, "GET", path, token)
            assert status == 200 and shown["status"] == state
            status, listed = await call(gateway, "GET", "/api/handoffs", token)
            assert record["id"] in [h["id"] for h in listed]
        if state == "waiting":
            assert (await call(gateway, "POST", f"{path}/claim", bea, {"agent": "bea"}))[0] \
                == 200
    status, final = await call(gateway, "GET", path, ADMIN_TOKEN)
    assert [(a["actor"], a["action"]) for a in final["audit"]] == [("bot", "open"),
                                                                    ("bea", "claim")]
    assert final["notes"] == [] and final["queue"] == "general"
    # another team's handoff is refused; one that does not exist is still not found
    assert (await call(gateway, "GET", "/api/handoffs/999999", dan))[0] == 404


async def test_an_agent_who_transfers_a_handoff_out_of_their_teams_no_longer_sees_it(
        gateway: TestClient) -> None:
    record = await escalated(gateway, "general")
    path = f"/api/handoffs/{record['id']}"
    bea = await agent(gateway, "bea", "general")
    dan = await agent(gateway, "dan", "logistics")
    status, moved = await call(gateway, "POST", f"{path}/transfer", bea, {"queue": "logistics"})
    assert status == 200 and (moved["queue"], moved["status"]) == ("logistics", "waiting")
    assert (await call(gateway, "GET", path, bea))[0] == 403
    assert (await call(gateway, "POST", f"{path}/transfer", bea, {"queue": "general"}))[0] == 403
    status, shown = await call(gateway, "GET", path, dan)
    assert status == 200 and shown["audit"][-1]["detail"] == {"from": "general",
                                                               "to": "logistics"}


async def test_consoles_hear_only_their_teams_handoffs_with_slots_masked(
        gateway: TestClient) -> None:
    bea = await console(gateway, await agent(gateway, "bea", "general"))
    dan = await console(gateway, await agent(gateway, "dan", "logistics"))
    admin = await console(gateway, ADMIN_TOKEN)
    opened = [await escalated(gateway, queue)
              for queue in ("general", "logistics", "general", "logistics")]
    mine = [h["conversation_id"] for h in opened]
    general_1, logistics_1, general_2, logistics_2 = mine
    assert await opened_events(bea, mine, general_2) == [general_1, general_2]
    assert await opened_events(dan, mine, logistics_2) == [logistics_1, logistics_2]
    assert await opened_events(admin, mine, logistics_2) == mine
    # a note on a general handoff: bea hears it, dan does not (his next event is the admin's
    # note on a logistics handoff)
    await call(gateway, "POST", f"/api/handoffs/{opened[0]['id']}/notes", ADMIN_TOKEN,
               {"text": "checking"})
    await call(gateway, "POST", f"/api/handoffs/{opened[1]['id']}/notes", ADMIN_TOKEN,
               {"text": "checking"})
    noted = await next_of(bea, "handoff.note", mine)
    assert noted["handoff"]["id"] == opened[0]["id"]
    assert noted["handoff"]["slots"] == masked_slots()
    assert (await next_of(dan, "handoff.note", mine))["handoff"]["id"] == opened[1]["id"]
    for socket in (bea, dan, admin):
        await socket.close()


async def next_of(socket: Any, kind: str, mine: List[str]) -> Dict[str, Any]:
    while True:
        event: Dict[str, Any] = await socket.receive_json(timeout=10)
        if event["type"] == kind and event["handoff"]["conversation_id"] in mine:
            return event


def masked_slots() -> Dict[str, Any]:
    """SLOTS as agents see them: what they work with whole, personal values masked."""
    return {"order_id": "A1001", "request": "change_address",
            "contact": "a***@example.com", "new_address": mask("221B Baker Street, London NW1"),
            "one_time_code": "***", "code_sent_to": "a***@example.com",
            # shown whole by policy, but this one carries a phone number
            "next_request": mask("call me on +44 7700 900123"),
            "codes_sent": 1.0, "peak_deflected": False}


async def test_slots_are_masked_like_the_contact_in_every_answer(gateway: TestClient) -> None:
    record = await escalated(gateway, "general")
    bea = await agent(gateway, "bea", "general")
    status, shown = await call(gateway, "GET", f"/api/handoffs/{record['id']}", bea)
    assert status == 200 and shown["slots"] == masked_slots()
    assert shown["customer"]["contact"] == "a***@example.com"
    status, listed = await call(gateway, "GET", "/api/handoffs?status=waiting", bea)
    status, claimed = await call(gateway, "POST", f"/api/handoffs/{record['id']}/claim", bea,
                                 {"agent": "bea"})
    for answer in (shown, *listed, claimed):
        text = json.dumps(answer)
        for personal in ("ann.smith", "Baker Street", "493817", "7700 900123"):
            assert personal not in text


async def test_an_expired_token_is_refused_saying_how_to_get_a_new_one(
        gateway: TestClient) -> None:
    old = await agent(gateway, "olga", "general", issued=time.time() - 31 * DAY)
    recent = await agent(gateway, "rita", "general", issued=time.time() - 29 * DAY)
    response = await gateway.get("/api/me", headers=bearer(old))
    assert response.status == 401
    error = (await response.json())["error"]
    assert "expired" in error and "bot agents add NAME" in error
    assert (await call(gateway, "GET", "/api/me", recent))[0] == 200
    assert (await call(gateway, "GET", "/api/kpis?days=1", old))[0] == 401  # the dashboard too
    socket = await gateway.ws_connect("/api/events")
    await socket.send_json({"token": old})
    assert "expired" in await closed_within(socket, 5)
    # `agent_token_days: 0`: tokens never expire
    desk = desk_of(gateway)
    desk.policy = desk.policy.copy(update={"agent_token_days": 0})
    assert (await call(gateway, "GET", "/api/me", old))[0] == 200


async def test_a_console_closes_within_seconds_when_its_token_expires(
        gateway: TestClient) -> None:
    socket = await console(gateway, await agent(gateway, "rita", "general"))
    admin = await console(gateway, ADMIN_TOKEN)
    desk = desk_of(gateway)
    desk.clock = lambda: time.time() + 31 * DAY  # a month passes
    assert "expired" in await closed_within(socket, RECHECK_SECONDS + 3)
    assert not admin.closed  # the admin token does not expire
    await admin.close()


async def test_a_removed_agents_console_closes_within_seconds(
        gateway: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    erin = await console(gateway, await agent(gateway, "erin", "general"))
    fred_token = await agent(gateway, "fred", "general")
    fred = await console(gateway, fred_token)
    admin = await console(gateway, ADMIN_TOKEN)
    # the command line, in its own process, reaches only the database
    url = desk_of(gateway).store.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("GATEWAY_DATABASE_URL", url)
    assert await asyncio.to_thread(main, ["agents", "remove", "erin"]) == 0
    started = time.monotonic()
    assert "no longer works" in await closed_within(erin, RECHECK_SECONDS + 3)
    assert time.monotonic() - started <= RECHECK_SECONDS + 1
    # a new token for fred: the console signed in with the old one closes too
    HandoffStore(create_store_engine(url)).add_agent("fred", ["general"], 3, time.time())
    assert "no longer works" in await closed_within(fred, RECHECK_SECONDS + 3)
    assert (await call(gateway, "GET", "/api/me", fred_token))[0] == 401
    assert not admin.closed
    await admin.close()
