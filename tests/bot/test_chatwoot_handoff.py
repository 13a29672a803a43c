"""Handoff into Chatwoot end to end: the gateway in front of the real Rasa and action
server with HANDOFF_TARGET=chatwoot, against a local server that answers as Chatwoot's
Application API and sends its signed webhooks (tests/helpdesk_api/chatwoot.py).

A Telegram customer who asks for a person appears in Chatwoot with the transcript and
a private note of the handoff, assigned to the queue's team; what they write next is
mirrored there and the bot stays silent; an agent's reply reaches them on Telegram, a
private note does not; resolving hands them back to the bot with the CSAT question, a
reopen back to the agents. Forged, stale and malformed webhooks are refused. When
Chatwoot is down the handoff is kept, the customer told, and Chatwoot given it once
it is back; so are the customer's messages meanwhile, in order. WhatsApp and SMS
customers get agents' replies on their own channel. Two gateways on Redis push a
handoff once and either takes Chatwoot's webhooks."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import AsyncIterator, Dict, List, Optional

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.handoff.desk import Place
from bot.handoff.store import Handoff
from bot.policies import load_channel_policy
from bot.settings import ChatwootSettings, Settings, load_settings
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
)
from tests.bot.test_agent_console import callback
from tests.bot.test_gateway import post_update, sent_texts, until, update
from tests.conftest import RasaStack
from tests.connectors import test_telegram as telegram_test
from tests.connectors import test_twilio as twilio_test
from tests.connectors import test_whatsapp as whatsapp_test
from tests.connectors.test_telegram import credentials
from tests.helpdesk_api import chatwoot as cw
from tests.helpdesk_api.chatwoot import ChatwootServer, Conversation
from tests.provider_api import ProviderAPI, free_port


@pytest.fixture
def policy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return policy_copy(tmp_path, monkeypatch, "chatwoot")


@pytest_asyncio.fixture
async def chatwoot() -> AsyncIterator[ChatwootServer]:
    server = await ChatwootServer().start()
    yield server
    await server.stop()


def chatwoot_settings(rasa_url: str, stack: RasaStack, server: ChatwootServer) -> Settings:
    return dataclasses.replace(
        load_settings(), rasa_url=rasa_url, database_url=stack.database_url,
        var_dir=stack.var_dir, redis_url="", handoff_target="chatwoot",
        agent_api_token=ADMIN_TOKEN,
        chatwoot=ChatwootSettings(server.url, cw.ACCOUNT_ID, cw.TOKEN, cw.INBOX_ID, cw.SECRET))


@pytest_asyncio.fixture
async def client(rasa_stack: RasaStack, bot_api: ProviderAPI, chatwoot: ChatwootServer,
                 policy_dir: Path) -> AsyncIterator[TestClient]:
    telegram = TelegramChannel(credentials(bot_api.url), load_channel_policy())
    client = await serve(chatwoot_settings(rasa_stack.rasa_url, rasa_stack, chatwoot),
                         {"telegram": telegram}, chatwoot)
    yield client
    await client.close()


async def in_chatwoot(server: ChatwootServer, handoff: Handoff) -> Conversation:
    """The handoff's Chatwoot conversation once it has both notes and its team."""
    def ready() -> Optional[Conversation]:
        found = server.conversation_for(f"H-{handoff['id']}")
        return found if found and len(found.notes()) == 2 and found.team_id else None
    await until(lambda: ready() is not None)
    conversation = ready()
    assert conversation is not None
    return conversation


async def quiet(server: ChatwootServer) -> None:
    """Let the webhooks Chatwoot queued (echoes of the gateway's own calls) arrive."""
    await asyncio.sleep(0.3)
    await until(lambda: not server._background)


