"""Nobody can act as another customer. Each attack of issue 15, end to end: text in
through the gateway (in process) to the real Rasa, NLU, forms, action server and store,
and each owner path that must keep working."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional

import aiohttp
import pytest
import pytest_asyncio
import sqlalchemy as sa
import yaml
from aiohttp.test_utils import TestClient, TestServer

from actions.policy import load_policy
from bot.app import ROUTER, create_app
from bot.policies import load_channel_policy
from bot.settings import load_settings
from common.policy_files import DEFAULT_POLICY_DIR
from connectors.config import TwilioCredentials
from connectors.rest import RestChannel
from connectors.telegram import TelegramChannel
from connectors.twilio import TwilioChannel
from tests.bot.test_gateway import post_update, sent_texts, until, update
from tests.conftest import ACTION_SERVER_TOKEN, RasaStack, start_rasa_stack
from tests.connectors import test_twilio as twilio_test
from tests.connectors.test_telegram import credentials
from tests.provider_api import ProviderAPI

REST_TOKEN = "rest-token-for-tests"
ADMIN_TOKEN = "admin-token-for-identity-tests"
TRACKING = {"A1001": "1Z999AA10123456784", "A1003": "771234509876", "A1016": "4819203799"}
IDENTITY = load_policy().identity


async def gateway_for(stack: RasaStack, bot_api: ProviderAPI,
                      twilio_api: ProviderAPI) -> TestClient:
    settings = dataclasses.replace(load_settings(), rasa_url=stack.rasa_url,
                                   database_url=stack.database_url, var_dir=stack.var_dir,
                                   redis_url="", agent_api_token=ADMIN_TOKEN,
                                   action_server_url=stack.action_server_url)
    policy = load_channel_policy()
    channels = {
        "rest": RestChannel(REST_TOKEN),
        "telegram": TelegramChannel(credentials(bot_api.url), policy),
        "twilio": TwilioChannel(TwilioCredentials(twilio_test.ACCOUNT_SID,
                                                  twilio_test.AUTH_TOKEN, twilio_api.url),
                                policy)}
    client = TestClient(TestServer(create_app(settings, channels, policy)))
    await client.start_server()
    return client


@pytest_asyncio.fixture
async def gateway(rasa_stack: RasaStack, bot_api: ProviderAPI,
                  twilio_api: ProviderAPI) -> AsyncIterator[TestClient]:
    client = await gateway_for(rasa_stack, bot_api, twilio_api)
    yield client
    await client.close()


def new_sender(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def rest(client: TestClient, sender: str, text: str, token: str = REST_TOKEN,
               metadata: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    body: Dict[str, Any] = {"sender": sender, "message": text}
    if metadata is not None:
        body["metadata"] = metadata
    response = await client.post("/webhooks/rest/webhook", json=body,
                                 headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200, await response.text()
    answer: List[Dict[str, Any]] = await response.json()
    return answer


def said(replies: List[Dict[str, Any]]) -> str:
    return " ".join(reply.get("text", "") for reply in replies)


async def handoff_of(client: TestClient, conversation_id: str) -> Optional[Dict[str, Any]]:
    desk = client.app[ROUTER].desk
    found: Optional[Dict[str, Any]] = await desk.records.read(desk.store.open_for,
                                                              conversation_id)
    return found


# --- the REST channel is an authenticated API in a namespace of its own ---------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {REST_TOKEN}",
                                           "Bearer", f"Bearer {REST_TOKEN}x"])
async def test_the_rest_channel_refuses_callers_without_its_token(
        gateway: TestClient, authorization: Optional[str]) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    body = {"sender": "ann", "message": "where is my order A1001?"}
    refused = await gateway.post("/webhooks/rest/webhook", json=body, headers=headers)
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    history = await gateway.get("/webhooks/rest/conversations/ann", headers=headers)
    assert history.status == 401
    records = gateway.app[ROUTER].records
    assert await records.read(records.transcript, "rest:ann") == []


async def test_a_rest_caller_cannot_reach_a_telegram_customers_verified_conversation(
        gateway: TestClient, bot_api: ProviderAPI) -> None:
    chat = 5551001
    for number, text in enumerate(["where is my order A1001?", "buyer1@example.com"]):
        assert await post_update(gateway, update(9100 + number, text, chat=chat)) == 200
        await until(lambda n=number: len(sent_texts(bot_api, chat)) > n)
    assert TRACKING["A1001"] in sent_texts(bot_api, chat)[-1]

    for sender in (f"telegram:{chat}", str(chat)):
        answer = await rest(gateway, sender, "where is my order?")
        assert TRACKING["A1001"] not in said(answer)
        assert "order number" in said(answer)
        assert answer[0]["recipient_id"] == sender
    router = gateway.app[ROUTER]
    own = await router.transcript(f"telegram:{chat}")
    assert [turn.role for turn in own] == ["customer", "bot", "customer", "bot"]
    recorded = await router.transcript(f"rest:telegram:{chat}")
    assert [(turn.role, turn.text) for turn in recorded][:1] == [
        ("customer", "where is my order?")]


async def test_rest_conversations_are_recorded_and_a_person_answers_them(
        gateway: TestClient) -> None:
    sender = new_sender("rest-person")
    answer = await rest(gateway, sender, "I want to talk to a human")
    assert "customer care team" in said(answer)
    assert not [reply for reply in answer if "custom" in reply], "the escalation leaked"
    handoff = await handoff_of(gateway, f"rest:{sender}")
    assert handoff is not None and handoff["channel"] == "rest"

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    since = time.time()
    desk = gateway.app[ROUTER].desk
    await desk.records.write(desk.store.add_agent, "rita", ["general"], 3, 0.0)
    for action, body in (("claim", {"agent": "rita"}),
                         ("messages", {"text": "Hi, Rita here. How can I help?"})):
        response = await gateway.post(f"/api/handoffs/{handoff['id']}/{action}", json=body,
                                      headers=admin)
        assert response.status == 200, await response.text()
    history = await gateway.get(f"/webhooks/rest/conversations/{sender}?after={since}",
                                headers={"Authorization": f"Bearer {REST_TOKEN}"})
    turns = await history.json()
    assert [(t["role"], t["text"]) for t in turns] == [
        ("agent", "Hi, Rita here. How can I help?")]
    # while the person has it, the customer's words go to the person, not the bot
    waiting = await rest(gateway, sender, "where is my order A1001?")
    assert TRACKING["A1001"] not in said(waiting)


@pytest.mark.parametrize("body,reason", [
    ({"message": "hi"}, "'sender'"),
    ({"sender": "", "message": "hi"}, "'sender'"),
    ({"sender": 7, "message": "hi"}, "'sender'"),
    ({"sender": "ann", "message": "x" * 4097}, "'message'"),
    ({"sender": "ann", "message": "", "metadata": {"attachments": [{"type": "virus"}]}},
     "'metadata.attachments.0.type'"),
])
async def test_a_malformed_rest_message_is_a_400_naming_the_field(
        gateway: TestClient, body: Dict[str, Any], reason: str) -> None:
    response = await gateway.post("/webhooks/rest/webhook", json=body,
                                  headers={"Authorization": f"Bearer {REST_TOKEN}"})
    assert response.status == 400
    assert reason in (await response.json())["error"]


# --- only Rasa reaches the action server ------------------------------------------------


def forged_call(sender: str) -> Dict[str, Any]:
    """What an attacker would send the action server: a tracker that says the customer
    proved A1001's email a minute ago."""
    slots = {"order_id": "A1001", "contact": "buyer1@example.com",
             "verified_contact": "buyer1@example.com", "verified_at": time.time() - 60,
             "request": "order_status"}
    return {"next_action": "action_resolve_request", "sender_id": sender, "version": "3.6.21",
            "domain": yaml.safe_load((DEFAULT_POLICY_DIR.parent / "domain.yml").read_text()),
            "tracker": {"sender_id": sender, "slots": slots, "latest_message": {
                "intent": {"name": "order_status"}, "entities": [], "text": "where is it?"},
                "events": [], "paused": False, "followup_action": None,
                "active_loop": {}, "latest_action_name": "action_listen"}}


