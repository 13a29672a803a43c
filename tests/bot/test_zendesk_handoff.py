"""Handoff into Zendesk through Sunshine Conversations' switchboard, end to end: the
gateway in front of the real Rasa and action server with HANDOFF_TARGET=zendesk,
against a local server that answers as SunCo's API v2 and sends its v2 webhooks
(tests/helpdesk_api/zendesk.py).

A Telegram customer who asks for a person becomes a SunCo user under an id of ours and
a conversation with the transcript (theirs as user messages, the bot's as business)
and the handoff, passed to the Agent Workspace with first_message_id, tags and the
handoff in its metadata, so the ticket holds the whole transcript. What they write next
follows as user messages and the bot stays silent; an agent's reply reaches them once
(SunCo's deliveries again send nothing); the ticket solved hands them back to the bot
with the CSAT question, reopened to people again. Wrong or missing secrets and
malformed bodies are refused. When SunCo is down, unreachable or throttling, the
handoff is kept, the customer told, and SunCo given it later. WhatsApp and SMS
customers get the agents' replies on their own channel."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import AsyncIterator, Dict, Optional

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from bot.handoff.desk import Place
from bot.handoff.store import Handoff
from bot.policies import load_channel_policy
from bot.settings import Settings, ZendeskSettings, load_settings
from connectors.channel import Channel
from connectors.config import TwilioCredentials
from connectors.telegram import TelegramChannel
from connectors.twilio import TwilioChannel
from connectors.whatsapp import WhatsAppChannel
from tests.bot.conftest import ADMIN_TOKEN
from tests.bot.helpdesk_support import (
    RETRY_SECONDS,
    ask_for_a_person,
    audit,
    desk_of,
    open_handoff,
    policy_copy,
    serve,
    status_of,
)
from tests.bot.test_agent_console import callback
from tests.bot.test_gateway import post_update, sent_texts, until, update
from tests.conftest import RasaStack
from tests.connectors import test_twilio as twilio_test
from tests.connectors import test_whatsapp as whatsapp_test
from tests.connectors.test_telegram import credentials
from tests.helpdesk_api import zendesk as zd
from tests.helpdesk_api.zendesk import Conversation, SunshineServer
from tests.provider_api import ProviderAPI, free_port

LOGGER = "bot.handoff.zendesk"


@pytest.fixture
def policy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return policy_copy(tmp_path, monkeypatch, "zendesk",
                       ticket_fields={"order": 360000000001, "handoff": 360000000002})


@pytest_asyncio.fixture
async def sunco() -> AsyncIterator[SunshineServer]:
    server = await SunshineServer().start()
    yield server
    await server.stop()


def zendesk_settings(rasa_url: str, stack: RasaStack, server: SunshineServer,
                     key_secret: str = zd.KEY_SECRET) -> Settings:
    return dataclasses.replace(
        load_settings(), rasa_url=rasa_url, database_url=stack.database_url,
        var_dir=stack.var_dir, redis_url="", handoff_target="zendesk",
        agent_api_token=ADMIN_TOKEN,
        zendesk=ZendeskSettings(zd.APP_ID, zd.KEY_ID, key_secret, zd.SECRET, server.url))


@pytest_asyncio.fixture
async def client(rasa_stack: RasaStack, bot_api: ProviderAPI, sunco: SunshineServer,
                 policy_dir: Path) -> AsyncIterator[TestClient]:
    telegram = TelegramChannel(credentials(bot_api.url), load_channel_policy())
    client = await serve(zendesk_settings(rasa_stack.rasa_url, rasa_stack, sunco),
                         {"telegram": telegram}, sunco)
    yield client
    await client.close()


async def in_zendesk(server: SunshineServer, handoff: Handoff) -> Conversation:
    """The handoff's conversation once control passed to the Agent Workspace."""
    def ready() -> Optional[Conversation]:
        found = server.conversation_for(f"H-{handoff['id']}")
        return found if found and found.ticket else None
    await until(lambda: ready() is not None)
    conversation = ready()
    assert conversation is not None
    return conversation


async def quiet(server: SunshineServer) -> None:
    """Let the webhooks SunCo sent (for the gateway's own messages) be handled."""
    await asyncio.sleep(0.3)
    await until(lambda: not server._background)
    await asyncio.sleep(0.3)


