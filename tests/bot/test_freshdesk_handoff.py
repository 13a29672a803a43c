"""Handoff into Freshdesk end to end: the gateway in front of the real Rasa and action
server with HANDOFF_TARGET=freshdesk, against a local server that answers as Freshdesk's
API v2 and fires its automation webhooks (tests/helpdesk_api/freshdesk.py).

A Telegram customer who asks for a person gets a ticket with the transcript (escaped)
as its description, the tier's priority, the queue's group and a private note of the
handoff; what they write next is added as public incoming notes and the bot stays
silent; an agent's public reply reaches them on Telegram once, a private note never;
resolving or closing hands them back to the bot with the CSAT question, reopening to
the agents. Wrong or missing secrets and malformed bodies are refused. When Freshdesk
is down, unreachable or throttling, the handoff is kept, the customer told, and
Freshdesk given it later, the customer's messages in order. WhatsApp and SMS customers
are the ticket's requester by phone and get replies on their own channel."""
from __future__ import annotations

import asyncio
import dataclasses
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
from bot.settings import FreshdeskSettings, Settings, load_settings
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
from tests.helpdesk_api import freshdesk as fd
from tests.helpdesk_api.freshdesk import FreshdeskServer, Ticket
from tests.provider_api import ProviderAPI, free_port

LOGGER = "bot.handoff.freshdesk"


@pytest.fixture
def policy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return policy_copy(tmp_path, monkeypatch, "freshdesk")


@pytest_asyncio.fixture
async def freshdesk() -> AsyncIterator[FreshdeskServer]:
    server = await FreshdeskServer().start()
    yield server
    await server.stop()


def freshdesk_settings(rasa_url: str, stack: RasaStack, server: FreshdeskServer,
                       api_key: str = fd.API_KEY) -> Settings:
    return dataclasses.replace(
        load_settings(), rasa_url=rasa_url, database_url=stack.database_url,
        var_dir=stack.var_dir, redis_url="", handoff_target="freshdesk",
        agent_api_token=ADMIN_TOKEN,
        freshdesk=FreshdeskSettings(server.url, api_key, fd.SECRET))


@pytest_asyncio.fixture
async def client(rasa_stack: RasaStack, bot_api: ProviderAPI, freshdesk: FreshdeskServer,
                 policy_dir: Path) -> AsyncIterator[TestClient]:
    telegram = TelegramChannel(credentials(bot_api.url), load_channel_policy())
    client = await serve(freshdesk_settings(rasa_stack.rasa_url, rasa_stack, freshdesk),
                         {"telegram": telegram}, freshdesk)
    yield client
    await client.close()


async def in_freshdesk(server: FreshdeskServer, handoff: Handoff) -> Ticket:
    """The handoff's ticket once it has the private note of the handoff."""
    def ready() -> Optional[Ticket]:
        found = server.ticket_for(f"H-{handoff['id']}")
        return found if found and found.notes(private=True) else None
    await until(lambda: ready() is not None)
    ticket = ready()
    assert ticket is not None
    return ticket


async def quiet(server: FreshdeskServer) -> None:
    """Let the webhooks Freshdesk fired (for the gateway's own notes) be handled."""
    await asyncio.sleep(0.3)
    await until(lambda: not server._background)
    await asyncio.sleep(0.3)


