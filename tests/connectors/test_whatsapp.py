"""WhatsApp Cloud API connector: webhooks from Meta's documented payloads, and sends
checked against a local stand-in for the Graph API."""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Sequence

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient

from connectors.config import RateSettings, WhatsAppCredentials
from connectors.message import Attachment, Button, Delivery, Message, Reply
from connectors.outbound import PermanentError
from connectors.whatsapp import SERVICE_WINDOW_SECONDS, WhatsAppChannel
from tests.connectors.conftest import RecordingContext, channel_policy, serving
from tests.provider_api import ProviderAPI, RecordedRequest

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_SECRET = "app-secret-123"
VERIFY_TOKEN = "verify-me"
ACCESS_TOKEN = "EAAG-access-token"
PHONE_NUMBER_ID = "106540352242922"
CUSTOMER = "16505551234"
CONVERSATION = f"whatsapp:{CUSTOMER}"
MESSAGES_PATH = f"/v21.0/{PHONE_NUMBER_ID}/messages"



def credentials(base_url: str) -> WhatsAppCredentials:
    return WhatsAppCredentials(APP_SECRET, VERIFY_TOKEN, ACCESS_TOKEN, PHONE_NUMBER_ID,
                               f"{base_url}/v21.0")


@pytest_asyncio.fixture
async def channel(provider_api: ProviderAPI) -> AsyncIterator[WhatsAppChannel]:
    whatsapp = WhatsAppChannel(credentials(provider_api.url), channel_policy())
    await whatsapp.start()
    yield whatsapp
    await whatsapp.stop()


@pytest_asyncio.fixture
async def client(channel: WhatsAppChannel,
                 context: RecordingContext) -> AsyncIterator[TestClient]:
    async with serving(channel, context) as test_client:
        yield test_client


@pytest.fixture
def graph(provider_api: ProviderAPI) -> ProviderAPI:
    """The Graph API answering sends as documented, one wamid per request."""
    async def accepted(request: RecordedRequest) -> web.Response:
        number = len(provider_api.calls(MESSAGES_PATH))
        return web.json_response({
            "messaging_product": "whatsapp",
            "contacts": [{"input": request.json["to"], "wa_id": request.json["to"]}],
            "messages": [{"id": f"wamid.SENT{number}"}],
        })

    provider_api.answer("POST", MESSAGES_PATH, accepted)
    return provider_api


def window_open(context: RecordingContext) -> None:
    context.inbound_at[CONVERSATION] = time.time() - 60


def sent(api: ProviderAPI) -> List[Dict[str, Any]]:
    return [request.json for request in api.calls(MESSAGES_PATH)]


def meta_error(code: int, message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": {
        "message": message, "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": message},
        "fbtrace_id": "AazUuVu1Zb0BdwQ4hW2yq3A"}}, status=status)


# --- Meta's webhook payloads -----------------------------------------------------------

