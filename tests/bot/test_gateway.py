"""The gateway end to end, in process, in front of the real Rasa and action server:
a Telegram customer's message is acknowledged at once, answered by the bot on the
Bot API, recorded in the transcript; a bot outage keeps the message and retries, then
hands the conversation to a person with an apology."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.app import ROUTER, create_app
from bot.policies import load_channel_policy
from bot.settings import load_settings
from connectors.config import ChannelPolicy, TwilioCredentials
from connectors.telegram import SECRET_HEADER, TelegramChannel
from connectors.twilio import TwilioChannel
from tests.conftest import RASA, RasaStack, background
from tests.connectors import test_twilio as twilio_test
from tests.connectors.test_telegram import API, SECRET, credentials
from tests.provider_api import ProviderAPI, RecordedRequest, free_port

CHAT = 5550001


def update(update_id: int, text: str, chat: int = CHAT) -> Dict[str, Any]:
    return {"update_id": update_id, "message": {
        "message_id": update_id, "date": int(time.time()), "text": text,
        "chat": {"id": chat, "type": "private"},
        "from": {"id": chat, "is_bot": False, "first_name": "Ann"}}}


def sent_texts(api: ProviderAPI, chat: int = CHAT) -> List[str]:
    return [r.form["text"][0] for r in api.calls(f"{API}/sendMessage")
            if r.form["chat_id"] == [str(chat)]]


async def until(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def gateway(rasa_url: str, stack: RasaStack, bot_api: ProviderAPI,
                  policy: ChannelPolicy, redis_url: str = "",
                  action_server_url: str = "", rasa_timeout_seconds: float = 10) -> TestClient:
    settings = dataclasses.replace(load_settings(), rasa_url=rasa_url,
                                   database_url=stack.database_url, var_dir=stack.var_dir,
                                   redis_url=redis_url, rasa_timeout_seconds=rasa_timeout_seconds,
                                   action_server_url=action_server_url
                                   or stack.action_server_url)
    channel = TelegramChannel(credentials(bot_api.url), policy)
    client = TestClient(TestServer(create_app(settings, {"telegram": channel}, policy)))
    await client.start_server()
    return client


async def post_update(client: TestClient, body: Dict[str, Any]) -> int:
    response = await client.post("/webhooks/telegram", json=body,
                                 headers={SECRET_HEADER: SECRET})
    return response.status


async def test_a_telegram_message_is_answered_by_the_bot_once(
        rasa_stack: RasaStack, bot_api: ProviderAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    client = await gateway(rasa_stack.rasa_url, rasa_stack, bot_api, load_channel_policy())
    router = client.app[ROUTER]
    block_lookups: List[str] = []
    look_up = router.opted_out_since

    async def counted(connector: str, address: str) -> Any:
        block_lookups.append(address)
        return await look_up(connector, address)

    monkeypatch.setattr(router, "opted_out_since", counted)
    try:
        started = time.monotonic()
        assert await post_update(client, update(1, "where is my order")) == 200
        assert time.monotonic() - started < 1.0, "the webhook waited for the bot"
        assert await post_update(client, update(1, "where is my order")) == 200  # retry
        await until(lambda: sent_texts(bot_api))
        await asyncio.sleep(0.5)
        replies = sent_texts(bot_api)
        assert len(replies) == 1 and "order number" in replies[0].lower()
        assert block_lookups == [], "the answer to a message looked up whether it may send"
        turns = await router.transcript(f"telegram:{CHAT}")
        assert [(t.role, t.text) for t in turns] == [
            ("customer", "where is my order"), ("bot", replies[0])]
        deliveries = await asyncio.to_thread(router.records.deliveries)
        assert [(d["status"], d["connector"]) for d in deliveries
                if d["conversation_id"] == f"telegram:{CHAT}"] == [("sent", "telegram")]
    finally:
        await client.close()


@pytest_asyncio.fixture
async def flaky_rasa(rasa_stack: RasaStack) -> AsyncIterator[ProviderAPI]:
    """Rasa behind a proxy that answers 503 twice (a restart), then passes through."""
    proxy = await ProviderAPI().start()

    async def forward(request: RecordedRequest) -> web.Response:
        async with aiohttp.ClientSession() as session, session.post(
                f"{rasa_stack.rasa_url}/webhooks/rest/webhook", data=request.body,
                headers={"Content-Type": "application/json"}) as answer:
            return web.json_response(await answer.json())

    proxy.answer("POST", "/webhooks/rest/webhook", forward)
    proxy.fail_next("POST", "/webhooks/rest/webhook",
                    web.Response(status=503), web.Response(status=503))
    yield proxy
    await proxy.stop()


async def test_a_message_waits_while_the_bot_restarts_and_is_answered(
        rasa_stack: RasaStack, bot_api: ProviderAPI, flaky_rasa: ProviderAPI) -> None:
    client = await gateway(flaky_rasa.url, rasa_stack, bot_api, load_channel_policy())
    try:
        assert await post_update(client, update(10, "hello", chat=CHAT + 1)) == 200
        await until(lambda: sent_texts(bot_api, CHAT + 1))
        assert len(flaky_rasa.calls("/webhooks/rest/webhook")) == 3
        policy = client.app[ROUTER].policy
        assert sent_texts(bot_api, CHAT + 1)[0] != policy.texts.bot_unavailable
        desk = client.app[ROUTER].desk
        assert await desk.records.read(desk.store.open_for, f"telegram:{CHAT + 1}") is None
    finally:
        await client.close()


async def test_when_the_bot_stays_down_the_customer_is_told_and_handed_to_a_person(
        rasa_stack: RasaStack, bot_api: ProviderAPI) -> None:
    policy = load_channel_policy()
    policy = policy.copy(update={"bot_retry_seconds": 1.0})
    client = await gateway(f"http://127.0.0.1:{free_port()}", rasa_stack, bot_api, policy)
    chat = CHAT + 2
    try:
        assert await post_update(client, update(20, "my parcel is lost", chat=chat)) == 200
        assert await post_update(client, update(21, "hello?", chat=chat)) == 200
        await until(lambda: len(sent_texts(bot_api, chat)) == 2)
        apology, queued = sent_texts(bot_api, chat)
        assert apology == policy.texts.bot_unavailable
        # other tests' handoffs may wait in the same queue
        assert re.search(r"number \d+ in the queue|away right now", queued), queued
        desk = client.app[ROUTER].desk
        await until(lambda: len(desk.records.transcript(f"telegram:{chat}")) == 4)
        [handoff] = [h for h in await desk.list(desk.admin, "waiting", None)
                     if h["conversation_id"] == f"telegram:{chat}"]
        assert (handoff["reason"]["code"], handoff["queue"]) == ("bot_unavailable", "general")
        assert [(t["role"], t["text"]) for t in handoff["transcript"]][:2] == [
            ("customer", "my parcel is lost"), ("customer", "hello?")]
        await asyncio.sleep(0.3)
        assert len(sent_texts(bot_api, chat)) == 2, "the second message was not for the bot"
    finally:
        await client.close()


async def test_a_turn_that_may_have_run_is_not_asked_again_but_handed_to_a_person(
        rasa_stack: RasaStack, bot_api: ProviderAPI) -> None:
    """Rasa took the turn and did not answer in time: it may have run (and written), so
    the gateway does not ask again, however long bot_retry_seconds is."""
    stuck_rasa = await ProviderAPI().start()

    async def hangs(request: RecordedRequest) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response([])

    stuck_rasa.answer("POST", "/webhooks/rest/webhook", hangs)
    client = await gateway(stuck_rasa.url, rasa_stack, bot_api, load_channel_policy(),
                           rasa_timeout_seconds=0.3)
    chat = CHAT + 3
    try:
        assert await post_update(client, update(30, "yes, cancel it", chat=chat)) == 200
        await until(lambda: len(sent_texts(bot_api, chat)) == 2)
        assert sent_texts(bot_api, chat)[0] == client.app[ROUTER].policy.texts.bot_unavailable
        assert len(stuck_rasa.calls("/webhooks/rest/webhook")) == 1
        desk = client.app[ROUTER].desk
        handoff = await desk.records.read(desk.store.open_for, f"telegram:{chat}")
        assert handoff is not None and "may have run" in str(handoff["summary"])
    finally:
        await client.close()
        await stuck_rasa.stop()


async def test_with_the_action_server_down_the_customer_is_told_and_handed_to_a_person(
        rasa_stack: RasaStack, trained_model: Path, bot_api: ProviderAPI,
        tmp_path: Path) -> None:
    """A real Rasa whose action server is down answers a message that needs an action
    with 503 (the turn failed and is not kept); the gateway asks again and, after its
    retries, apologises and opens a handoff."""
    dead_actions = f"http://127.0.0.1:{free_port()}/webhook"
    port = free_port()
    env = rasa_stack.env(ACTION_SERVER_URL=dead_actions,
                         RASA_TRACKER_DB=str(tmp_path / "tracker.db"))
    with background([str(RASA), "run", "--model", str(trained_model), "--port", str(port),
                     "--endpoints", "endpoints.yml", "--credentials", "credentials.yml"],
                    env, tmp_path / "rasa.log", f"http://127.0.0.1:{port}/"):
        policy = load_channel_policy().copy(update={"bot_retry_seconds": 1.0})
        client = await gateway(f"http://127.0.0.1:{port}", rasa_stack, bot_api, policy,
                               action_server_url=dead_actions)
        chat = CHAT + 4007 + int(time.time()) % 1000
        try:
            assert await post_update(client, update(chat * 10, "where is my order A1001?",
                                                    chat)) == 200
            await until(lambda: len(sent_texts(bot_api, chat)) == 2)
            apology, queued = sent_texts(bot_api, chat)
            assert apology == policy.texts.bot_unavailable
            desk = client.app[ROUTER].desk
            handoff = await desk.records.read(desk.store.open_for, f"telegram:{chat}")
            assert handoff is not None and handoff["reason_code"] == "bot_unavailable"
        finally:
            await client.close()


async def test_a_sender_over_the_inbound_limit_is_recorded_not_answered(
        rasa_stack: RasaStack, bot_api: ProviderAPI) -> None:
    """Past `inbound_limit.messages`, a sender's messages are kept in the transcript but
    not passed to the bot; the sender hears once why; others are not affected."""
    base = load_channel_policy()
    policy = base.copy(update={"inbound_limit": base.inbound_limit.copy(
        update={"messages": 3, "per_seconds": 3600})})
    client = await gateway(rasa_stack.rasa_url, rasa_stack, bot_api, policy)
    flooder, other = CHAT + 7 + int(time.time()) % 1000, CHAT + 2007 + int(time.time()) % 1000
    try:
        for number in range(7):
            assert await post_update(client, update(flooder * 100 + number, "thanks",
                                                    flooder)) == 200
        assert await post_update(client, update(other * 100, "thanks", other)) == 200
        router = client.server.app[ROUTER]
        await until(lambda: len(sent_texts(bot_api, other)) == 1)
        await until(lambda: len(sent_texts(bot_api, flooder)) == 4)
        await asyncio.sleep(0.5)  # time for a wrong fifth send to show
        transcript = await router.transcript(f"telegram:{flooder}")
        replies = sent_texts(bot_api, flooder)
        assert len(replies) == 4, replies
        assert replies[3] == policy.texts.too_many_messages
        assert len(set(replies[:3])) == 1 and "welcome" in replies[0].lower()
        assert [t.role for t in transcript].count("customer") == 7
    finally:
        await client.close()


async def test_two_gateways_on_redis_answer_one_conversation_in_order(
        rasa_stack: RasaStack, bot_api: ProviderAPI, redis_url: str) -> None:
    """The turns of one conversation arrive alternately at two gateway processes that
    share Redis; each is processed once, in order, so the bot's answers make sense."""
    policy = load_channel_policy()
    gateways = [await gateway(rasa_stack.rasa_url, rasa_stack, bot_api, policy,
                              redis_url=redis_url) for _ in range(2)]
    chat = CHAT + 3 + int(time.time()) % 1000
    turns = ["where is my order A1001?", "buyer1@example.com", "thanks"]
    try:
        for number, text in enumerate(turns):
            update_id = chat * 10 + number
            assert await post_update(gateways[number % 2], update(update_id, text, chat)) == 200
            assert await post_update(gateways[(number + 1) % 2],
                                     update(update_id, text, chat)) == 200  # provider retry
        await until(lambda: len(sent_texts(bot_api, chat)) >= 3)
        await asyncio.sleep(0.5)
        replies = sent_texts(bot_api, chat)
        assert len(replies) == 3, replies
        assert "email address or phone number" in replies[0]
        assert "Order A1001" in replies[1]
        assert "welcome" in replies[2].lower()
    finally:
        for client in gateways:
            await client.close()