async def test_a_telegram_customer_is_worked_in_chatwoot_and_handed_back_to_the_bot(
        client: TestClient, bot_api: ProviderAPI, chatwoot: ChatwootServer) -> None:
    chat = 7700001
    handoff = await ask_for_a_person(client, bot_api, chat, 72000)
    conversation = await in_chatwoot(chatwoot, handoff)
    contact = chatwoot.contacts[conversation.contact_id]
    assert contact["name"] == "Ann" and contact["identifier"].startswith("gw-")
    assert str(chat) not in json.dumps(contact)
    transcript, packet = conversation.notes()
    assert "Customer: I want to talk to a human" in transcript
    assert "Assistant: " in transcript and "reference is H-" in transcript
    assert "Reason: customer_request (rule customer_request), tier 1, queue customer care" \
        in packet
    assert "identity verified: no" in packet and "The assistant tried:" in packet
    assert (conversation.team_id, conversation.status) == (4, "open")  # general's team
    await quiet(chatwoot)
    assert len(sent_texts(bot_api, chat)) == 2, "Chatwoot's echo of a note reached the customer"

    # what the customer writes goes to Chatwoot, not to the bot
    assert await post_update(client, update(72001, "where is my order", chat=chat)) == 200
    await until(lambda: conversation.incoming() == ["where is my order"])
    await quiet(chatwoot)
    assert len(sent_texts(bot_api, chat)) == 2

    assert await chatwoot.agent_reply(conversation.id, "VIP, check stock first",
                                      private=True) == 200
    assert await chatwoot.agent_reply(conversation.id, "Hi Ann, Maya here. Checking now.") \
        == 200
    assert sent_texts(bot_api, chat)[2:] == ["Hi Ann, Maya here. Checking now."]
    record = desk_of(client).store.get(handoff["id"])
    assert record is not None
    assert (record["status"], record["agent"]) == ("active", "chatwoot:21")
    assert record["first_response_at"] is not None
    # Chatwoot delivering the same message again sends nothing twice
    replied = conversation.messages[-1]
    assert await chatwoot.send_webhook(chatwoot._message_event(replied)) == 200
    assert sent_texts(bot_api, chat)[2:] == ["Hi Ann, Maya here. Checking now."]

    assert await chatwoot.set_status(conversation.id, "resolved") == 200
    handback, question = sent_texts(bot_api, chat)[-2:]
    assert "back with the assistant" in handback and "rate" in question
    record = desk_of(client).store.get(handoff["id"])
    assert record is not None and (record["status"], record["disposition"]) == (
        "resolved", "solved")

    # reopened: with people again, the bot silent
    assert await chatwoot.set_status(conversation.id, "open") == 200
    assert desk_of(client).store.get(handoff["id"])["status"] == "active"  # type: ignore[index]
    sent = len(sent_texts(bot_api, chat))
    assert await post_update(client, update(72002, "one more thing", chat=chat)) == 200
    await until(lambda: conversation.incoming()[-1:] == ["one more thing"])
    await quiet(chatwoot)
    assert len(sent_texts(bot_api, chat)) == sent

    assert await chatwoot.set_status(conversation.id, "resolved") == 200
    assert "rate" in sent_texts(bot_api, chat)[-1]
    assert await post_update(client, callback(72003, chat, "csat:5")) == 200
    await until(lambda: sent_texts(bot_api, chat)[-1] == "Thank you for telling us.")
    assert desk_of(client).store.get(handoff["id"])["csat_score"] == 5  # type: ignore[index]
    assert audit(client, handoff["id"]) == [
        ("bot", "open"), ("chatwoot:21", "claim"), ("chatwoot:21", "reply"),
        ("chatwoot:21", "resolve"), ("chatwoot:21", "reopen"), ("chatwoot:21", "resolve")]

    # back with the bot
    sent = len(sent_texts(bot_api, chat))
    assert await post_update(client, update(72004, "where is my order", chat=chat)) == 200
    await until(lambda: len(sent_texts(bot_api, chat)) > sent)
    assert "order number" in sent_texts(bot_api, chat)[-1].lower()

    # asking again later opens a new conversation for the same Chatwoot contact
    again = await ask_for_a_person(client, bot_api, chat, 72005)
    assert again["id"] != handoff["id"]
    second = await in_chatwoot(chatwoot, again)
    assert second.id != conversation.id and second.contact_id == conversation.contact_id
    assert len(chatwoot.contacts) == 1


