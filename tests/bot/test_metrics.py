"""`GET /metrics`: webhooks counted per channel and status and timed, messages timed
from arrival to the replies being sent, every send's outcome counted, the handoff
queues' depth and SLA breaches as the desk sees them, an optional bearer token, and
nothing in it that names a customer. The tests share the session's database, so they
compare values before and after, never assume empty queues."""
from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Callable, Dict, FrozenSet, Optional, Tuple

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from bot.app import create_app
from bot.handoff.store import handoffs
from bot.policies import load_channel_policy
from bot.settings import Settings, load_settings
from connectors.rest import RestChannel
from connectors.telegram import SECRET_HEADER, TelegramChannel
from tests.bot.test_agent_console import agent, ask_for_a_person, call, desk_of
from tests.bot.test_gateway import post_update, sent_texts, update
from tests.connectors.test_telegram import API, SECRET, credentials
from tests.provider_api import ProviderAPI, free_port

METRICS_TOKEN = "metrics-token-for-tests"
REST_TOKEN = "rest-token-for-metrics-tests"

Key = Tuple[str, FrozenSet[Tuple[str, str]]]
Samples = Dict[Key, float]

# Label names the gateway's own series may carry, and the standard python_* ones.
GATEWAY_LABELS = {"channel", "code", "status", "queue", "le"}
PYTHON_LABELS = {"generation", "implementation", "major", "minor", "patchlevel", "version"}