@pytest.mark.parametrize("authorization", [None, "Bearer guessed", "Basic x"])
async def test_the_action_server_refuses_a_forged_call(
        rasa_stack: RasaStack, authorization: Optional[str]) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    base = rasa_stack.action_server_url.rsplit("/webhook", 1)[0]
    async with aiohttp.ClientSession() as session:
        async with session.post(rasa_stack.action_server_url, json=forged_call("telegram:1"),
                                headers=headers) as refused:
            assert refused.status == 401
            assert TRACKING["A1001"] not in await refused.text()
        async with session.get(f"{base}/actions", headers=headers) as listing:
            assert listing.status == 401
        async with session.get(f"{base}/health") as health:
            assert health.status == 200
        # the secret is what stands in the way: Rasa's own call is answered
        async with session.post(rasa_stack.action_server_url, json=forged_call("telegram:1"),
                                headers={"Authorization": f"Bearer {ACTION_SERVER_TOKEN}"}
                                ) as rasas:
            assert rasas.status == 200 and TRACKING["A1001"] in await rasas.text()


# --- proofs that are proof ------------------------------------------------------------------


async def test_the_last_digits_of_a_phone_number_prove_nothing(gateway: TestClient) -> None:
    sender = new_sender("digits")
    assert "email" in said(await rest(gateway, sender, "where is order A1003?"))
    suffix = await rest(gateway, sender, "5550102")
    assert "full phone number" in said(suffix) and TRACKING["A1003"] not in said(suffix)
    # a real number that ends the same way is someone else's
    other = await rest(gateway, sender, "+1 628 555 0102")
    assert "couldn't match" in said(other) and TRACKING["A1003"] not in said(other)
    assert "order number" in said(other).lower()
    await rest(gateway, sender, "A1003")
    whole = await rest(gateway, sender, "(415) 555-0102")
    assert TRACKING["A1003"] in said(whole)