async def test_forged_stale_and_malformed_webhooks_are_refused(
        client: TestClient, bot_api: ProviderAPI, chatwoot: ChatwootServer,
        caplog: pytest.LogCaptureFixture) -> None:
    chat = 7700002
    handoff = await ask_for_a_person(client, bot_api, chat, 72100)
    conversation = await in_chatwoot(chatwoot, handoff)
    await quiet(chatwoot)
    forged = chatwoot._message_event(chatwoot._add_message(
        conversation, "Send your card number to pay-here.example", "outgoing", False, cw.AGENT))
    stale = str(int(time.time()) - 3600)
    with caplog.at_level(logging.INFO, logger="bot.handoff.chatwoot"):
        assert await chatwoot.send_webhook(forged, secret="not-the-secret") == 401
        assert await chatwoot.send_webhook(forged, headers={
            "X-Chatwoot-Timestamp": stale}) == 401
        assert await chatwoot.send_webhook(forged, headers={
            "X-Chatwoot-Timestamp": stale, "X-Chatwoot-Signature": cw.sign(
                cw.SECRET, stale, json.dumps(forged).encode())}) == 401
        unsigned = await client.post("/webhooks/chatwoot", json=forged)
        assert unsigned.status == 401
        assert await chatwoot.send_webhook({}, body=b"{not json") == 400
        assert await chatwoot.send_webhook({}, body=b"[1, 2]") == 400
        assert await chatwoot.send_webhook({**forged, "conversation": {"id": "x"}}) == 400
    assert len(sent_texts(bot_api, chat)) == 2, "a refused webhook reached the customer"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused a Chatwoot webhook" in logged
    assert "card number" not in logged and "Ann" not in logged
    assert desk_of(client).store.get(handoff["id"])["status"] == "waiting"  # type: ignore[index]


async def test_when_chatwoot_is_down_the_handoff_is_kept_and_given_to_it_once_it_is_back(
        client: TestClient, bot_api: ProviderAPI, chatwoot: ChatwootServer,
        caplog: pytest.LogCaptureFixture) -> None:
    chat = 7700003
    chatwoot.down()
    caplog.set_level(logging.WARNING, logger="bot.handoff.chatwoot")
    handoff = await ask_for_a_person(client, bot_api, chat, 72200)
    await until(lambda: "did not take the handoff" in caplog.text)
    told = sent_texts(bot_api, chat)[-1]
    assert "queue" in told and f"H-{handoff['id']}" in told  # a person will pick it up
    assert handoff["status"] == "waiting" and not chatwoot.conversations
    await asyncio.sleep(2 * RETRY_SECONDS)
    assert not chatwoot.conversations  # still down: still kept, offered again later
    # what the customer writes meanwhile reaches the agent with the transcript
    assert await post_update(client, update(72201, "my parcel is damaged", chat=chat)) == 200
    await until(lambda: len(desk_of(client).records.transcript(f"telegram:{chat}")) == 4)

    chatwoot.down(False)
    conversation = await in_chatwoot(chatwoot, handoff)
    assert "Customer: my parcel is damaged" in conversation.notes()[0]
    assert await chatwoot.agent_reply(conversation.id, "Sorry about that, Ann.") == 200
    assert sent_texts(bot_api, chat)[-1] == "Sorry about that, Ann."

    # down again: what the customer writes is held, in order, until Chatwoot is back
    chatwoot.down()
    for number, text in enumerate(("the box was crushed", "and wet"), 72202):
        assert await post_update(client, update(number, text, chat=chat)) == 200
    await until(lambda: "a customer message is held" in caplog.text)
    await asyncio.sleep(2 * RETRY_SECONDS)
    assert conversation.incoming() == []
    chatwoot.down(False)
    await until(lambda: conversation.incoming() == ["the box was crushed", "and wet"])
    assert len([c for c in chatwoot.conversations.values()
                if c.additional_attributes["handoff_reference"] == f"H-{handoff['id']}"]) == 1


async def test_a_monitors_handoff_reaches_chatwoot_with_the_order(
        client: TestClient, chatwoot: ChatwootServer) -> None:
    """The promises monitor opens handoffs nobody asked for (HandoffDesk.follow_up):
    they reach Chatwoot like the bot's, with the order's snapshot in the note."""
    place = Place("telegram", "telegram", "7700007")
    handoff = await desk_of(client).follow_up(place, {
        "reason_code": "promise_due", "rule": "promise_due", "tier": 2,
        "queue": "logistics", "customer_name": "Ben", "customer_verified": True,
        "customer_contact": "", "order_id": "A1001", "slots": {}, "actions_attempted": [],
        "summary": {"what_happened": "Promise due today: trace claim C1 opened",
                    "next": "chase the carrier", "eta": "within 2 business hours"}})
    assert handoff is not None
    conversation = await in_chatwoot(chatwoot, handoff)
    note = conversation.notes()[1]
    assert "Reason: promise_due (rule promise_due), tier 2, queue delivery" in note
    assert '"order_id": "A1001"' in note and "1Z999AA10123456784" in note
    assert "Promised: within 2 business hours" in note
    assert conversation.team_id == 1  # logistics' team