def notification(messages: Sequence[Dict[str, Any]] = (),
                 statuses: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    value: Dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881",
                     "phone_number_id": PHONE_NUMBER_ID},
    }
    if messages:
        value["contacts"] = [{"profile": {"name": "Sheena Nelson"}, "wa_id": CUSTOMER}]
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    return {"object": "whatsapp_business_account", "entry": [
        {"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}]}


def inbound(kind: str, content: Dict[str, Any], wamid: str = "wamid.HBgLMTY1MDM4NzkZ") \
        -> Dict[str, Any]:
    return {"from": CUSTOMER, "id": wamid, "timestamp": str(int(time.time())),
            "type": kind, kind: content}


def status(state: str, wamid: str = "wamid.SENT1", **extra: Any) -> Dict[str, Any]:
    return {"id": wamid, "status": state, "timestamp": "1750263773",
            "recipient_id": CUSTOMER, **extra}


def signature(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_signed(client: TestClient, payload: Any) -> int:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = await client.post("/webhooks/whatsapp", data=body, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": signature(body)})
    return response.status


# --- subscription handshake ------------------------------------------------------------

async def test_handshake_answers_the_challenge(client: TestClient) -> None:
    response = await client.get("/webhooks/whatsapp", params={
        "hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444"})
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert await response.text() == "1158201444"


@pytest.mark.parametrize("params", [
    {"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"},
    {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
    {"hub.challenge": "1"},
])
async def test_handshake_refused(client: TestClient, params: Dict[str, str]) -> None:
    response = await client.get("/webhooks/whatsapp", params=params)
    assert response.status == 403
    assert await response.text() != "1"


# --- signatures and malformed bodies ---------------------------------------------------

async def test_signed_text_message_is_accepted(client: TestClient,
                                               context: RecordingContext) -> None:
    payload = notification([inbound("text", {"body": "Where is my order?"},
                                    wamid="wamid.TEXT1")])
    assert await post_signed(client, payload) == 200
    [message] = context.accepted
    assert (message.connector, message.channel, message.sender) == \
        ("whatsapp", "whatsapp", CUSTOMER)
    assert message.message_id == "wamid.TEXT1"
    assert message.text == "Where is my order?"
    assert message.profile_name == "Sheena Nelson"
    assert message.store_address == PHONE_NUMBER_ID
    assert message.conversation_id == CONVERSATION
    # the wa_id is the number WhatsApp verified: proof of identity for the bot
    assert message.proven_phone == f"+{CUSTOMER}"


@pytest.mark.parametrize("header", [
    "sha256=" + "0" * 64,
    signature(b"{}", secret="not-the-app-secret"),
    "sha1=abc",
    "sha256=ünïcode",
    None,
])
async def test_forged_or_missing_signature_is_refused(
        client: TestClient, context: RecordingContext, header: str | None) -> None:
    body = json.dumps(notification([inbound("text", {"body": "hi"})])).encode()
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["X-Hub-Signature-256"] = header
    response = await client.post("/webhooks/whatsapp", data=body, headers=headers)
    assert response.status == 403
    assert context.accepted == []


async def test_signature_over_a_different_body_is_refused(
        client: TestClient, context: RecordingContext) -> None:
    signed = json.dumps(notification([inbound("text", {"body": "hi"})])).encode()
    tampered = json.dumps(notification([inbound("text", {"body": "refund me"})])).encode()
    response = await client.post("/webhooks/whatsapp", data=tampered, headers={
        "X-Hub-Signature-256": signature(signed)})
    assert response.status == 403
    assert context.accepted == []


async def test_signature_checked_before_parsing(client: TestClient) -> None:
    response = await client.post("/webhooks/whatsapp", data=b"{not json",
                                 headers={"X-Hub-Signature-256": "sha256=00"})
    assert response.status == 403


@pytest.mark.parametrize("body", [
    b"{not json",
    b"\xff\xfe",
    b"[]",
    json.dumps({"object": "whatsapp_business_account", "entry": "nope"}).encode(),
    json.dumps({"object": "page", "entry": []}).encode(),
    json.dumps(notification([{"id": "wamid.X", "type": "text"}])).encode(),  # no "from"
    json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {"messages": []}}]}]}).encode(),  # no metadata
])
async def test_malformed_body_is_400(client: TestClient, context: RecordingContext,
                                     body: bytes) -> None:
    assert await post_signed(client, body) == 400
    assert context.accepted == []


async def test_other_webhook_fields_are_acknowledged(client: TestClient,
                                                     context: RecordingContext) -> None:
    payload = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "message_template_status_update",
         "value": {"event": "APPROVED", "message_template_name": "support_follow_up"}}]}]}
    assert await post_signed(client, payload) == 200
    assert context.accepted == [] and context.statuses == []


# --- message types ---------------------------------------------------------------------

async def test_button_reply_gives_the_payload(client: TestClient,
                                              context: RecordingContext) -> None:
    payload = notification([inbound("interactive", {
        "type": "button_reply",
        "button_reply": {"id": "/order_status", "title": "Where is my order"}})])
    assert await post_signed(client, payload) == 200
    assert context.accepted[0].text == "/order_status"