async def test_a_telegram_customer_is_worked_in_freshdesk_and_handed_back_to_the_bot(
        client: TestClient, bot_api: ProviderAPI, freshdesk: FreshdeskServer) -> None:
    chat = 9500001
    handoff = await ask_for_a_person(client, bot_api, chat, 95000)
    ticket = await in_freshdesk(freshdesk, handoff)
    requester = freshdesk.contacts[ticket.requester_id]
    assert requester["name"] == "Ann" and requester["unique_external_id"].startswith("gw-")
    assert requester["phone"] is None and str(chat) not in str(requester)
    fields = ticket.fields
    assert fields["subject"] == f"Customer request (H-{handoff['id']}, telegram)"
    assert (fields["status"], fields["priority"], fields["group_id"], fields["source"]) == (
        2, 2, 4, 7)  # open, tier 1's priority, general's group, chat
    assert fields["tags"] == ["assistant-handoff", "reason-customer_request", "queue-general"]
    assert "Customer: I want to talk to a human" in fields["description"]
    assert "Assistant: " in fields["description"] and "<br>" in fields["description"]
    [packet] = ticket.notes(private=True)
    assert "Reason: customer_request (rule customer_request), tier 1, queue customer care" \
        in packet
    assert "identity verified: no" in packet and "The assistant tried:" in packet
    await quiet(freshdesk)
    assert ("note", 200) in freshdesk.deliveries  # the note's automation fired ...
    assert len(sent_texts(bot_api, chat)) == 2, "... and the gateway's note reached the customer"

    # what the customer writes is added to the ticket as theirs, escaped, not to the bot
    assert await post_update(client, update(95001, "where is <b>my</b> order & why",
                                            chat=chat)) == 200
    await until(lambda: len(ticket.incoming()) == 1)
    note = ticket.conversations[-1]
    assert note["body"] == "<div>where is &lt;b&gt;my&lt;/b&gt; order &amp; why</div>"
    assert (note["private"], note["incoming"], note["user_id"]) == (
        False, True, ticket.requester_id)
    await quiet(freshdesk)
    assert len(sent_texts(bot_api, chat)) == 2

    assert await freshdesk.private_note(ticket.id, "VIP, check stock first") == 200
    assert await freshdesk.agent_reply(ticket.id, "Hi Ann, Maya here. Checking now.") == 200
    await until(lambda: len(sent_texts(bot_api, chat)) == 3)
    assert sent_texts(bot_api, chat)[2:] == ["Hi Ann, Maya here. Checking now."]
    record = desk_of(client).store.get(handoff["id"])
    assert record is not None
    assert (record["status"], record["agent"]) == ("active", f"freshdesk:{fd.AGENT_ID}")
    assert record["first_response_at"] is not None
    # Freshdesk firing the same webhook again sends nothing twice
    assert await freshdesk.fire("reply", ticket) == 200
    assert await freshdesk.fire("reply", ticket) == 200
    await quiet(freshdesk)
    assert sent_texts(bot_api, chat)[2:] == ["Hi Ann, Maya here. Checking now."]

    assert await freshdesk.set_status(ticket.id, 4) == 200  # resolved
    await until(lambda: "rate" in sent_texts(bot_api, chat)[-1])
    handback = sent_texts(bot_api, chat)[-2]
    assert "back with the assistant" in handback
    record = desk_of(client).store.get(handoff["id"])
    assert record is not None and (record["status"], record["disposition"]) == (
        "resolved", "solved")
    assert await freshdesk.set_status(ticket.id, 5) == 200  # closed: nothing more
    await quiet(freshdesk)
    assert "rate" in sent_texts(bot_api, chat)[-1]
    assert len([t for t in sent_texts(bot_api, chat) if "rate" in t]) == 1

    # reopened: with people again, the bot silent
    assert await freshdesk.set_status(ticket.id, 2) == 200
    await until(lambda: status_of(client, handoff["id"]) == "active")
    sent = len(sent_texts(bot_api, chat))
    assert await post_update(client, update(95002, "one more thing", chat=chat)) == 200
    await until(lambda: len(ticket.incoming()) == 2)
    await quiet(freshdesk)
    assert len(sent_texts(bot_api, chat)) == sent

    assert await freshdesk.set_status(ticket.id, 5) == 200  # closed this time
    await until(lambda: len(sent_texts(bot_api, chat)) > sent + 1)
    assert "rate" in sent_texts(bot_api, chat)[-1]
    assert await post_update(client, callback(95003, chat, "csat:5")) == 200
    await until(lambda: sent_texts(bot_api, chat)[-1] == "Thank you for telling us.")
    assert desk_of(client).store.get(handoff["id"])["csat_score"] == 5  # type: ignore[index]
    agent = f"freshdesk:{fd.AGENT_ID}"
    assert audit(client, handoff["id"]) == [
        ("bot", "open"), (agent, "claim"), (agent, "reply"), (agent, "resolve"),
        (agent, "reopen"), (agent, "resolve")]

    # back with the bot
    sent = len(sent_texts(bot_api, chat))
    assert await post_update(client, update(95004, "where is my order", chat=chat)) == 200
    await until(lambda: len(sent_texts(bot_api, chat)) > sent)
    assert "order number" in sent_texts(bot_api, chat)[-1].lower()

    # asking again later opens a new ticket for the same requester
    again = await ask_for_a_person(client, bot_api, chat, 95005)
    assert again["id"] != handoff["id"]
    second = await in_freshdesk(freshdesk, again)
    assert second.id != ticket.id and second.requester_id == ticket.requester_id
    assert len(freshdesk.contacts) == 1