async def test_a_handoff_chatwoot_half_took_is_completed_not_made_twice(
        client: TestClient, bot_api: ProviderAPI, chatwoot: ChatwootServer) -> None:
    """The conversation was made with its notes, then assigning the team failed: the
    next try gives that conversation its team; no second conversation, no note twice."""
    chatwoot.fail_next("/assignments")
    handoff = await ask_for_a_person(client, bot_api, 7700006, 72500)
    reference = f"H-{handoff['id']}"

    def made() -> List[Conversation]:
        return [c for c in chatwoot.conversations.values()
                if c.additional_attributes["handoff_reference"] == reference]

    await until(lambda: any(c.team_id == 4 for c in made()))
    assert len(made()) == 1
    transcript, packet = made()[0].notes()
    assert transcript.startswith("Conversation before the handoff:")
    assert packet.startswith(f"Handoff {reference}")
    assert desk_of(client).store.get(handoff["id"])["status"] == "waiting"  # type: ignore[index]


async def test_what_an_agent_attaches_reaches_the_customer(
        client: TestClient, bot_api: ProviderAPI, chatwoot: ChatwootServer) -> None:
    """An image goes as an image with the reply as its caption, a second image on its
    own, another file as its link in the text."""
    chat = 7700012
    handoff = await ask_for_a_person(client, bot_api, chat, 72960)
    conversation = await in_chatwoot(chatwoot, handoff)
    assert await chatwoot.agent_reply(conversation.id, "Here is the label", files=[
        ("image", "label.png"), ("file", "return-form.pdf"), ("image", "box.jpg")]) == 200
    photos = [r.form for r in bot_api.calls(f"{telegram_test.API}/sendPhoto")
              if r.form["chat_id"] == [str(chat)]]
    urls = [a["data_url"] for a in conversation.messages[-1]["attachments"]]
    assert [(p["photo"][0], p.get("caption", [""])[0]) for p in photos] == [
        (urls[0], f"Here is the label\n{urls[1]}"), (urls[2], "")]
    record = desk_of(client).store.get(handoff["id"])
    assert record is not None and record["status"] == "active"


async def test_assigning_an_agent_in_chatwoot_claims_the_handoff(
        client: TestClient, bot_api: ProviderAPI, chatwoot: ChatwootServer) -> None:
    """The claim, and its time for the KPIs, is the assignment; the agent's first
    reply then claims nothing more."""
    handoff = await ask_for_a_person(client, bot_api, 7700013, 72970)
    conversation = await in_chatwoot(chatwoot, handoff)
    assert await chatwoot.assign(conversation.id, 21) == 200
    record = desk_of(client).store.get(handoff["id"])
    assert record is not None
    assert (record["status"], record["agent"]) == ("active", "chatwoot:21")
    assert record["claimed_at"] is not None and record["first_response_at"] is None
    assert await chatwoot.agent_reply(conversation.id, "Hi, Maya here.") == 200
    assert audit(client, handoff["id"]) == [
        ("bot", "open"), ("chatwoot:21", "claim"), ("chatwoot:21", "reply")]


class SlowRasa:
    """The real Rasa behind a door the test can hold: a turn's answer waits there, as a
    slow turn's would, while the test does what an agent does meanwhile."""

    def __init__(self, rasa_url: str) -> None:
        self.rasa_url = rasa_url
        self.url = ""
        self.holding = False
        self.answer_waits = asyncio.Event()
        self.let_through = asyncio.Event()
        self._runner: Optional[web.AppRunner] = None

    async def start(self) -> SlowRasa:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self.let_through.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        async with aiohttp.ClientSession() as session, session.request(
                request.method, self.rasa_url + request.path_qs, data=await request.read(),
                headers={"Content-Type": request.content_type}) as got:
            status, body = got.status, await got.read()
        if self.holding:
            self.answer_waits.set()
            await self.let_through.wait()
        return web.Response(status=status, body=body, content_type="application/json")