async def test_list_reply_gives_the_payload(client: TestClient,
                                            context: RecordingContext) -> None:
    payload = notification([inbound("interactive", {
        "type": "list_reply",
        "list_reply": {"id": "/return_item", "title": "Return an item",
                       "description": "Start a return"}})])
    assert await post_signed(client, payload) == 200
    assert context.accepted[0].text == "/return_item"


async def test_template_quick_reply_gives_the_payload(client: TestClient,
                                                      context: RecordingContext) -> None:
    payload = notification([inbound("button", {"payload": "/human_handoff",
                                               "text": "Talk to a person"})])
    assert await post_signed(client, payload) == 200
    assert context.accepted[0].text == "/human_handoff"


async def test_image_with_caption(client: TestClient, context: RecordingContext,
                                  channel: WhatsAppChannel) -> None:
    payload = notification([inbound("image", {
        "caption": "It arrived broken", "mime_type": "image/jpeg",
        "sha256": "HgPqDRmQ+qyX5wGTwBvk1lDwbAmk2hL9a4Kv7jiM1Uc=", "id": "1003383421387256"})])
    assert await post_signed(client, payload) == 200
    [message] = context.accepted
    assert message.text == "It arrived broken"
    assert message.attachments == (Attachment(
        "image", f"{channel.credentials.api_base_url}/1003383421387256", "image/jpeg",
        "It arrived broken"),)


async def test_location_becomes_a_geo_attachment(client: TestClient,
                                                 context: RecordingContext) -> None:
    payload = notification([inbound("location", {
        "latitude": 52.52, "longitude": 13.405, "name": "Home",
        "address": "Unter den Linden 1"})])
    assert await post_signed(client, payload) == 200
    [message] = context.accepted
    assert message.attachments == (Attachment("location", "geo:52.52,13.405",
                                              caption="Home"),)


async def test_unsupported_type_is_acknowledged_and_skipped(
        client: TestClient, context: RecordingContext) -> None:
    payload = notification([
        inbound("sticker", {"mime_type": "image/webp", "id": "1"}, wamid="wamid.STICKER"),
        inbound("text", {"body": "hello"}, wamid="wamid.AFTER")])
    assert await post_signed(client, payload) == 200
    assert [m.message_id for m in context.accepted] == ["wamid.AFTER"]


async def test_duplicate_wamid_is_accepted_once(client: TestClient,
                                                context: RecordingContext) -> None:
    payload = notification([inbound("text", {"body": "Where is my order?"},
                                    wamid="wamid.DUP")])
    assert await post_signed(client, payload) == 200
    assert await post_signed(client, payload) == 200
    assert [m.message_id for m in context.accepted] == ["wamid.DUP"]


async def test_number_maps_back_to_a_text_option(client: TestClient,
                                                 context: RecordingContext) -> None:
    context.options[CONVERSATION] = [Button(f"Option {n}", f"/pick{n}") for n in range(12)]
    payload = notification([inbound("text", {"body": " 3. "})])
    assert await post_signed(client, payload) == 200
    assert context.accepted[0].text == "/pick2"


async def test_button_id_is_not_mapped_as_a_number(client: TestClient,
                                                   context: RecordingContext) -> None:
    context.options[CONVERSATION] = [Button("A", "/a"), Button("B", "/b")]
    payload = notification([inbound("interactive", {
        "type": "button_reply", "button_reply": {"id": "1", "title": "One"}})])
    assert await post_signed(client, payload) == 200
    assert context.accepted[0].text == "1"


async def test_statuses_are_recorded(client: TestClient, context: RecordingContext) -> None:
    failure = {"code": 131047, "title": "Re-engagement message",
               "message": "Re-engagement message",
               "error_data": {"details": "Message failed to send because more than 24 hours "
                                         "have passed since the customer last replied."}}
    payload = notification(statuses=[
        status("sent"), status("delivered"), status("read"),
        status("failed", wamid="wamid.SENT2", errors=[failure])])
    assert await post_signed(client, payload) == 200
    assert [(s.provider_message_id, s.status) for s in context.statuses] == [
        ("wamid.SENT1", "sent"), ("wamid.SENT1", "delivered"), ("wamid.SENT1", "read"),
        ("wamid.SENT2", "failed")]
    assert all(s.connector == "whatsapp" and s.recipient == CUSTOMER
               for s in context.statuses)
    assert context.statuses[0].at == 1750263773.0
    assert context.statuses[0].error == ""
    assert context.statuses[3].error.startswith("131047 Re-engagement message: ")
    assert "more than 24 hours" in context.statuses[3].error