async def test_a_monitors_handoff_reaches_freshdesk_with_the_order_and_the_tiers_priority(
        client: TestClient, freshdesk: FreshdeskServer) -> None:
    """The promises monitor opens handoffs nobody asked for (HandoffDesk.follow_up):
    they reach Freshdesk like the bot's, with the order's snapshot in the note."""
    place = Place("telegram", "telegram", "9500008")
    handoff = await desk_of(client).follow_up(place, {
        "reason_code": "promise_due", "rule": "promise_due", "tier": 2,
        "queue": "logistics", "customer_name": "Ben", "customer_verified": True,
        "customer_contact": "", "order_id": "A1001", "slots": {}, "actions_attempted": [],
        "summary": {"what_happened": "Promise due today: trace claim C1 opened",
                    "next": "chase the carrier", "eta": "within 2 business hours"}})
    assert handoff is not None
    ticket = await in_freshdesk(freshdesk, handoff)
    [note] = ticket.notes(private=True)
    assert "Reason: promise_due (rule promise_due), tier 2, queue delivery" in note
    assert "identity verified: yes" in note and "Promised: within 2 business hours" in note
    assert "&quot;order_id&quot;: &quot;A1001&quot;" in note and "1Z999AA10123456784" in note
    assert (ticket.fields["priority"], ticket.fields["group_id"]) == (3, 1)  # logistics
    assert ticket.fields["subject"] == f"Promise due (H-{handoff['id']}, telegram)"
    assert freshdesk.contacts[ticket.requester_id]["name"] == "Ben"


async def test_wrong_or_missing_secrets_and_malformed_webhooks_are_refused(
        client: TestClient, bot_api: ProviderAPI, freshdesk: FreshdeskServer,
        caplog: pytest.LogCaptureFixture) -> None:
    chat = 9500002
    handoff = await ask_for_a_person(client, bot_api, chat, 95100)
    ticket = await in_freshdesk(freshdesk, handoff)
    await quiet(freshdesk)
    freshdesk._add(ticket, "<div>Send your card number to pay-here.example</div>", source=0,
                   private=False, incoming=False, user_id=fd.AGENT_ID)
    good = fd.RULES["reply"].replace("{{ticket.id}}", str(ticket.id)).encode()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert await freshdesk.send_webhook(good, headers={
            fd.SECRET_HEADER: "not-the-secret"}) == 401
        assert await freshdesk.send_webhook(good, headers={
            fd.SECRET_HEADER: fd.SECRET + "x"}) == 401
        assert await freshdesk.send_webhook(good, headers={}) == 401
        assert await freshdesk.send_webhook(good, headers={
            "Authorization": f"Bearer {fd.SECRET}"}) == 401
        for body in (b"{not json", b"[1, 2]", b'{"ticket_id": "x", "event": "reply"}',
                     b'{"ticket_id": -4, "event": "reply"}', b'{"ticket_id": 5}',
                     b'{"ticket_id": 5, "event": "deleted"}',
                     b'{"ticket_id": true, "event": "reply"}'):
            assert await freshdesk.send_webhook(body) == 400, body
        await asyncio.sleep(0.5)
    assert len(sent_texts(bot_api, chat)) == 2, "a refused webhook reached the customer"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused a Freshdesk webhook" in logged
    assert "card number" not in logged and "Ann" not in logged and fd.SECRET not in logged
    assert status_of(client, handoff["id"]) == "waiting"
    # a ticket that is no handoff's is taken and ignored
    assert await freshdesk.send_webhook(
        b'{"ticket_id": 999999999999, "event": "status"}') == 200