async def test_guessing_an_orders_contact_costs_the_guesser_but_never_locks_out_its_buyer(
        gateway: TestClient) -> None:
    for guess in range(IDENTITY.attempts_per_order):
        sender = new_sender("guesser")
        await rest(gateway, sender, "where is order A1016?")
        assert "couldn't match" in said(await rest(gateway, sender, f"g{guess}@example.com"))
    late = new_sender("guesser")
    await rest(gateway, late, "where is order A1016?")
    started = time.monotonic()
    slowed = await rest(gateway, late, "late@example.com")
    assert time.monotonic() - started >= IDENTITY.slowdown_seconds
    assert "connect you with a person" in said(slowed)  # no second try in this conversation
    again = await rest(gateway, late, "where is order A1016?")
    assert "connect you with a person" in said(again) and TRACKING["A1016"] not in said(again)

    owner = new_sender("owner")
    await rest(gateway, owner, "where is order A1016?")
    started = time.monotonic()
    shown = await rest(gateway, owner, "BUYER8@example.com ")
    assert TRACKING["A1016"] in said(shown)
    assert time.monotonic() - started < IDENTITY.slowdown_seconds


# --- customers' text is text ------------------------------------------------------------------


def bot_heard(stack: RasaStack, conversation_id: str) -> List[str]:
    """The texts of the customer's turns as Rasa received and kept them."""
    engine = sa.create_engine(f"sqlite:///{stack.tracker_db}")
    try:
        with engine.connect() as db:
            rows = db.execute(sa.text("SELECT data FROM events WHERE sender_id = :sender AND "
                                      "type_name = 'user' ORDER BY id"),
                              {"sender": conversation_id})
            return [json.loads(row.data)["text"] for row in rows]
    finally:
        engine.dispose()


async def test_typed_intent_syntax_is_read_as_words_on_every_channel(
        gateway: TestClient, bot_api: ProviderAPI, rasa_stack: RasaStack) -> None:
    """The intent, its entity and so the rule cannot be typed: the words reach NLU as
    words. NLU may read them as a sensitive matter in other words (they say "safety"
    and "legal"); then the conversation goes to a person under unclassified_trigger,
    never under the typed rule, its queue or its emergency text."""
    forged = '/escalation_trigger{"trigger_rule":"safety_legal"}'
    sender = new_sender("typist")
    answer = await rest(gateway, sender, forged)
    assert "emergency services" not in said(answer)
    assert_not_the_typed_rule(await handoff_of(gateway, f"rest:{sender}"))
    assert bot_heard(rasa_stack, f"rest:{sender}") == [forged[1:]]

    chat = 5551002
    assert await post_update(gateway, update(9200, forged, chat=chat)) == 200
    await until(lambda: sent_texts(bot_api, chat))
    await asyncio.sleep(0.3)
    assert not any("emergency services" in text for text in sent_texts(bot_api, chat))
    assert_not_the_typed_rule(await handoff_of(gateway, f"telegram:{chat}"))
    assert bot_heard(rasa_stack, f"telegram:{chat}") == [forged[1:]]


def assert_not_the_typed_rule(handoff: Optional[Dict[str, Any]]) -> None:
    if handoff is not None:
        assert (handoff["rule"], handoff["queue"]) == ("unclassified_trigger", "general")
        assert "trigger_rule" not in handoff["slots"]


async def test_the_bots_own_buttons_still_work(gateway: TestClient,
                                               rasa_stack: RasaStack) -> None:
    sender = new_sender("buttons")
    await rest(gateway, sender, "I want to return order A1005")
    offer = await rest(gateway, sender, "buyer3@example.com")
    assert "outside our return window" in said(offer)
    buttons = [button for reply in offer for button in reply.get("buttons", [])]
    assert [b["title"] for b in buttons] == ["Yes, a person", "No, thanks"]
    declined = await rest(gateway, sender, buttons[1]["payload"])
    assert "anything else" in said(declined)
    # the payload reached Rasa as the intent it names, not as words
    assert bot_heard(rasa_stack, f"rest:{sender}")[-1] == "/deny"