async def scrape_text(client: TestClient, token: Optional[str] = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    return await response.text()


def parse(text: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def scrape(client: TestClient, token: Optional[str] = None) -> Samples:
    return parse(await scrape_text(client, token))


def value(samples: Samples, name: str, **labels: str) -> float:
    """A series' value; a series not (yet) exported counts as 0."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scraped_until(client: TestClient, condition: Callable[[Samples], bool],
                        seconds: float = 30) -> Samples:
    deadline = time.monotonic() + seconds
    while True:
        samples = await scrape(client)
        if condition(samples):
            return samples
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def telegram_sends(api: ProviderAPI, chat: int) -> int:
    return sum(1 for r in api.calls(f"{API}/sendMessage") if r.form["chat_id"] == [str(chat)])


@pytest_asyncio.fixture
async def offline(bot_api: ProviderAPI) -> AsyncIterator[
        Callable[[Settings], TestClient]]:
    """A gateway with Telegram, its own database and no Rasa: webhooks and scrapes only."""
    clients = []

    def make(settings: Settings) -> TestClient:
        policy = load_channel_policy()
        channels = {"telegram": TelegramChannel(credentials(bot_api.url), policy),
                    "rest": RestChannel(REST_TOKEN)}
        client = TestClient(TestServer(create_app(settings, channels, policy)))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def offline_settings(tmp_path: Path, metrics_token: str = "") -> Settings:
    return dataclasses.replace(load_settings(), var_dir=tmp_path, redis_url="",
                               database_url=f"sqlite:///{tmp_path / 'store.db'}",
                               gateway_database_override="",
                               rasa_url=f"http://127.0.0.1:{free_port()}",
                               metrics_token=metrics_token)


async def test_a_telegram_message_is_counted_timed_and_its_replies_counted(
        client: TestClient, bot_api: ProviderAPI) -> None:
    chat, text = 7450001, "where is my order"
    before = await scrape(client)
    assert await post_update(client, update(3000, text, chat=chat)) == 200
    after = await scraped_until(client, lambda s: value(
        s, "gateway_inbound_processing_seconds_count", channel="telegram") > value(
        before, "gateway_inbound_processing_seconds_count", channel="telegram"))

    def rise(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert rise("gateway_webhook_requests_total", channel="telegram", code="200") == 1
    assert rise("gateway_webhook_duration_seconds_count", channel="telegram") == 1
    assert 0 < rise("gateway_webhook_duration_seconds_sum", channel="telegram") < 1.0
    assert rise("gateway_inbound_processing_seconds_count", channel="telegram") == 1
    assert rise("gateway_inbound_processing_seconds_sum", channel="telegram") > 0
    replies = sent_texts(bot_api, chat)
    assert replies and "order number" in replies[0].lower()
    assert rise("gateway_outbound_messages_total", channel="telegram",
                status="sent") == telegram_sends(bot_api, chat)
    assert rise("gateway_outbound_messages_total", channel="telegram", status="failed") == 0


async def test_refused_and_malformed_webhooks_count_with_their_status(
        offline: Callable[[Settings], TestClient], tmp_path: Path) -> None:
    client = offline(offline_settings(tmp_path))
    await client.start_server()
    before = await scrape(client)
    assert (await client.post("/webhooks/telegram", json=update(3100, "hi"),
                              headers={SECRET_HEADER: "forged"})).status == 403
    assert (await client.post("/webhooks/telegram", data=b"{not json",
                              headers={SECRET_HEADER: SECRET})).status == 400
    assert (await client.post("/webhooks/telegram", data=b"[]",
                              headers={SECRET_HEADER: SECRET})).status == 400
    assert (await client.post("/webhooks/rest/webhook", data=b"nope", headers={
        "Authorization": f"Bearer {REST_TOKEN}"})).status == 400
    assert (await client.post("/webhooks/rest/webhook", data=b"nope")).status == 401
    # a path no route matches is not counted: callers cannot invent label values
    assert (await client.post("/webhooks/invented", data=b"x")).status == 404
    after = await scrape(client)

    def rise(channel: str, code: str) -> float:
        return (value(after, "gateway_webhook_requests_total", channel=channel, code=code)
                - value(before, "gateway_webhook_requests_total", channel=channel, code=code))

    assert (rise("telegram", "403"), rise("telegram", "400"), rise("rest", "400"),
            rise("rest", "401")) == (1, 2, 1, 1)
    assert rise("telegram", "200") == 0
    assert value(after, "gateway_webhook_duration_seconds_count", channel="telegram") == 3
    channels = {dict(labels).get("channel") for _, labels in after} - {None}
    assert channels == {"telegram", "rest"}


async def test_a_failed_send_is_counted_as_failed(
        client: TestClient, bot_api: ProviderAPI) -> None:
    chat = 7450002
    bot_api.fail_next("POST", f"{API}/sendMessage", web.json_response(
        {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"},
        status=400))
    before = await scrape(client)
    assert await post_update(client, update(3200, "hello", chat=chat)) == 200
    after = await scraped_until(client, lambda s: value(
        s, "gateway_inbound_processing_seconds_count", channel="telegram") > value(
        before, "gateway_inbound_processing_seconds_count", channel="telegram"))

    def rise(status: str) -> float:
        return (value(after, "gateway_outbound_messages_total", channel="telegram",
                      status=status)
                - value(before, "gateway_outbound_messages_total", channel="telegram",
                        status=status))

    attempts = telegram_sends(bot_api, chat)  # the failed one was not retried: a 400
    assert attempts >= 1
    assert (rise("failed"), rise("sent")) == (1, attempts - 1)
    records = desk_of(client).records
    deliveries = await records.read(records.deliveries)
    assert [d["status"] for d in deliveries
            if d["conversation_id"] == f"telegram:{chat}"].count("failed") == 1


async def test_queue_depth_and_sla_breaches_follow_the_desk(
        client: TestClient, bot_api: ProviderAPI) -> None:
    chat = 7450003
    desk = desk_of(client)
    before = await scrape(client)
    record = await ask_for_a_person(client, bot_api, chat, 3300)
    queue = record["queue"]

    def depth(samples: Samples, status: str) -> float:
        return value(samples, "gateway_handoff_queue_depth", queue=queue, status=status)

    def breaches(samples: Samples) -> float:
        return value(samples, "gateway_handoff_sla_breaches", queue=queue)

    waiting = await scrape(client)
    assert depth(waiting, "waiting") - depth(before, "waiting") == 1
    assert breaches(waiting) == breaches(before)
    # the gauges are the desk's own counts, for every queue
    rows = await desk.queues()
    assert {row["queue"] for row in rows} == set(desk.teams)
    for row in rows:
        for status in ("waiting", "active"):
            assert value(waiting, "gateway_handoff_queue_depth", queue=row["queue"],
                         status=status) == row[status]
        assert value(waiting, "gateway_handoff_sla_breaches",
                     queue=row["queue"]) == row["breached"]

    def overdue() -> None:
        with desk.store.engine.begin() as db:
            db.execute(handoffs.update().where(handoffs.c.id == record["id"])
                       .values(sla_due_at=time.time() - 1))

    await desk.records.write(overdue)
    late = await scrape(client)
    assert breaches(late) - breaches(waiting) == 1
    assert depth(late, "waiting") == depth(waiting, "waiting")

    name = f"metrics-{uuid.uuid4().hex[:8]}"
    token = await agent(client, name, queue)
    code, _ = await call(client, "POST", f"/api/handoffs/{record['id']}/claim", token,
                         {"agent": name})
    assert code == 200
    claimed = await scrape(client)
    assert depth(claimed, "waiting") - depth(late, "waiting") == -1
    assert depth(claimed, "active") - depth(late, "active") == 1
    assert breaches(claimed) == breaches(late), "claimed is not answered: still breached"

    code, _ = await call(client, "POST", f"/api/handoffs/{record['id']}/resolve", token,
                         {"disposition": "information_given"})
    assert code == 200
    resolved = await scrape(client)
    assert depth(resolved, "active") == depth(before, "active")
    assert breaches(resolved) == breaches(before)


async def test_the_output_names_no_customer(client: TestClient, bot_api: ProviderAPI) -> None:
    chat, text = 7450004, "where is my order A1001?"
    before = await scrape(client)
    assert await post_update(client, update(3400, text, chat=chat)) == 200
    await scraped_until(client, lambda s: value(
        s, "gateway_inbound_processing_seconds_count", channel="telegram") > value(
        before, "gateway_inbound_processing_seconds_count", channel="telegram"))
    assert sent_texts(bot_api, chat)
    output = await scrape_text(client)
    for private in (text, "A1001", "Ann", f"telegram:{chat}", f'"{chat}"'):
        assert private not in output
    samples = parse(output)
    for name, key in samples:
        labels = dict(key)
        allowed = GATEWAY_LABELS if name.startswith("gateway_") else PYTHON_LABELS
        assert set(labels) <= allowed, (name, labels)
        assert all(str(chat) not in label_value for label_value in labels.values())
    assert {dict(key)["channel"] for _, key in samples if "channel" in dict(key)} <= {
        "telegram", "webchat", "twilio", "whatsapp", "rest"}
    assert {dict(key)["queue"] for _, key in samples
            if "queue" in dict(key)} == set(desk_of(client).teams)


async def test_a_metrics_token_is_required_when_set(
        offline: Callable[[Settings], TestClient], tmp_path: Path) -> None:
    client = offline(offline_settings(tmp_path, metrics_token=METRICS_TOKEN))
    await client.start_server()
    for headers in ({}, {"Authorization": "Bearer wrong"},
                    {"Authorization": f"Basic {METRICS_TOKEN}"},
                    {"Authorization": METRICS_TOKEN}):
        response = await client.get("/metrics", headers=headers)
        assert response.status == 401, headers
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "gateway_" not in await response.text()
    samples = await scrape(client, METRICS_TOKEN)
    assert value(samples, "gateway_handoff_queue_depth", queue="general", status="waiting") == 0
    # the other routes do not ask for it
    assert (await client.post("/webhooks/telegram", json={},
                              headers={SECRET_HEADER: "forged"})).status == 403


async def test_without_a_token_metrics_are_open(
        offline: Callable[[Settings], TestClient], tmp_path: Path) -> None:
    client = offline(offline_settings(tmp_path))
    await client.start_server()
    samples = await scrape(client)
    for status in ("sent", "failed", "blocked"):  # known series exist from the start
        assert ("gateway_outbound_messages_total",
                frozenset({"channel": "telegram", "status": status}.items())) in samples