async def test_a_telegram_customer_is_worked_in_zendesk_and_handed_back_to_the_bot(
        client: TestClient, bot_api: ProviderAPI, sunco: SunshineServer) -> None:
    chat = 9700001
    handoff = await ask_for_a_person(client, bot_api, chat, 97000)
    conversation = await in_zendesk(sunco, handoff)
    user = sunco.users[conversation.user_id]
    assert user["externalId"].startswith("gw-") and str(chat) not in json.dumps(user)
    assert user["profile"]["givenName"] == "Ann"
    assert conversation.fields["type"] == "personal"
    assert conversation.active == zd.AGENT_WORKSPACE

    # the transcript: the customer's turns as theirs, the bot's as the business's
    messages = conversation.messages
    assert (messages[0]["author"]["type"], messages[0]["content"]["text"]) == (
        "user", "I want to talk to a human")
    assert messages[0]["author"]["userId"] == user["id"]
    assert messages[1]["author"] == {"type": "business", "displayName": "Assistant"}
    packet = messages[-1]["content"]["text"]
    assert "Reason: customer_request (rule customer_request), tier 1, queue customer care" \
        in packet and "identity verified: no" in packet

    # the ticket has it all from the first message, with the handoff in its fields
    ticket = conversation.ticket
    assert ticket is not None and ticket.messages == messages
    metadata = ticket.metadata
    assert metadata["first_message_id"] == messages[0]["id"]
    assert ticket.tags == ["assistant_handoff", "handoff_queue_general", "handoff_tier_1"]
    assert metadata["dataCapture.systemField.requester.name"] == "Ann"
    assert metadata["dataCapture.ticketField.360000000002"] == f"H-{handoff['id']}"
    assert metadata["dataCapture.ticketField.360000000001"] == ""  # no order yet
    assert (metadata["handoff_reason"], metadata["handoff_tier"], metadata["handoff_queue"],
            metadata["handoff_rule"]) == ("customer_request", 1, "general",
                                          "customer_request")
    passes = [c for c in sunco.calls if c[1].endswith("/passControl")]
    assert len(passes) == 1 and passes[0][2] == 200
    await quiet(sunco)
    assert len(sent_texts(bot_api, chat)) == 2, \
        "the gateway's own messages (webhooked back) reached the customer"

    # what the customer writes goes to the conversation as theirs, not to the bot
    assert await post_update(client, update(97001, "where is <b>my</b> order",
                                            chat=chat)) == 200
    await until(lambda: conversation.texts("user")[-1:] == ["where is <b>my</b> order"])
    assert ticket.messages[-1]["content"]["text"] == "where is <b>my</b> order"
    await quiet(sunco)
    assert len(sent_texts(bot_api, chat)) == 2

    await sunco.agent_reply(conversation.id, "Hi Ann, Maya here. Checking now.")
    await until(lambda: len(sent_texts(bot_api, chat)) == 3)
    assert sent_texts(bot_api, chat)[2:] == ["Hi Ann, Maya here. Checking now."]
    record = desk_of(client).store.get(handoff["id"])
    assert record is not None
    assert (record["status"], record["agent"]) == ("active", "zendesk")
    assert record["first_response_at"] is not None
    # SunCo delivering the same webhook again sends nothing twice
    assert await sunco.redeliver() == 200
    assert await sunco.redeliver() == 200
    await quiet(sunco)
    assert sent_texts(bot_api, chat)[2:] == ["Hi Ann, Maya here. Checking now."]

    assert await sunco.solve(conversation.id) == 200
    await until(lambda: "rate" in sent_texts(bot_api, chat)[-1])
    assert "back with the assistant" in sent_texts(bot_api, chat)[-2]
    record = desk_of(client).store.get(handoff["id"])
    assert record is not None and (record["status"], record["disposition"]) == (
        "resolved", "solved")
    assert await sunco.redeliver() == 200  # solved again: nothing more
    await quiet(sunco)
    assert len([t for t in sent_texts(bot_api, chat) if "rate" in t]) == 1

    # reopened: with people again, the bot silent
    assert await sunco.reopen(conversation.id) == 200
    await until(lambda: status_of(client, handoff["id"]) == "active")
    sent = len(sent_texts(bot_api, chat))
    assert await post_update(client, update(97002, "one more thing", chat=chat)) == 200
    await until(lambda: conversation.texts("user")[-1:] == ["one more thing"])
    await quiet(sunco)
    assert len(sent_texts(bot_api, chat)) == sent

    assert await sunco.solve(conversation.id) == 200
    await until(lambda: len(sent_texts(bot_api, chat)) > sent + 1)
    assert "rate" in sent_texts(bot_api, chat)[-1]
    assert await post_update(client, callback(97003, chat, "csat:5")) == 200
    await until(lambda: sent_texts(bot_api, chat)[-1] == "Thank you for telling us.")
    assert desk_of(client).store.get(handoff["id"])["csat_score"] == 5  # type: ignore[index]
    assert audit(client, handoff["id"]) == [
        ("bot", "open"), ("zendesk", "claim"), ("zendesk", "reply"), ("zendesk", "resolve"),
        ("zendesk", "reopen"), ("zendesk", "resolve")]

    # back with the bot
    sent = len(sent_texts(bot_api, chat))
    assert await post_update(client, update(97004, "where is my order", chat=chat)) == 200
    await until(lambda: len(sent_texts(bot_api, chat)) > sent)
    assert "order number" in sent_texts(bot_api, chat)[-1].lower()

    # asking again later: a new conversation of the same SunCo user
    again = await ask_for_a_person(client, bot_api, chat, 97005)
    second = await in_zendesk(sunco, again)
    assert second.id != conversation.id and second.user_id == conversation.user_id
    assert len(sunco.users) == 1