async def test_when_freshdesk_is_down_the_handoff_is_kept_and_given_to_it_once_it_is_back(
        client: TestClient, bot_api: ProviderAPI, freshdesk: FreshdeskServer,
        caplog: pytest.LogCaptureFixture) -> None:
    chat = 9500003
    freshdesk.down()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    handoff = await ask_for_a_person(client, bot_api, chat, 95200)
    await until(lambda: "did not take the handoff (POST tickets: HTTP 503)" in caplog.text)
    told = sent_texts(bot_api, chat)[-1]
    assert "queue" in told and f"H-{handoff['id']}" in told  # a person will pick it up
    assert handoff["status"] == "waiting" and not freshdesk.tickets
    await asyncio.sleep(2 * RETRY_SECONDS)
    assert not freshdesk.tickets  # still down: still kept, offered again later
    # what the customer writes meanwhile reaches the agent with the transcript
    assert await post_update(client, update(95201, "my parcel is damaged", chat=chat)) == 200
    await until(lambda: len(desk_of(client).records.transcript(f"telegram:{chat}")) == 4)

    await freshdesk.unreachable()  # connection refused now
    await until(lambda: "ClientConnectorError" in caplog.text)
    await freshdesk.reachable()
    freshdesk.down(False)
    ticket = await in_freshdesk(freshdesk, handoff)
    assert "Customer: my parcel is damaged" in ticket.fields["description"]
    assert await freshdesk.agent_reply(ticket.id, "Sorry about that, Ann.") == 200
    await until(lambda: sent_texts(bot_api, chat)[-1] == "Sorry about that, Ann.")

    # down again: what the customer writes is held, in order, until Freshdesk is back
    freshdesk.down()
    for number, text in enumerate(("the box was crushed", "and wet"), 95202):
        assert await post_update(client, update(number, text, chat=chat)) == 200
    await until(lambda: "a customer message is held" in caplog.text)
    await asyncio.sleep(2 * RETRY_SECONDS)
    assert ticket.incoming() == []
    freshdesk.down(False)
    await until(lambda: ticket.incoming() == ["<div>the box was crushed</div>",
                                              "<div>and wet</div>"])
    assert len([t for t in freshdesk.tickets.values()
                if f"(H-{handoff['id']}," in t.fields["subject"]]) == 1

    # an agent's reply while Freshdesk cannot be read is sent once it can
    ticket_replies = len(sent_texts(bot_api, chat))
    freshdesk._add(ticket, "<div>Refund on its way</div>", source=0, private=False,
                   incoming=False, user_id=fd.AGENT_ID)
    freshdesk.down()
    assert await freshdesk.fire("reply", ticket) == 200  # answered at once regardless
    await until(lambda: "could not be read" in caplog.text)
    assert len(sent_texts(bot_api, chat)) == ticket_replies
    freshdesk.down(False)
    await until(lambda: sent_texts(bot_api, chat)[-1] == "Refund on its way")


async def test_a_throttling_freshdesk_is_waited_for_as_its_retry_after_says(
        client: TestClient, bot_api: ProviderAPI, freshdesk: FreshdeskServer,
        caplog: pytest.LogCaptureFixture) -> None:
    chat = 9500004
    freshdesk.throttle(retry_after=3, times=1)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    handoff = await ask_for_a_person(client, bot_api, chat, 95300)
    await until(lambda: "HTTP 429" in caplog.text)
    throttled_at = time.monotonic()
    assert "offered again in 3 s" in caplog.text
    ticket = await in_freshdesk(freshdesk, handoff)
    assert time.monotonic() - throttled_at >= 2.5, "Retry-After was not waited for"
    assert [c for c in freshdesk.calls if c[1] == "/api/v2/tickets"] == [
        ("POST", "/api/v2/tickets", 429), ("POST", "/api/v2/tickets", 201)]
    assert ticket.fields["priority"] == 2