async def test_an_sms_customer_picks_a_numbered_option_and_the_bot_acts_on_it(
        rasa_stack: RasaStack, twilio_api: ProviderAPI) -> None:
    """Buttons become numbered options on SMS; "1" is the first button's payload."""
    policy = load_channel_policy()
    channel = TwilioChannel(TwilioCredentials(twilio_test.ACCOUNT_SID, twilio_test.AUTH_TOKEN,
                                              twilio_api.url), policy)
    settings = dataclasses.replace(load_settings(), rasa_url=rasa_stack.rasa_url,
                                   database_url=rasa_stack.database_url,
                                   var_dir=rasa_stack.var_dir, redis_url="")
    client = TestClient(TestServer(create_app(settings, {"twilio": channel}, policy)))
    await client.start_server()
    customer = "+14155550103"

    def bodies() -> List[str]:
        return [r.form["Body"][0] for r in twilio_api.calls(twilio_test.MESSAGES_PATH)]

    async def text(number: int, body: str) -> None:
        fields = {"MessageSid": f"SM{number:032d}", "AccountSid": twilio_test.ACCOUNT_SID,
                  "From": customer, "To": twilio_test.STORE, "Body": body, "NumMedia": "0"}
        url = str(client.make_url("/webhooks/twilio"))
        response = await client.post("/webhooks/twilio", data=fields, headers={
            "X-Twilio-Signature": twilio_test.sign(url, fields)})
        assert response.status == 200
        count = len(bodies())
        await until(lambda: len(bodies()) > count)
        await asyncio.sleep(0.3)

    try:
        await text(1, "please cancel my order A1004")
        await text(2, "buyer3@example.com")
        assert bodies()[-1].endswith("Reply with a number:\n1. Yes, cancel it\n2. No, keep it")
        await text(3, "1")
        assert "is cancelled" in bodies()[-1]
        assert all(r.form["From"] == [twilio_test.STORE]
                   for r in twilio_api.calls(twilio_test.MESSAGES_PATH))
    finally:
        await client.close()