async def test_a_long_conversation_reaches_the_ticket_whole(
        client: TestClient, bot_api: ProviderAPI, sunco: SunshineServer) -> None:
    """Zendesk puts only the last 10 messages in the ticket unless passControl names
    the first one: a conversation of more than 10 turns arrives whole."""
    chat = 9700009
    for number, text in enumerate(("hello", "what are your delivery options",
                                   "how long does delivery take", "what payment methods",
                                   "thanks", "hi again"), 97600):
        assert await post_update(client, update(number, text, chat=chat)) == 200
        turns = 2 * (number - 97599)
        await until(lambda: len(desk_of(client).records.transcript(f"telegram:{chat}"))
                    >= turns)  # noqa: B023 - awaited within the iteration
    handoff = await ask_for_a_person(client, bot_api, chat, 97610)
    conversation = await in_zendesk(sunco, handoff)
    ticket = conversation.ticket
    assert ticket is not None and len(conversation.messages) > zd.DEFAULT_TICKET_MESSAGES
    assert ticket.texts()[0] == ("user", "hello")
    assert ticket.messages == conversation.messages


async def test_a_monitors_handoff_reaches_zendesk_with_the_order_and_the_tiers_tag(
        client: TestClient, sunco: SunshineServer) -> None:
    place = Place("telegram", "telegram", "9700008")
    handoff = await desk_of(client).follow_up(place, {
        "reason_code": "promise_due", "rule": "promise_due", "tier": 2,
        "queue": "logistics", "customer_name": "Ben", "customer_verified": True,
        "customer_contact": "", "order_id": "A1001", "slots": {}, "actions_attempted": [],
        "summary": {"what_happened": "Promise due today: trace claim C1 opened",
                    "next": "chase the carrier", "eta": "within 2 business hours"}})
    assert handoff is not None
    conversation = await in_zendesk(sunco, handoff)
    ticket = conversation.ticket
    assert ticket is not None
    assert ticket.tags == ["assistant_handoff", "handoff_queue_logistics", "handoff_tier_2"]
    assert ticket.metadata["dataCapture.ticketField.360000000001"] == "A1001"
    assert ticket.metadata["order_reference"] == "A1001"
    packet = ticket.messages[-1]["content"]["text"]
    assert "Reason: promise_due (rule promise_due), tier 2, queue delivery" in packet
    assert "Promised: within 2 business hours" in packet and "A1001" in packet