# --- outbound rendering ----------------------------------------------------------------

def envelope(**payload: Any) -> Dict[str, Any]:
    return {"messaging_product": "whatsapp", "recipient_type": "individual",
            "to": CUSTOMER, **payload}


async def test_text_is_sent_exactly(channel: WhatsAppChannel, context: RecordingContext,
                                    graph: ProviderAPI) -> None:
    window_open(context)
    deliveries = await channel.send(CUSTOMER, [Reply("Your order ships today.")], context)
    assert deliveries == [Delivery("sent", "wamid.SENT1", attempts=1)]
    [request] = graph.calls(MESSAGES_PATH)
    assert request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert request.json == envelope(type="text", text={"body": "Your order ships today."})


async def test_three_buttons_become_reply_buttons(channel: WhatsAppChannel,
                                                  context: RecordingContext,
                                                  graph: ProviderAPI) -> None:
    window_open(context)
    buttons = (Button("Yes", "/affirm"), Button("No", "/deny"),
               Button("Talk to a person please", "/human_handoff"))
    await channel.send(CUSTOMER, [Reply("Did that help?", buttons)], context)
    assert sent(graph) == [envelope(type="interactive", interactive={
        "type": "button",
        "body": {"text": "Did that help?"},
        "action": {"buttons": [
            {"type": "reply", "reply": {"id": "/affirm", "title": "Yes"}},
            {"type": "reply", "reply": {"id": "/deny", "title": "No"}},
            {"type": "reply", "reply": {"id": "/human_handoff",
                                        "title": "Talk to a person pl…"}},
        ]}})]
    title = sent(graph)[0]["interactive"]["action"]["buttons"][2]["reply"]["title"]
    assert len(title) == 20


async def test_five_options_become_a_list(channel: WhatsAppChannel,
                                          context: RecordingContext,
                                          graph: ProviderAPI) -> None:
    window_open(context)
    titles = ["Order status", "Delivery problem", "Return an item", "Refund status",
              "Change my delivery address please"]
    buttons = tuple(Button(title, f"/choice{n}") for n, title in enumerate(titles))
    await channel.send(CUSTOMER, [Reply("How can I help?", buttons)], context)
    rows = [{"id": f"/choice{n}", "title": title} for n, title in enumerate(titles[:4])]
    rows.append({"id": "/choice4", "title": "Change my delivery addr…",
                 "description": "Change my delivery address please"})
    assert sent(graph) == [envelope(type="interactive", interactive={
        "type": "list",
        "body": {"text": "How can I help?"},
        "action": {"button": "Choose", "sections": [{"rows": rows}]}})]
    assert context.options == {}


async def test_more_than_ten_options_become_numbered_text(channel: WhatsAppChannel,
                                                          context: RecordingContext,
                                                          graph: ProviderAPI) -> None:
    window_open(context)
    buttons = tuple(Button(f"Store {n}", f"/store{n}") for n in range(1, 12))
    await channel.send(CUSTOMER, [Reply("Which store?", buttons)], context)
    [request] = sent(graph)
    body = request["text"]["body"]
    assert body.startswith("Which store?\n\nReply with a number:\n1. Store 1\n")
    assert body.endswith("11. Store 11")
    assert context.options[CONVERSATION] == list(buttons)


async def test_long_text_is_split_at_sentences(channel: WhatsAppChannel,
                                               context: RecordingContext,
                                               graph: ProviderAPI) -> None:
    window_open(context)
    sentence = "Your parcel left our warehouse and is on its way to you. "
    text = (sentence * 100).strip()  # 5,700 characters
    deliveries = await channel.send(CUSTOMER, [Reply(text)], context)
    bodies = [request["text"]["body"] for request in sent(graph)]
    assert len(bodies) == 2 and len(deliveries) == 2
    assert all(len(body) <= 4096 for body in bodies)
    assert all(body.endswith("to you.") for body in bodies)
    assert " ".join(bodies) == text