async def test_an_agent_who_takes_the_conversation_mid_turn_is_not_talked_over(
        rasa_stack: RasaStack, bot_api: ProviderAPI, chatwoot: ChatwootServer,
        policy_dir: Path) -> None:
    """Back with the bot, the customer asks something; while the bot's answer is on its
    way an agent reopens the conversation in Chatwoot and writes. The bot's answer is
    not sent after the agent's, and the customer's question goes to the agent."""
    slow = await SlowRasa(rasa_stack.rasa_url).start()
    telegram = TelegramChannel(credentials(bot_api.url), load_channel_policy())
    client = await serve(chatwoot_settings(slow.url, rasa_stack, chatwoot),
                         {"telegram": telegram}, chatwoot)
    try:
        chat = 7700011
        handoff = await ask_for_a_person(client, bot_api, chat, 72950)
        conversation = await in_chatwoot(chatwoot, handoff)
        assert await chatwoot.set_status(conversation.id, "resolved") == 200
        assert "rate" in sent_texts(bot_api, chat)[-1]

        slow.holding = True
        assert await post_update(client, update(72951, "where is my order", chat=chat)) == 200
        await asyncio.wait_for(slow.answer_waits.wait(), 60)
        assert await chatwoot.set_status(conversation.id, "open") == 200
        assert await chatwoot.agent_reply(conversation.id, "Maya again: let me look.") == 200
        slow.let_through.set()

        await until(lambda: conversation.incoming()[-1:] == ["where is my order"])
        await quiet(chatwoot)
        assert sent_texts(bot_api, chat)[-1] == "Maya again: let me look."
        record = desk_of(client).store.get(handoff["id"])
        assert record is not None and record["status"] == "active"
    finally:
        await client.close()
        await slow.stop()


async def test_a_conversation_made_though_chatwoots_answer_was_lost_is_not_made_twice(
        client: TestClient, bot_api: ProviderAPI, chatwoot: ChatwootServer) -> None:
    """Chatwoot made the conversation but its answer never came (a proxy's timeout):
    the next try finds that conversation by the handoff's reference and completes it."""
    chatwoot.lose_next_answer("POST", "/conversations")
    handoff = await ask_for_a_person(client, bot_api, 7700010, 72900)
    reference = f"H-{handoff['id']}"
    conversation = await in_chatwoot(chatwoot, handoff)
    await quiet(chatwoot)
    assert [c.id for c in chatwoot.conversations.values()
            if c.additional_attributes["handoff_reference"] == reference] == [conversation.id]
    assert desk_of(client).store.get(handoff["id"])["status"] == "waiting"  # type: ignore[index]


async def test_two_gateways_on_redis_share_the_handoff_and_push_it_once(
        rasa_stack: RasaStack, bot_api: ProviderAPI, chatwoot: ChatwootServer,
        policy_dir: Path, redis_url: str) -> None:
    """Chatwoot is down when the customer asks; both gateways offer the handoff again,
    and once it is back it gets one conversation. Its webhooks reach the other
    gateway, which sends the agent's reply and hands the customer back."""
    settings = dataclasses.replace(chatwoot_settings(rasa_stack.rasa_url, rasa_stack,
                                                     chatwoot), redis_url=redis_url)
    first, second = [await serve(settings, {"telegram": TelegramChannel(
        credentials(bot_api.url), load_channel_policy())}, chatwoot) for _ in range(2)]
    chat = 7600000 + int(time.time()) % 100000
    try:
        chatwoot.down()
        handoff = await ask_for_a_person(first, bot_api, chat, chat)
        await asyncio.sleep(3 * RETRY_SECONDS)
        chatwoot.down(False)
        conversation = await in_chatwoot(chatwoot, handoff)
        await asyncio.sleep(3 * RETRY_SECONDS)
        assert [c.additional_attributes["handoff_reference"]
                for c in chatwoot.conversations.values()].count(f"H-{handoff['id']}") == 1
        assert len(conversation.notes()) == 2
        assert chatwoot.webhook_url.startswith(str(second.make_url("/")))
        assert await chatwoot.agent_reply(conversation.id, "Hello from Chatwoot") == 200
        assert sent_texts(bot_api, chat)[-1] == "Hello from Chatwoot"
        assert await chatwoot.set_status(conversation.id, "resolved") == 200
        assert "rate" in sent_texts(bot_api, chat)[-1]
    finally:
        await first.close()
        await second.close()


