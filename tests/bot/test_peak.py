"""Peak mode on the gateway's side: the switch (config, admin API, CLI) shared through
the database and audited, surge SLA targets for handoffs opened during the peak and the
normal ones after it, the live event and banner for consoles, and the bot told in each
message's metadata (read back from Rasa's own tracker store)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from actions.policy import load_peak_policy
from bot.cli import main
from bot.handoff import peak as peak_module
from bot.handoff.live import LiveQueues
from bot.handoff.peak import PeakConfigured, PeakMode
from tests.bot.conftest import ADMIN_TOKEN
from tests.bot.handoff.test_desk import Desk, desk_with, escalate
from tests.bot.test_agent_console import agent, ask_for_a_person, call
from tests.bot.test_gateway import post_update, sent_texts, until, update
from tests.conftest import RasaStack
from tests.provider_api import ProviderAPI

CHAT = 7600001


@pytest_asyncio.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    async with desk_with(tmp_path, lambda store, records, _: LiveQueues(store, records)) as d:
        d.desk.peak = PeakMode(load_peak_policy(), d.desk.records, d.desk.store)
        yield d


async def test_handoffs_opened_in_peak_get_the_surge_targets_and_after_it_the_normal_ones(
        desk: Desk) -> None:
    peak = desk.desk.peak
    assert peak is not None and not await peak.is_on()
    before = await escalate(desk, "1")
    await peak.switch(True, "admin", "Black Friday")
    during = await escalate(desk, "2")
    urgent = await escalate(desk, "3", tier=3, rule="safety_incident")
    await peak.switch(False, "admin", "")
    after = await escalate(desk, "4")
    # telegram: 15 minutes normally, an hour in peak (policy/peak.yml); tier 3 a quarter
    assert [h["sla_target_seconds"] for h in (before, during, urgent, after)] == [
        900, 3600, 900, 900]
    trail = desk.desk.store.audit_trail()
    assert [(a["actor"], a["action"], a["detail"]) for a in trail
            if a["action"].startswith("peak")] == [
        ("admin", "peak_on", {"note": "Black Friday"}), ("admin", "peak_off", {"note": ""})]


async def test_every_gateway_follows_the_switch(desk: Desk,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    other = PeakMode(load_peak_policy(), desk.desk.records, desk.desk.store)
    assert not await other.is_on()
    await desk.desk.peak.switch(True, "admin", "")  # type: ignore[union-attr]
    assert not await other.is_on()  # read less than REFRESH_SECONDS ago
    monkeypatch.setattr(peak_module, "REFRESH_SECONDS", 0.0)
    assert await other.is_on()


async def test_peak_mode_on_in_the_policy_cannot_be_switched_off(desk: Desk) -> None:
    configured = PeakMode(load_peak_policy().copy(update={"enabled": True}),
                          desk.desk.records, desk.desk.store)
    assert await configured.is_on()
    with pytest.raises(PeakConfigured, match="enabled: true"):
        await configured.switch(False, "admin", "")


def test_the_cli_switches_and_shows_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    monkeypatch.delenv("GATEWAY_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["peak", "on", "--note", "Singles Day"]) == 0
    assert main(["peak", "status"]) == 0
    out = capsys.readouterr().out
    assert "peak mode is on; switched by cli: Singles Day" in out.splitlines()[-1]
    assert main(["peak", "off"]) == 0
    assert "peak mode is off" in capsys.readouterr().out


def user_metadata(tracker_db: Path, sender: str) -> List[Dict[str, Any]]:
    """The metadata of each customer message, as Rasa stored it."""
    with sqlite3.connect(tracker_db) as db:
        rows = db.execute("SELECT data FROM events WHERE sender_id = ? AND type_name = 'user'"
                          " ORDER BY id", (sender,)).fetchall()
    return [json.loads(data).get("metadata", {}) for (data,) in rows]


async def test_the_admin_switches_peak_mode_and_consoles_and_the_bot_hear_of_it(
        client: TestClient, bot_api: ProviderAPI, rasa_stack: RasaStack) -> None:
    token = await agent(client, "lee", "general")
    status, _ = await call(client, "POST", "/api/peak", token, {"on": True})
    assert status == 403
    status, problem = await call(client, "POST", "/api/peak", ADMIN_TOKEN, {"on": "yes"})
    assert status == 400 and "'on'" in problem["error"]
    console = await client.ws_connect("/api/events")
    await console.send_json({"token": token})
    assert (await console.receive_json(timeout=5))["type"] == "ready"
    try:
        status, state = await call(client, "POST", "/api/peak", ADMIN_TOKEN,
                                   {"on": True, "note": "Black Friday"})
        assert status == 200 and state["on"] and state["changed_by"] == "admin"
        event = await console.receive_json(timeout=5)
        assert event["type"] == "peak.changed" and event["peak"]["on"]
        status, config = await call(client, "GET", "/api/config", token)
        assert config["peak"] is True and config["peak_banner"].startswith("Peak mode")

        assert await post_update(client, update(6000, "where is my order?", chat=CHAT)) == 200
        await until(lambda: len(sent_texts(bot_api, CHAT)) >= 1)
        assert user_metadata(rasa_stack.tracker_db, f"telegram:{CHAT}")[-1]["peak"] is True
        handoff = await ask_for_a_person(client, bot_api, CHAT + 1, 6001)
        assert handoff["sla"]["target_seconds"] == 3600  # telegram's surge target
    finally:
        status, state = await call(client, "POST", "/api/peak", ADMIN_TOKEN, {"on": False})
        await console.close()
    assert status == 200 and not state["on"]
    assert (await call(client, "GET", "/api/peak", token))[1]["on"] is False