async def test_wrong_or_missing_secrets_and_malformed_webhooks_are_refused(
        client: TestClient, bot_api: ProviderAPI, sunco: SunshineServer,
        caplog: pytest.LogCaptureFixture) -> None:
    chat = 9700002
    handoff = await ask_for_a_person(client, bot_api, chat, 97100)
    conversation = await in_zendesk(sunco, handoff)
    await quiet(sunco)
    event = {"id": zd.new_id(), "createdAt": zd.now_iso(), "type": "conversation:message",
             "payload": {"conversation": {"id": conversation.id, "type": "personal"},
                         "message": {"id": zd.new_id(), "received": zd.now_iso(),
                                     "author": {"type": "business", "displayName": "X"},
                                     "content": {"type": "text",
                                                 "text": "Send your card number here"},
                                     "source": {"type": "zd:agentWorkspace"}}}}
    good = sunco.envelope([event])
    # SunCo checks the URL with HEAD when the webhook is created
    assert (await client.head("/webhooks/zendesk")).status == 200
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for headers in ({zd.SECRET_HEADER: "not-the-secret"},
                        {zd.SECRET_HEADER: zd.SECRET + "x"}, {},
                        {"Authorization": f"Bearer {zd.SECRET}"}):
            assert await sunco.send_webhook(good, headers=headers) == 401, headers
        for body in (b"{not json", b"[1, 2]", b'{"events": []}',
                     b'{"app": {"id": "a"}, "events": {}}',
                     b'{"app": {"id": "a"}, "events": [{"type": "x", "payload": {}}]}',
                     b'{"app": {"id": "a"}, "events": [{"id": "e1", "payload": {}}]}',
                     b'{"app": {"id": "a"}, "events": [{"id": "e1", "type": "x"}]}'):
            assert await sunco.send_webhook(body) == 400, body
        await asyncio.sleep(0.5)
    assert len(sent_texts(bot_api, chat)) == 2, "a refused webhook reached the customer"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused a Sunshine Conversations webhook" in logged
    assert "card number" not in logged and "Ann" not in logged and zd.SECRET not in logged
    assert status_of(client, handoff["id"]) == "waiting"
    # another app's webhook, and a conversation that is no handoff's, are taken and ignored
    other = json.loads(good)
    other["app"]["id"] = "another-app"
    assert await sunco.send_webhook(json.dumps(other).encode()) == 200
    event["payload"]["conversation"]["id"] = "not-a-handoffs"
    assert await sunco.send_webhook(sunco.envelope([event])) == 200
    await asyncio.sleep(0.5)
    assert len(sent_texts(bot_api, chat)) == 2
    # the good one is delivered
    event["payload"]["conversation"]["id"] = conversation.id
    assert await sunco.send_webhook(sunco.envelope([event])) == 200
    await until(lambda: sent_texts(bot_api, chat)[-1] == "Send your card number here")


async def test_when_sunco_is_down_the_handoff_is_kept_and_given_to_it_once_it_is_back(
        client: TestClient, bot_api: ProviderAPI, sunco: SunshineServer,
        caplog: pytest.LogCaptureFixture) -> None:
    chat = 9700003
    sunco.down()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    handoff = await ask_for_a_person(client, bot_api, chat, 97200)
    await until(lambda: "did not take the handoff (POST users: HTTP 503)" in caplog.text)
    told = sent_texts(bot_api, chat)[-1]
    assert "queue" in told and f"H-{handoff['id']}" in told  # a person will pick it up
    assert handoff["status"] == "waiting" and not sunco.conversations
    await asyncio.sleep(2 * RETRY_SECONDS)
    assert not sunco.conversations
    assert await post_update(client, update(97201, "my parcel is damaged", chat=chat)) == 200
    await until(lambda: len(desk_of(client).records.transcript(f"telegram:{chat}")) == 4)

    await sunco.unreachable()
    await until(lambda: "ClientConnectorError" in caplog.text)
    await sunco.reachable()
    sunco.down(False)
    conversation = await in_zendesk(sunco, handoff)
    assert "my parcel is damaged" in conversation.texts("user")
    ticket = conversation.ticket
    assert ticket is not None and ticket.metadata["first_message_id"] == \
        conversation.messages[0]["id"]
    await sunco.agent_reply(conversation.id, "Sorry about that, Ann.")
    await until(lambda: sent_texts(bot_api, chat)[-1] == "Sorry about that, Ann.")

    # down again: what the customer writes is held, in order, until SunCo is back
    sunco.down()
    for number, text in enumerate(("the box was crushed", "and wet"), 97202):
        assert await post_update(client, update(number, text, chat=chat)) == 200
    await until(lambda: "a customer message is held" in caplog.text)
    await asyncio.sleep(2 * RETRY_SECONDS)
    sunco.down(False)
    await until(lambda: conversation.texts("user")[-2:] == ["the box was crushed", "and wet"])
    assert len([c for c in sunco.conversations.values()
                if c.fields["metadata"]["handoff_reference"] == f"H-{handoff['id']}"]) == 1