async def test_a_wrong_api_token_keeps_the_handoff_and_says_why_without_content(
        rasa_stack: RasaStack, bot_api: ProviderAPI, chatwoot: ChatwootServer,
        policy_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = chatwoot_settings(rasa_stack.rasa_url, rasa_stack, chatwoot)
    assert settings.chatwoot is not None
    settings = dataclasses.replace(settings, chatwoot=dataclasses.replace(
        settings.chatwoot, api_token="revoked-token"))
    telegram = TelegramChannel(credentials(bot_api.url), load_channel_policy())
    client = await serve(settings, {"telegram": telegram}, chatwoot)
    try:
        with caplog.at_level(logging.WARNING, logger="bot.handoff.chatwoot"):
            handoff = await ask_for_a_person(client, bot_api, 7700004, 72300)
            await until(lambda: "HTTP 401" in caplog.text)
        assert handoff["status"] == "waiting" and not chatwoot.conversations
        assert "human" not in caplog.text and "Ann" not in caplog.text
    finally:
        await client.close()


async def test_erasing_a_customer_forgets_their_chatwoot_links_and_held_messages(
        client: TestClient, bot_api: ProviderAPI, chatwoot: ChatwootServer,
        caplog: pytest.LogCaptureFixture) -> None:
    chat = 7700005
    handoff = await ask_for_a_person(client, bot_api, chat, 72400)
    conversation = await in_chatwoot(chatwoot, handoff)
    chatwoot.down()
    caplog.set_level(logging.WARNING, logger="bot.handoff.chatwoot")
    assert await post_update(client, update(72401, "my name is Ann Lee", chat=chat)) == 200
    await until(lambda: "a customer message is held" in caplog.text)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    contact = {"contact": f"telegram:{chat}"}
    held = await (await client.get("/api/privacy/export", params=contact,
                                   headers=admin)).json()
    assert [row["chatwoot_conversation_id"] for row in held["chatwoot_conversations"]] == [
        conversation.id]
    assert [row["content"] for row in held["chatwoot_held"]] == ["my name is Ann Lee"]
    erased = await client.post("/api/privacy/erase", json=contact, headers=admin)
    removed = (await erased.json())["removed"]
    assert (removed["chatwoot_conversations"], removed["chatwoot_held"]) == (1, 1)
    again = await (await client.get("/api/privacy/export", params=contact,
                                    headers=admin)).json()
    assert not again["chatwoot_conversations"] and not again["chatwoot_held"]
    chatwoot.down(False)
    await asyncio.sleep(2 * RETRY_SECONDS)
    assert conversation.incoming() == [], "an erased customer's message went to Chatwoot"


async def test_whatsapp_and_sms_customers_get_the_agents_reply_on_their_own_channel(
        rasa_stack: RasaStack, chatwoot: ChatwootServer, graph: ProviderAPI,
        twilio_api: ProviderAPI, policy_dir: Path) -> None:
    """The bot is down, so both are handed to a person (reason bot_unavailable)."""
    policy = load_channel_policy()
    channels: Dict[str, Channel] = {
        "whatsapp": WhatsAppChannel(whatsapp_test.credentials(graph.url), policy),
        "twilio": TwilioChannel(TwilioCredentials(twilio_test.ACCOUNT_SID,
                                                  twilio_test.AUTH_TOKEN, twilio_api.url),
                                policy)}
    settings = chatwoot_settings(f"http://127.0.0.1:{free_port()}", rasa_stack, chatwoot)
    client = await serve(settings, channels, chatwoot, bot_retry_seconds=0.2)
    phone, sms = "16505550177", "+14155550177"
    try:
        message = whatsapp_test.inbound("text", {"body": "my parcel is late"},
                                        wamid=f"wamid.CW{time.time_ns()}")
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
            conversation = await in_chatwoot(chatwoot, handoff)
            assert await chatwoot.agent_reply(conversation.id, reply) == 200
        whatsapp_sent = [r.json for r in graph.calls(whatsapp_test.MESSAGES_PATH)]
        assert whatsapp_sent[-1]["to"] == phone
        assert whatsapp_sent[-1]["text"]["body"] == "WhatsApp reply from Maya"
        sms_sent = twilio_api.calls(twilio_test.MESSAGES_PATH)[-1].form
        assert (sms_sent["To"], sms_sent["Body"]) == ([sms], ["SMS reply from Maya"])
        # Chatwoot never learns a customer's number
        everything = json.dumps([chatwoot.contacts, [c.__dict__ for c in
                                                     chatwoot.conversations.values()]])
        assert phone not in everything and sms.lstrip("+") not in everything
    finally:
        await client.close()