async def test_channels_without_credentials_are_off_and_say_so_and_the_gateway_starts_offline(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
    """Telegram configured against an API that cannot be reached, the rest missing."""
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "WHATSAPP_APP_SECRET",
                 "WHATSAPP_VERIFY_TOKEN", "WHATSAPP_ACCESS_TOKEN", "WHATSAPP_PHONE_NUMBER_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "1:unreachable")
    monkeypatch.setenv("TELEGRAM_SECRET_TOKEN", "s3cret")
    monkeypatch.setenv("TELEGRAM_API_BASE_URL", f"http://127.0.0.1:{free_port()}")
    settings = dataclasses.replace(load_settings(), var_dir=tmp_path, database_url="",
                                   redis_url="",
                                   rasa_url=f"http://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.INFO, logger="bot.services"):
        app = create_app(settings)
    assert "channel telegram: on" in caplog.text and "channel webchat: on" in caplog.text
    assert "channel twilio: off (set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)" in caplog.text
    assert "channel whatsapp: off (set WHATSAPP_APP_SECRET" in caplog.text
    async with TestClient(TestServer(app)) as client:
        health = await client.get("/health")
        body = await health.json()
        assert health.status == 503 and body["rasa"] is False
        assert body["channels"] == ["rest", "telegram", "webchat"]
        assert (await client.post("/webhooks/twilio", data={"Body": "hi"})).status == 404
        assert (await client.post("/webhooks/telegram", json={},
                                  headers={SECRET_HEADER: "wrong"})).status == 403