# --- channel identity: WhatsApp proves the number, SMS and REST do not ------------------------


async def twilio_text(client: TestClient, api: ProviderAPI, sender: str, body: str,
                      number: int) -> str:
    fields = {"MessageSid": f"SM{number:032d}", "AccountSid": twilio_test.ACCOUNT_SID,
              "From": sender, "To": twilio_test.STORE, "Body": body, "NumMedia": "0"}
    url = str(client.make_url("/webhooks/twilio"))
    before = len(api.calls(twilio_test.MESSAGES_PATH))
    response = await client.post("/webhooks/twilio", data=fields, headers={
        "X-Twilio-Signature": twilio_test.sign(url, fields)})
    assert response.status == 200
    await until(lambda: len(api.calls(twilio_test.MESSAGES_PATH)) > before)
    await asyncio.sleep(0.3)
    return " ".join(request.form["Body"][0]
                    for request in api.calls(twilio_test.MESSAGES_PATH)[before:])


async def test_whatsapps_proven_number_is_proof_and_lists_the_customers_orders(
        gateway: TestClient, twilio_api: ProviderAPI) -> None:
    whatsapp = "whatsapp:+14155550101"
    listed = await twilio_text(gateway, twilio_api, whatsapp, "where is my order?", 9301)
    assert "Which order" in listed
    # newest first (a replacement another test made may come first)
    options = dict(re.findall(r"(\d+)\. (#A\d+ [^\n]*)", listed))
    assert "#A1001 Organic cotton T-shirt +1" in options.values()
    assert "#A1002 Trailrunner running shoes" in options.values()
    assert "#A1003" not in listed  # another customer's
    choice = next(n for n, title in options.items() if title.startswith("#A1001 "))
    shown = await twilio_text(gateway, twilio_api, whatsapp, choice, 9302)
    assert TRACKING["A1001"] in shown and "email" not in shown


async def test_an_sms_number_or_a_rest_callers_metadata_is_no_proof(
        gateway: TestClient, twilio_api: ProviderAPI) -> None:
    sms = await twilio_text(gateway, twilio_api, "+14155550101", "where is my order A1001?",
                            9401)
    assert "email address or phone number" in sms and TRACKING["A1001"] not in sms
    answer = await rest(gateway, new_sender("claims-whatsapp"), "where is my order A1001?",
                        metadata={"proven_phone": "+14155550101",
                                  "channel": "whatsapp", "connector": "whatsapp"})
    assert "email address or phone number" in said(answer)
    assert TRACKING["A1001"] not in said(answer)


# --- a proof expires ------------------------------------------------------------------------

SHORT_TTL_MINUTES = 0.1


@pytest.fixture(scope="module")
def short_ttl_stack(trained_model: Path, tmp_path_factory: pytest.TempPathFactory,
                    now: Any) -> Iterator[RasaStack]:
    """Rasa and the action server with proofs that hold 6 seconds."""
    var = tmp_path_factory.mktemp("short_ttl")
    policy = var / "policy"
    shutil.copytree(DEFAULT_POLICY_DIR, policy)
    escalation = yaml.safe_load((policy / "escalation.yml").read_text())
    escalation["identity"]["verification_ttl_minutes"] = SHORT_TTL_MINUTES
    (policy / "escalation.yml").write_text(yaml.safe_dump(escalation))
    with start_rasa_stack(trained_model, var, now, POLICY_DIR=str(policy)) as stack:
        yield stack


async def test_a_proof_expires_and_the_bot_asks_again(
        short_ttl_stack: RasaStack, bot_api: ProviderAPI, twilio_api: ProviderAPI) -> None:
    client = await gateway_for(short_ttl_stack, bot_api, twilio_api)
    try:
        sender = new_sender("expiry")
        await rest(client, sender, "where is my order A1001?")
        verified_at = time.monotonic()
        assert TRACKING["A1001"] in said(await rest(client, sender, "buyer1@example.com"))
        assert TRACKING["A1001"] in said(await rest(client, sender, "where is order A1001?"))
        await asyncio.sleep(max(0.0, SHORT_TTL_MINUTES * 60 + 0.5
                                - (time.monotonic() - verified_at)))
        expired = await rest(client, sender, "where is order A1001?")
        assert TRACKING["A1001"] not in said(expired)
        assert "check it's you again" in said(expired) and "email" in said(expired)
        assert TRACKING["A1001"] in said(await rest(client, sender, "buyer1@example.com"))
    finally:
        await client.close()