async def test_failing_midway_posts_the_transcript_once_and_throttling_is_waited_for(
        client: TestClient, bot_api: ProviderAPI, sunco: SunshineServer,
        caplog: pytest.LogCaptureFixture) -> None:
    """SunCo throttles the second message (the conversation exists, the transcript
    partly): after Retry-After the rest follows, each message once."""
    chat = 9700004
    caplog.set_level(logging.WARNING, logger=LOGGER)
    sunco.throttle(retry_after=2, times=1, only="/messages", after=1)
    handoff = await ask_for_a_person(client, bot_api, chat, 97300)
    await until(lambda: "POST messages: HTTP 429 (too_many_requests)" in caplog.text)
    throttled_at = time.monotonic()
    assert "offered again in 2 s" in caplog.text
    conversation = await in_zendesk(sunco, handoff)
    assert time.monotonic() - throttled_at >= 1.5, "Retry-After was not waited for"
    texts = [m["content"]["text"] for m in conversation.messages]
    assert texts.count("I want to talk to a human") == 1 and len(set(texts)) == len(texts)
    assert len([t for t in texts if t.startswith("Handoff H-")]) == 1
    ticket = conversation.ticket
    assert ticket is not None and ticket.messages == conversation.messages
    assert len(sunco.users) == 1 and len(sunco.conversations) == 1


async def test_two_gateways_on_redis_share_the_handoff_and_make_one_conversation(
        rasa_stack: RasaStack, bot_api: ProviderAPI, sunco: SunshineServer,
        policy_dir: Path, redis_url: str) -> None:
    """SunCo is down when the customer asks; both gateways offer the handoff again, and
    once it is back it gets one user, one conversation, one transcript. Its webhooks
    reach the other gateway, which sends the agent's reply and hands the customer back."""
    settings = dataclasses.replace(zendesk_settings(rasa_stack.rasa_url, rasa_stack, sunco),
                                   redis_url=redis_url)
    first, second = [await serve(settings, {"telegram": TelegramChannel(
        credentials(bot_api.url), load_channel_policy())}, sunco) for _ in range(2)]
    # Redis keeps Telegram's update ids between runs: one of ours not used before
    number = int(time.time()) % 300  # update ids 97700 to 97999
    chat = 9700100 + number
    try:
        sunco.down()
        handoff = await ask_for_a_person(first, bot_api, chat, 97700 + number)
        await asyncio.sleep(3 * RETRY_SECONDS)
        sunco.down(False)
        conversation = await in_zendesk(sunco, handoff)
        await asyncio.sleep(3 * RETRY_SECONDS)
        assert len(sunco.conversations) == 1 and len(sunco.users) == 1
        assert len(conversation.tickets) == 1
        texts = [m["content"]["text"] for m in conversation.messages]
        assert len(set(texts)) == len(texts)
        assert sunco.webhook_url.startswith(str(second.make_url("/")))
        await sunco.agent_reply(conversation.id, "Hello from Zendesk")
        await until(lambda: sent_texts(bot_api, chat)[-1] == "Hello from Zendesk")
        assert await sunco.solve(conversation.id) == 200
        await until(lambda: "rate" in sent_texts(bot_api, chat)[-1])
    finally:
        await first.close()
        await second.close()