async def test_two_gateways_on_redis_share_the_handoff_and_create_one_ticket(
        rasa_stack: RasaStack, bot_api: ProviderAPI, freshdesk: FreshdeskServer,
        policy_dir: Path, redis_url: str) -> None:
    """Freshdesk is down when the customer asks; both gateways offer the handoff again,
    and once it is back it gets one ticket. Its webhooks reach the other gateway, which
    reads the ticket, sends the agent's reply and hands the customer back."""
    settings = dataclasses.replace(freshdesk_settings(rasa_stack.rasa_url, rasa_stack,
                                                      freshdesk), redis_url=redis_url)
    first, second = [await serve(settings, {"telegram": TelegramChannel(
        credentials(bot_api.url), load_channel_policy())}, freshdesk) for _ in range(2)]
    # Redis keeps Telegram's update ids between runs: one of ours not used before
    number = int(time.time()) % 400
    chat = 9500100 + number
    try:
        freshdesk.down()
        handoff = await ask_for_a_person(first, bot_api, chat, 95600 + number)
        await asyncio.sleep(3 * RETRY_SECONDS)
        freshdesk.down(False)
        ticket = await in_freshdesk(freshdesk, handoff)
        await asyncio.sleep(3 * RETRY_SECONDS)
        assert [t.fields["subject"] for t in freshdesk.tickets.values()].count(
            ticket.fields["subject"]) == 1
        assert len(ticket.notes(private=True)) == 1
        assert freshdesk.webhook_url.startswith(str(second.make_url("/")))
        assert await freshdesk.agent_reply(ticket.id, "Hello from Freshdesk") == 200
        await until(lambda: sent_texts(bot_api, chat)[-1] == "Hello from Freshdesk")
        assert await freshdesk.set_status(ticket.id, 4) == 200
        await until(lambda: "rate" in sent_texts(bot_api, chat)[-1])
    finally:
        await first.close()
        await second.close()