async def test_long_text_with_buttons_sends_the_lead_as_text(channel: WhatsAppChannel,
                                                             context: RecordingContext,
                                                             graph: ProviderAPI) -> None:
    window_open(context)
    text = ("We are sorry about the delay. " * 40) + "Shall I open a claim?"
    await channel.send(CUSTOMER, [Reply(text, (Button("Yes", "/affirm"),))], context)
    first, second = sent(graph)
    assert first["type"] == "text"
    assert second["interactive"]["body"]["text"].endswith("Shall I open a claim?")
    assert len(second["interactive"]["body"]["text"]) <= 1024
    assert f'{first["text"]["body"]} {second["interactive"]["body"]["text"]}' == text


async def test_image_is_sent_by_link(channel: WhatsAppChannel, context: RecordingContext,
                                     graph: ProviderAPI) -> None:
    window_open(context)
    await channel.send(CUSTOMER, [
        Reply(image_url="https://shop.example/label.png"),
        Reply("Your return label", image_url="https://shop.example/label2.png")], context)
    assert sent(graph) == [
        envelope(type="image", image={"link": "https://shop.example/label.png"}),
        envelope(type="image", image={"link": "https://shop.example/label2.png",
                                      "caption": "Your return label"})]


async def test_image_with_buttons_goes_before_them(channel: WhatsAppChannel,
                                                   context: RecordingContext,
                                                   graph: ProviderAPI) -> None:
    window_open(context)
    await channel.send(CUSTOMER, [Reply("Is this the item?", (Button("Yes", "/affirm"),),
                                        image_url="https://shop.example/item.png")], context)
    assert [request["type"] for request in sent(graph)] == ["image", "interactive"]


# --- the 24-hour window and opt-out ----------------------------------------------------

@pytest.mark.parametrize("last_inbound", [None, SERVICE_WINDOW_SECONDS + 60])
async def test_window_closed_sends_only_the_template(
        channel: WhatsAppChannel, context: RecordingContext, graph: ProviderAPI,
        last_inbound: float | None) -> None:
    if last_inbound is not None:
        context.inbound_at[CONVERSATION] = time.time() - last_inbound
    deliveries = await channel.send(CUSTOMER, [
        Reply("Your refund was approved."), Reply("Anything else?", (Button("No", "/deny"),))],
        context)
    assert sent(graph) == [envelope(type="template", template={
        "name": "support_follow_up", "language": {"code": "en_US"}})]
    assert deliveries == [
        Delivery("sent", "wamid.SENT1", attempts=1, template="support_follow_up"),
        Delivery("blocked", error="outside the 24-hour window"),
        Delivery("blocked", error="outside the 24-hour window")]


async def test_an_answer_takes_the_window_from_the_message_it_answers(
        channel: WhatsAppChannel, context: RecordingContext, graph: ProviderAPI) -> None:
    """No lookup of the customer's last message (the context knows none here, which
    would close the window): the answered one was written just now."""
    wrote = Message(connector="whatsapp", channel="whatsapp", sender=CUSTOMER,
                    message_id="wamid.IN1", text="where is my order?")
    [delivery] = await channel.send(CUSTOMER, [Reply("On its way.")], context,
                                    answering=wrote)
    assert delivery.status == "sent"
    assert sent(graph) == [envelope(type="text", text={"body": "On its way."})]


async def test_opted_out_customer_gets_nothing(channel: WhatsAppChannel,
                                               context: RecordingContext,
                                               graph: ProviderAPI) -> None:
    window_open(context)
    context.opted_out[("whatsapp", CUSTOMER)] = time.time()
    deliveries = await channel.send(CUSTOMER, [Reply("hello")], context)
    assert [d.status for d in deliveries] == ["blocked"]
    assert graph.requests == []


# --- failures, retries and rates -------------------------------------------------------