async def test_a_wrong_key_keeps_the_handoff_and_says_why(
        rasa_stack: RasaStack, bot_api: ProviderAPI, sunco: SunshineServer,
        policy_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    telegram = TelegramChannel(credentials(bot_api.url), load_channel_policy())
    revoked = zendesk_settings(rasa_stack.rasa_url, rasa_stack, sunco, "revoked-secret")
    client = await serve(revoked, {"telegram": telegram}, sunco)
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            handoff = await ask_for_a_person(client, bot_api, 9700005, 97400)
            await until(lambda: "HTTP 401 (unauthorized)" in caplog.text)
        assert handoff["status"] == "waiting" and not sunco.users
        assert "human" not in caplog.text and "Ann" not in caplog.text
    finally:
        await client.close()


async def test_erasing_a_customer_forgets_their_zendesk_links_and_held_messages(
        client: TestClient, bot_api: ProviderAPI, sunco: SunshineServer,
        caplog: pytest.LogCaptureFixture) -> None:
    chat = 9700007
    handoff = await ask_for_a_person(client, bot_api, chat, 97500)
    conversation = await in_zendesk(sunco, handoff)
    sunco.down()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert await post_update(client, update(97501, "my name is Ann Lee", chat=chat)) == 200
    await until(lambda: "a customer message is held" in caplog.text)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    contact = {"contact": f"telegram:{chat}"}
    held = await (await client.get("/api/privacy/export", params=contact,
                                   headers=admin)).json()
    assert [row["sunco_conversation_id"] for row in held["zendesk_conversations"]] == [
        conversation.id]
    assert [row["content"] for row in held["zendesk_held"]] == ["my name is Ann Lee"]
    erased = await client.post("/api/privacy/erase", json=contact, headers=admin)
    removed = (await erased.json())["removed"]
    assert (removed["zendesk_conversations"], removed["zendesk_held"]) == (1, 1)
    sunco.down(False)
    await asyncio.sleep(2 * RETRY_SECONDS)
    assert "my name is Ann Lee" not in conversation.texts("user"), \
        "an erased customer's message went to Zendesk"


async def test_whatsapp_and_sms_customers_get_agents_replies_on_their_channel(
        rasa_stack: RasaStack, sunco: SunshineServer, graph: ProviderAPI,
        twilio_api: ProviderAPI, policy_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The bot is down, so both are handed to a person (reason bot_unavailable); their
    phone numbers never reach SunCo."""
    policy = load_channel_policy()
    channels: Dict[str, Channel] = {
        "whatsapp": WhatsAppChannel(whatsapp_test.credentials(graph.url), policy),
        "twilio": TwilioChannel(TwilioCredentials(twilio_test.ACCOUNT_SID,
                                                  twilio_test.AUTH_TOKEN, twilio_api.url),
                                policy)}
    settings = zendesk_settings(f"http://127.0.0.1:{free_port()}", rasa_stack, sunco)
    client = await serve(settings, channels, sunco, bot_retry_seconds=0.2)
    phone, sms = "16505550197", "+14155550197"
    caplog.set_level(logging.DEBUG, logger="bot")
    try:
        message = whatsapp_test.inbound("text", {"body": "my parcel is late"},
                                        wamid=f"wamid.ZD{time.time_ns()}")
        message["from"] = phone
        assert await whatsapp_test.post_signed(client, whatsapp_test.notification([message])) \
            == 200
        fields = twilio_test.inbound(Body="where is my refund", From=sms,
                                     MessageSid=f"SM{time.time_ns():032d}"[:34])
        url = str(client.make_url("/webhooks/twilio"))
        response = await client.post("/webhooks/twilio", data=fields, headers={
            "X-Twilio-Signature": twilio_test.sign(url, fields)})
        assert response.status == 200
        for conversation_id, reply in ((f"whatsapp:{phone}", "WhatsApp reply from Maya"),
                                       (f"twilio:{sms}", "SMS reply from Maya")):
            handoff = await open_handoff(client, conversation_id)
            assert handoff["reason_code"] == "bot_unavailable"
            conversation = await in_zendesk(sunco, handoff)
            await sunco.agent_reply(conversation.id, reply)
        await until(lambda: len(graph.calls(whatsapp_test.MESSAGES_PATH)) >= 2)
        whatsapp_sent = [r.json for r in graph.calls(whatsapp_test.MESSAGES_PATH)]
        assert whatsapp_sent[-1]["to"] == phone
        assert whatsapp_sent[-1]["text"]["body"] == "WhatsApp reply from Maya"
        await until(lambda: twilio_api.calls(twilio_test.MESSAGES_PATH)[-1].form["Body"]
                    == ["SMS reply from Maya"])
        assert twilio_api.calls(twilio_test.MESSAGES_PATH)[-1].form["To"] == [sms]
        everything = json.dumps([sunco.users, [c.__dict__ for c in
                                               sunco.conversations.values()]], default=str)
        assert phone not in everything and sms.lstrip("+") not in everything
        logs = "\n".join(r.getMessage() for r in caplog.records
                         if r.name.startswith("bot.handoff"))
        assert phone not in logs and sms.lstrip("+") not in logs
    finally:
        await client.close()