async def test_a_wrong_api_key_or_a_refused_ticket_keeps_the_handoff_and_says_why(
        rasa_stack: RasaStack, bot_api: ProviderAPI, freshdesk: FreshdeskServer,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Freshdesk's error codes and fields are logged, never what was sent."""
    policy_copy(tmp_path, monkeypatch, "freshdesk", groups={
        "logistics": 1, "returns_refunds": 2, "payments_fraud": 3, "general": 77})
    telegram = TelegramChannel(credentials(bot_api.url), load_channel_policy())
    revoked = freshdesk_settings(rasa_stack.rasa_url, rasa_stack, freshdesk, "revoked-key")
    client = await serve(revoked, {"telegram": telegram}, freshdesk)
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            handoff = await ask_for_a_person(client, bot_api, 9500005, 95400)
            await until(lambda: "HTTP 401 (invalid_credentials)" in caplog.text)
        assert handoff["status"] == "waiting" and not freshdesk.tickets
    finally:
        await client.close()
    settings = freshdesk_settings(rasa_stack.rasa_url, rasa_stack, freshdesk)
    telegram = TelegramChannel(credentials(bot_api.url), load_channel_policy())
    client = await serve(settings, {"telegram": telegram}, freshdesk)
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            await ask_for_a_person(client, bot_api, 9500006, 95410)
            await until(lambda: "HTTP 400 (group_id: invalid_value)" in caplog.text)
        assert not freshdesk.tickets
        assert "human" not in caplog.text and "Ann" not in caplog.text
    finally:
        await client.close()


async def test_erasing_a_customer_forgets_their_freshdesk_links_and_held_messages(
        client: TestClient, bot_api: ProviderAPI, freshdesk: FreshdeskServer,
        caplog: pytest.LogCaptureFixture) -> None:
    chat = 9500007
    handoff = await ask_for_a_person(client, bot_api, chat, 95500)
    ticket = await in_freshdesk(freshdesk, handoff)
    freshdesk.down()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert await post_update(client, update(95501, "my name is Ann Lee", chat=chat)) == 200
    await until(lambda: "a customer message is held" in caplog.text)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    contact = {"contact": f"telegram:{chat}"}
    held = await (await client.get("/api/privacy/export", params=contact,
                                   headers=admin)).json()
    assert [row["freshdesk_ticket_id"] for row in held["freshdesk_tickets"]] == [ticket.id]
    assert [row["content"] for row in held["freshdesk_held"]] == ["my name is Ann Lee"]
    erased = await client.post("/api/privacy/erase", json=contact, headers=admin)
    removed = (await erased.json())["removed"]
    assert (removed["freshdesk_tickets"], removed["freshdesk_held"]) == (1, 1)
    freshdesk.down(False)
    await asyncio.sleep(2 * RETRY_SECONDS)
    assert ticket.incoming() == [], "an erased customer's message went to Freshdesk"


async def test_whatsapp_and_sms_customers_are_requesters_by_phone_and_get_replies_there(
        rasa_stack: RasaStack, freshdesk: FreshdeskServer, graph: ProviderAPI,
        twilio_api: ProviderAPI, policy_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The bot is down, so both are handed to a person (reason bot_unavailable)."""
    policy = load_channel_policy()
    channels: Dict[str, Channel] = {
        "whatsapp": WhatsAppChannel(whatsapp_test.credentials(graph.url), policy),
        "twilio": TwilioChannel(TwilioCredentials(twilio_test.ACCOUNT_SID,
                                                  twilio_test.AUTH_TOKEN, twilio_api.url),
                                policy)}
    settings = freshdesk_settings(f"http://127.0.0.1:{free_port()}", rasa_stack, freshdesk)
    client = await serve(settings, channels, freshdesk, bot_retry_seconds=0.2)
    phone, sms = "16505550188", "+14155550188"
    caplog.set_level(logging.DEBUG, logger="bot")
    try:
        message = whatsapp_test.inbound("text", {"body": "my parcel is late"},
                                        wamid=f"wamid.FD{time.time_ns()}")
        message["from"] = phone
        assert await whatsapp_test.post_signed(client, whatsapp_test.notification([message])) \
            == 200
        fields = twilio_test.inbound(Body="where is my refund", From=sms,
                                     MessageSid=f"SM{time.time_ns():032d}"[:34])
        url = str(client.make_url("/webhooks/twilio"))
        response = await client.post("/webhooks/twilio", data=fields, headers={
            "X-Twilio-Signature": twilio_test.sign(url, fields)})
        assert response.status == 200
        for conversation_id, number, reply in (
                (f"whatsapp:{phone}", f"+{phone}", "WhatsApp reply from Maya"),
                (f"twilio:{sms}", sms, "SMS reply from Maya")):
            handoff = await open_handoff(client, conversation_id)
            assert handoff["reason_code"] == "bot_unavailable"
            ticket = await in_freshdesk(freshdesk, handoff)
            requester = freshdesk.contacts[ticket.requester_id]
            assert (requester["phone"], requester["unique_external_id"]) == (number, None)
            assert await freshdesk.agent_reply(ticket.id, reply) == 200
        await until(lambda: len(graph.calls(whatsapp_test.MESSAGES_PATH)) >= 2)
        whatsapp_sent = [r.json for r in graph.calls(whatsapp_test.MESSAGES_PATH)]
        assert whatsapp_sent[-1]["to"] == phone
        assert whatsapp_sent[-1]["text"]["body"] == "WhatsApp reply from Maya"
        await until(lambda: twilio_api.calls(twilio_test.MESSAGES_PATH)[-1].form["Body"]
                    == ["SMS reply from Maya"])
        sms_sent = twilio_api.calls(twilio_test.MESSAGES_PATH)[-1].form
        assert sms_sent["To"] == [sms]
        freshdesk_logs = "\n".join(r.getMessage() for r in caplog.records
                                   if r.name.startswith("bot.handoff"))
        assert phone not in freshdesk_logs and sms.lstrip("+") not in freshdesk_logs
    finally:
        await client.close()


async def test_with_requester_phone_off_phone_customers_are_an_id_of_ours(
        rasa_stack: RasaStack, freshdesk: FreshdeskServer, twilio_api: ProviderAPI,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy_copy(tmp_path, monkeypatch, "freshdesk", requester_phone=False)
    channels: Dict[str, Channel] = {"twilio": TwilioChannel(TwilioCredentials(
        twilio_test.ACCOUNT_SID, twilio_test.AUTH_TOKEN, twilio_api.url),
        load_channel_policy())}
    settings = freshdesk_settings(f"http://127.0.0.1:{free_port()}", rasa_stack, freshdesk)
    client = await serve(settings, channels, freshdesk, bot_retry_seconds=0.2)
    sms = "+14155550199"
    try:
        fields = twilio_test.inbound(Body="hello", From=sms,
                                     MessageSid=f"SM{time.time_ns():032d}"[:34])
        url = str(client.make_url("/webhooks/twilio"))
        assert (await client.post("/webhooks/twilio", data=fields, headers={
            "X-Twilio-Signature": twilio_test.sign(url, fields)})).status == 200
        ticket = await in_freshdesk(freshdesk, await open_handoff(client, f"twilio:{sms}"))
        requester = freshdesk.contacts[ticket.requester_id]
        assert requester["phone"] is None and requester["unique_external_id"].startswith("gw-")
        everything = str([freshdesk.contacts, [t.__dict__ for t in freshdesk.tickets.values()]])
        assert sms.lstrip("+") not in everything
    finally:
        await client.close()