async def test_429_is_retried_then_sent(channel: WhatsAppChannel, context: RecordingContext,
                                        graph: ProviderAPI) -> None:
    window_open(context)
    graph.fail_next("POST", MESSAGES_PATH, web.Response(status=429, headers={
        "Retry-After": "0"}), web.Response(status=500))
    [delivery] = await channel.send(CUSTOMER, [Reply("hello")], context)
    assert delivery.status == "sent" and delivery.attempts == 3
    assert delivery.provider_message_id == "wamid.SENT3"
    assert len(sent(graph)) == 3 and all(r == sent(graph)[0] for r in sent(graph))


async def test_pair_rate_limit_with_http_400_is_retried(channel: WhatsAppChannel,
                                                        context: RecordingContext,
                                                        graph: ProviderAPI) -> None:
    window_open(context)
    graph.fail_next("POST", MESSAGES_PATH, meta_error(
        131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit"))
    [delivery] = await channel.send(CUSTOMER, [Reply("hello")], context)
    assert (delivery.status, delivery.attempts) == ("sent", 2)


async def test_permanent_error_is_recorded_failed(channel: WhatsAppChannel,
                                                  context: RecordingContext,
                                                  graph: ProviderAPI) -> None:
    window_open(context)
    graph.fail_next("POST", MESSAGES_PATH, meta_error(131026, "Message Undeliverable."))
    [delivery] = await channel.send(CUSTOMER, [Reply("hello")], context)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert delivery.error == "HTTP 400 code 131026: Message Undeliverable."
    assert len(sent(graph)) == 1


async def test_unreachable_api_fails_after_every_attempt(context: RecordingContext) -> None:
    whatsapp = WhatsAppChannel(credentials("http://127.0.0.1:9"), channel_policy())
    await whatsapp.start()  # must not need the provider
    window_open(context)
    try:
        [delivery] = await whatsapp.send(CUSTOMER, [Reply("hello")], context)
    finally:
        await whatsapp.stop()
    assert delivery.status == "failed" and delivery.attempts == 5


async def test_per_recipient_rate_is_respected(provider_api: ProviderAPI, graph: ProviderAPI,
                                               context: RecordingContext) -> None:
    whatsapp = WhatsAppChannel(credentials(provider_api.url), channel_policy(
        whatsapp_per_recipient=RateSettings(per_second=10, burst=1)))
    await whatsapp.start()
    window_open(context)
    started = time.monotonic()
    try:
        await whatsapp.send(CUSTOMER, [Reply("one"), Reply("two"), Reply("three")], context)
    finally:
        await whatsapp.stop()
    assert time.monotonic() - started >= 0.18
    assert len(sent(graph)) == 3


async def test_media_is_downloaded_through_its_short_lived_url(
        channel: WhatsAppChannel, provider_api: ProviderAPI) -> None:
    """Graph API "Retrieve Media URL": GET /{media-id} gives {url, mime_type, ...}; the
    file at that url needs the same access token."""
    bearer = f"Bearer {ACCESS_TOKEN}"

    async def media_url(request: RecordedRequest) -> web.Response:
        return web.json_response({
            "messaging_product": "whatsapp", "url": f"{provider_api.url}/lookaside/ME7",
            "mime_type": "image/jpeg", "sha256": "x", "file_size": 9, "id": "1003383421387256"})

    async def media_file(request: RecordedRequest) -> web.Response:
        if request.headers.get("Authorization") != bearer:
            return web.Response(status=401)
        return web.Response(body=b"\xff\xd8broken", content_type="image/jpeg")

    provider_api.answer("GET", "/v21.0/1003383421387256", media_url)
    provider_api.answer("GET", "/lookaside/ME7", media_file)
    reference = f"{channel.credentials.api_base_url}/1003383421387256"
    assert await channel.download(reference) == b"\xff\xd8broken"
    assert provider_api.calls("/v21.0/1003383421387256")[0].headers["Authorization"] == bearer
    with pytest.raises(PermanentError):
        await channel.download("https://elsewhere.example/v21.0/1003383421387256")
