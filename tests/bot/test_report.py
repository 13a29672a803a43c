"""`bot report` end to end: customers write on Telegram through the gateway to the real
Rasa, and the review reads their contact reasons from Rasa's own tracker store and the
handoffs from the gateway's records."""
from __future__ import annotations

import csv
import io

import pytest
from aiohttp.test_utils import TestClient

from bot.cli import main
from tests.bot.test_agent_console import ask_for_a_person
from tests.bot.test_dashboard import oldest_open
from tests.bot.test_gateway import post_update, sent_texts, until, update
from tests.conftest import RasaStack
from tests.provider_api import ProviderAPI

CHAT = 7400001


def review(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
           rasa_stack: RasaStack, *args: str) -> str:
    for name, value in rasa_stack.env(RASA_TRACKER_DB=str(rasa_stack.tracker_db),
                                      GATEWAY_DATABASE_URL="",
                                      TRACKER_DATABASE_URL="").items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert main(["report", *args]) == 0
    return capsys.readouterr().out


async def test_the_review_counts_what_customers_wrote_about(
        client: TestClient, bot_api: ProviderAPI, rasa_stack: RasaStack,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert await post_update(client, update(4000, "where is my order?", chat=CHAT)) == 200
    await until(lambda: len(sent_texts(bot_api, CHAT)) >= 1)
    handoff = await ask_for_a_person(client, bot_api, CHAT + 1, 4001)

    rows = list(csv.DictReader(io.StringIO(review(monkeypatch, capsys, rasa_stack,
                                                  "--days", "1", "--csv"))))
    by_intent = {r["key"]: r for r in rows if r["dimension"] == "intent"}
    assert int(by_intent["order_status"]["conversations"]) >= 1
    by_queue = {r["key"]: r for r in rows if r["dimension"] == "queue"}
    assert int(by_queue[handoff["queue"]]["handoffs"]) >= 1
    assert int(by_queue[handoff["queue"]]["backlog"]) >= 1
    by_channel = {r["key"]: r for r in rows if r["dimension"] == "channel"}
    assert int(by_channel["telegram"]["conversations"]) >= 2

    text = review(monkeypatch, capsys, rasa_stack, "--days", "7")
    assert text.startswith("Support review")
    top = text.split("Top contact reasons", 1)[1].split("\n\n", 1)[0]
    assert "Where is my order" in top
    oldest = text.split("Oldest open handoffs", 1)[1].splitlines()[2:]
    assert [line.split()[0] for line in oldest if line.strip()] == oldest_open(client)
