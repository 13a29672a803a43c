"""The Twilio connector against Twilio's documented webhook fields and a local server
that answers like the Messages API (201 with the message resource, error JSON)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Dict, List, Optional

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from twilio.request_validator import RequestValidator

from connectors.config import ChannelPolicy, RateSettings, TwilioCredentials
from connectors.message import Attachment, Button, Message, Reply
from connectors.outbound import PermanentError
from connectors.twilio import TwilioChannel
from tests.connectors.conftest import RecordingContext, channel_policy
from tests.provider_api import ProviderAPI, RecordedRequest, answer_twilio_messages

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f" * 32
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
CUSTOMER = "+15558675310"
STORE = "+15017122661"
WA_CUSTOMER = "whatsapp:+14155238886"
WA_STORE = "whatsapp:+15005550006"
PUBLIC = "https://support.example.com"
MEDIA = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM1/Media"



def inbound(**fields: str) -> Dict[str, str]:
    """An inbound SMS as Twilio documents its webhook fields; override any field."""
    base = {
        "ToCountry": "US", "ToState": "CA", "SmsMessageSid": "SM1", "NumMedia": "0",
        "ToCity": "", "FromZip": "", "SmsSid": "SM1", "FromState": "CA",
        "SmsStatus": "received", "FromCity": "", "Body": "where is my order?",
        "FromCountry": "US", "To": STORE, "ToZip": "", "NumSegments": "1",
        "MessageSid": "SM1", "AccountSid": ACCOUNT_SID, "From": CUSTOMER,
        "ApiVersion": "2010-04-01",
    }
    base.update(fields)
    return base


def whatsapp_inbound(**fields: str) -> Dict[str, str]:
    return inbound(**{"From": WA_CUSTOMER, "To": WA_STORE, "ProfileName": "Ada",
                      "WaId": "14155238886", "MessageType": "text", **fields})


def sign(url: str, fields: Dict[str, str]) -> str:
    return RequestValidator(AUTH_TOKEN).compute_signature(url, fields)


@dataclass
class Harness:
    channel: TwilioChannel
    client: TestClient
    context: RecordingContext
    api: ProviderAPI

    async def post(self, fields: Dict[str, str], *, signature: Optional[str] = None,
                   path: str = "/webhooks/twilio") -> aiohttp.ClientResponse:
        """POST form fields, signed for the test server's own URL unless told."""
        if signature is None:
            signature = sign(str(self.client.make_url(path)), fields)
        headers = {"X-Twilio-Signature": signature} if signature else {}
        return await self.client.post(path, data=fields, headers=headers)

    async def send(self, recipient: str, *replies: Reply) -> List:
        return await self.channel.send(recipient, replies, self.context)

    def messages_api(self) -> List[RecordedRequest]:
        return self.api.calls(MESSAGES_PATH)


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest_asyncio.fixture
async def make_harness(provider_api: ProviderAPI,
                       context: RecordingContext) -> AsyncIterator[MakeHarness]:
    opened: List[tuple[TwilioChannel, TestClient]] = []
    answer_twilio_messages(provider_api, ACCOUNT_SID)

    async def make(public_base_url: str = "", policy: Optional[ChannelPolicy] = None,
                   ) -> Harness:
        credentials = TwilioCredentials(ACCOUNT_SID, AUTH_TOKEN, provider_api.url)
        channel = TwilioChannel(credentials, policy or channel_policy(), public_base_url)
        app = web.Application()
        channel.install(app, context)
        client = TestClient(TestServer(app))
        await client.start_server()
        await channel.start()
        opened.append((channel, client))
        return Harness(channel, client, context, provider_api)

    yield make
    for channel, client in opened:
        await channel.stop()
        await client.close()


@pytest_asyncio.fixture
async def harness(make_harness: MakeHarness) -> Harness:
    return await make_harness()


# -- inbound: signature and account ----------------------------------------------------

async def test_signed_sms_is_accepted_and_answered_with_empty_twiml(harness: Harness) -> None:
    response = await harness.post(inbound())

    assert response.status == 200
    assert response.content_type == "text/xml"
    assert (await response.text()).endswith("<Response/>")
    assert harness.context.accepted == [Message(
        connector="twilio", channel="sms", sender=CUSTOMER, message_id="SM1",
        text="where is my order?", store_address=STORE,
        received_at=harness.context.accepted[0].received_at)]
    assert harness.context.accepted[0].conversation_id == f"twilio:{CUSTOMER}"


async def test_whatsapp_sender_marks_the_whatsapp_channel(harness: Harness) -> None:
    response = await harness.post(whatsapp_inbound(Body="hi"))

    assert response.status == 200
    (message,) = harness.context.accepted
    assert message.channel == "whatsapp"
    assert message.conversation_id == f"twilio:{WA_CUSTOMER}"
    assert message.store_address == WA_STORE
    assert message.profile_name == "Ada"
    # WhatsApp verified the number: the bot may take it as proof of identity
    assert message.proven_phone == "+14155238886"


@pytest.mark.parametrize("signature", [
    "",                                               # missing
    "dGhpcyBpcyBub3QgYSBzaWduYXR1cmU=",               # forged
    sign("https://elsewhere.example/webhooks/twilio", inbound()),  # for another URL
])
async def test_missing_or_forged_signature_is_refused(harness: Harness, signature: str) -> None:
    response = await harness.post(inbound(), signature=signature)

    assert response.status == 403
    assert harness.context.accepted == []


async def test_tampered_fields_break_the_signature(harness: Harness) -> None:
    signed = sign(str(harness.client.make_url("/webhooks/twilio")), inbound())

    response = await harness.post(inbound(Body="refund me twice"), signature=signed)

    assert response.status == 403
    assert harness.context.accepted == []


async def test_another_accounts_message_is_refused(harness: Harness) -> None:
    response = await harness.post(inbound(AccountSid="AC" + "9" * 32))

    assert response.status == 403
    assert harness.context.accepted == []


async def test_public_base_url_is_what_the_signature_covers(
        make_harness: MakeHarness) -> None:
    proxied = await make_harness(public_base_url=PUBLIC + "/")
    fields = inbound()
    path = "/webhooks/twilio?store=eu"
    local_url = str(proxied.client.make_url(path))
    assert not local_url.startswith(PUBLIC)

    refused = await proxied.post(fields, path=path, signature=sign(local_url, fields))
    accepted = await proxied.post(fields, path=path, signature=sign(PUBLIC + path, fields))

    assert refused.status == 403
    assert accepted.status == 200
    assert [m.message_id for m in proxied.context.accepted] == ["SM1"]


# -- inbound: parsing --------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    {"MessageSid": ""},
    {"From": ""},
    {"NumMedia": "two"},
    {"NumMedia": "-1"},
    {"NumMedia": "2", "MediaUrl0": "https://api.twilio.com/media/ME1"},  # MediaUrl1 missing
    {"Latitude": "north", "Longitude": "-122.4"},
])
async def test_malformed_message_is_refused_with_400(harness: Harness,
                                                     fields: Dict[str, str]) -> None:
    response = await harness.post(inbound(**fields))

    assert response.status == 400
    assert harness.context.accepted == []


async def test_non_form_body_is_refused(harness: Harness) -> None:
    response = await harness.client.post("/webhooks/twilio", json=inbound(),
                                        headers={"X-Twilio-Signature": "x"})

    assert response.status == 400


async def test_duplicate_delivery_is_acknowledged_but_accepted_once(harness: Harness) -> None:
    first = await harness.post(inbound())
    again = await harness.post(inbound())

    assert (first.status, again.status) == (200, 200)
    assert len(harness.context.accepted) == 1


async def test_media_become_attachments_by_content_type(harness: Harness) -> None:
    media = {"NumMedia": "4", "Body": ""}
    types = ["image/jpeg", "video/mp4", "audio/ogg", "application/pdf"]
    for index, mime_type in enumerate(types):
        media[f"MediaUrl{index}"] = f"{MEDIA}/ME{index}"
        media[f"MediaContentType{index}"] = mime_type

    response = await harness.post(whatsapp_inbound(**media))

    assert response.status == 200
    (message,) = harness.context.accepted
    assert message.text == ""
    assert message.attachments == (
        Attachment("image", f"{MEDIA}/ME0", "image/jpeg"),
        Attachment("video", f"{MEDIA}/ME1", "video/mp4"),
        Attachment("audio", f"{MEDIA}/ME2", "audio/ogg"),
        Attachment("file", f"{MEDIA}/ME3", "application/pdf"),
    )


async def test_shared_location_becomes_a_location_attachment(harness: Harness) -> None:
    await harness.post(whatsapp_inbound(Body="", MessageType="location", Latitude="37.7749",
                                       Longitude="-122.4194", Address="1 Market St"))

    (message,) = harness.context.accepted
    assert message.attachments == (
        Attachment("location", "geo:37.7749,-122.4194", caption="1 Market St"),)


async def test_quick_reply_button_carries_its_payload(harness: Harness) -> None:
    await harness.post(whatsapp_inbound(Body="Track my order", ButtonText="Track my order",
                                       ButtonPayload="/order_status", MessageType="button"))

    assert [m.text for m in harness.context.accepted] == ["/order_status"]


async def test_a_number_answers_the_offered_options(harness: Harness) -> None:
    offered = [Button("Track order", "/order_status"), Button("Return", "/return_item")]
    harness.context.options[f"twilio:{CUSTOMER}"] = offered

    await harness.post(inbound(MessageSid="SM1", Body=" 2 "))
    await harness.post(inbound(MessageSid="SM2", Body="7"))          # not an option
    await harness.post(inbound(MessageSid="SM3", From="+15550000000", Body="2"))  # not offered

    assert [m.text for m in harness.context.accepted] == ["/return_item", "7", "2"]


async def test_message_with_nothing_to_read_is_acknowledged_not_forwarded(
        harness: Harness) -> None:
    response = await harness.post(whatsapp_inbound(Body="", MessageType="unsupported"))

    assert response.status == 200
    assert harness.context.accepted == []


# -- opt-out -------------------------------------------------------------------------------

@pytest.mark.parametrize("keyword", ["STOP", " stop ", "Unsubscribe", "cancel", "END", "quit",
                                     "STOPALL", "revoke", "OPTOUT"])
async def test_opt_out_keyword_opts_out_and_is_not_forwarded(harness: Harness,
                                                             keyword: str) -> None:
    response = await harness.post(inbound(Body=keyword))

    assert response.status == 200
    assert (await response.text()).endswith("<Response/>")  # Twilio confirms, not us
    assert set(harness.context.opted_out) == {("twilio", CUSTOMER)}
    assert harness.context.accepted == []


@pytest.mark.parametrize("text", ["stop please", "HELP", "yes"])
async def test_other_texts_are_forwarded_as_usual(harness: Harness, text: str) -> None:
    await harness.post(inbound(Body=text))

    assert not harness.context.opted_out
    assert [m.text for m in harness.context.accepted] == [text]


@pytest.mark.parametrize("keyword", ["START", "unstop", "Yes"])
async def test_opt_in_keyword_opts_back_in(harness: Harness, keyword: str) -> None:
    await harness.post(inbound(MessageSid="SM1", Body="STOP"))
    await harness.post(inbound(MessageSid="SM2", Body=keyword))

    assert not harness.context.opted_out
    assert harness.context.accepted == []


async def test_advanced_opt_out_type_is_honoured_for_custom_keywords(harness: Harness) -> None:
    await harness.post(inbound(Body="BASTA", OptOutType="STOP"))

    assert set(harness.context.opted_out) == {("twilio", CUSTOMER)}
    assert harness.context.accepted == []


async def test_opted_out_recipient_is_blocked_without_calling_twilio(harness: Harness) -> None:
    await harness.post(inbound(MessageSid="SM1", Body="hello"))
    await harness.post(inbound(MessageSid="SM2", Body="STOP"))

    blocked = await harness.send(CUSTOMER, Reply("Your order shipped."), Reply("Anything else?"))

    assert [d.status for d in blocked] == ["blocked", "blocked"]
    assert harness.api.requests == []

    await harness.post(inbound(MessageSid="SM3", Body="START"))
    resumed = await harness.send(CUSTOMER, Reply("Welcome back."))

    assert [d.status for d in resumed] == ["sent"]
    assert len(harness.messages_api()) == 1


# -- outbound ------------------------------------------------------------------------------

async def test_start_does_not_call_twilio(harness: Harness) -> None:
    assert harness.api.requests == []


async def test_an_answer_comes_from_the_store_number_the_customer_wrote_to(
        harness: Harness) -> None:
    """Taken from the answered message, not looked up (the context knows none here)."""
    wrote = Message(connector="twilio", channel="whatsapp", sender=WA_CUSTOMER,
                    message_id="SM1", text="where is my order?", store_address=WA_STORE)
    [delivery] = await harness.channel.send(WA_CUSTOMER, [Reply("On its way.")],
                                            harness.context, answering=wrote)
    assert delivery.status == "sent"
    assert [r.form["From"] for r in harness.messages_api()] == [[WA_STORE]]


async def test_reply_is_posted_from_the_store_number_with_basic_auth(harness: Harness) -> None:
    await harness.post(inbound())

    deliveries = await harness.send(
        CUSTOMER, Reply("Here is your parcel.", image_url="https://shop.example/p.jpg"))

    (request,) = harness.messages_api()
    assert request.method == "POST"
    assert request.headers["Authorization"] == aiohttp.BasicAuth(
        ACCOUNT_SID, AUTH_TOKEN).encode()
    assert request.form == {"To": [CUSTOMER], "From": [STORE],
                            "Body": ["Here is your parcel."],
                            "MediaUrl": ["https://shop.example/p.jpg"]}
    (delivery,) = deliveries
    assert (delivery.status, delivery.attempts) == ("sent", 1)
    assert delivery.provider_message_id == f"SM{1:032x}"


async def test_image_without_text_is_sent_without_body(harness: Harness) -> None:
    await harness.post(whatsapp_inbound())

    await harness.send(WA_CUSTOMER, Reply(image_url="https://shop.example/p.jpg"))

    assert [r.form for r in harness.messages_api()] == [
        {"To": [WA_CUSTOMER], "From": [WA_STORE], "MediaUrl": ["https://shop.example/p.jpg"]}]


async def test_status_callback_is_requested_when_public_url_is_known(
        make_harness: MakeHarness) -> None:
    proxied = await make_harness(public_base_url=PUBLIC)
    proxied.context.store_addresses[f"twilio:{CUSTOMER}"] = STORE

    await proxied.send(CUSTOMER, Reply("ok"))

    (request,) = proxied.messages_api()
    assert request.form["StatusCallback"] == [PUBLIC + "/webhooks/twilio/status"]


async def test_no_store_number_fails_without_calling_twilio(harness: Harness) -> None:
    deliveries = await harness.send(CUSTOMER, Reply("hello"))

    assert [d.status for d in deliveries] == ["failed"]
    assert "store number" in deliveries[0].error
    assert harness.api.requests == []


async def test_buttons_become_numbered_options_and_the_answer_maps_back(
        harness: Harness) -> None:
    await harness.post(inbound(MessageSid="SM1"))
    buttons = (Button("Track my order", "/order_status"), Button("Start a return",
                                                                  "/return_item"))

    await harness.send(CUSTOMER, Reply("What would you like to do?", buttons=buttons))
    await harness.post(inbound(MessageSid="SM2", Body="2"))

    (request,) = harness.messages_api()
    assert request.form["Body"] == ["What would you like to do?\n\nReply with a number:\n"
                                    "1. Track my order\n2. Start a return"]
    assert harness.context.accepted[-1].text == "/return_item"


def sentences(count: int) -> str:
    return " ".join(f"Sentence number {n:03d} of the long policy text is here."
                    for n in range(count))


@pytest.mark.parametrize(("recipient", "store", "limit", "parts"), [
    (CUSTOMER, STORE, 1600, 4), (WA_CUSTOMER, WA_STORE, 4096, 2)])
async def test_long_text_is_split_at_sentences_to_the_channel_limit(
        harness: Harness, recipient: str, store: str, limit: int, parts: int) -> None:
    harness.context.store_addresses[f"twilio:{recipient}"] = store
    text = sentences(100)
    assert 5200 < len(text) < 5400

    deliveries = await harness.send(recipient, Reply(text))

    bodies = [r.form["Body"][0] for r in harness.messages_api()]
    assert len(bodies) == len(deliveries) == parts
    assert all(len(body) <= limit and body.endswith("here.") for body in bodies)
    assert len(bodies[0]) > limit - 60  # filled up to the limit, not cut short
    assert " ".join(bodies) == text
    assert all(d.status == "sent" for d in deliveries)


@pytest.mark.parametrize(("count", "bodies_expected", "options_alone"), [
    (40, 2, False),   # the last part has room for the options
    (60, 3, True),    # both parts are nearly full: the options are a part of their own
])
async def test_options_follow_the_last_part_of_a_split_text(
        harness: Harness, count: int, bodies_expected: int, options_alone: bool) -> None:
    harness.context.store_addresses[f"twilio:{CUSTOMER}"] = STORE

    await harness.send(CUSTOMER, Reply(sentences(count), buttons=(Button("Yes", "/affirm"),)))

    bodies = [r.form["Body"][0] for r in harness.messages_api()]
    assert len(bodies) == bodies_expected
    assert all(len(body) <= 1600 for body in bodies)
    options = "Reply with a number:\n1. Yes"
    assert bodies[-1] == options if options_alone else bodies[-1].endswith(
        "here.\n\n" + options)


async def test_429_and_500_are_retried_until_sent(harness: Harness) -> None:
    harness.context.store_addresses[f"twilio:{CUSTOMER}"] = STORE
    harness.api.fail_next("POST", MESSAGES_PATH,
                         web.json_response({"code": 20429, "message": "Too Many Requests",
                                            "more_info": "https://www.twilio.com/docs/errors/20429",
                                            "status": 429}, status=429,
                                           headers={"Retry-After": "0"}),
                         web.json_response({"code": 20500, "message": "Internal Server Error",
                                            "more_info": "https://www.twilio.com/docs/errors/20500",
                                            "status": 500}, status=500))

    (delivery,) = await harness.send(CUSTOMER, Reply("Your refund is on its way."))

    assert (delivery.status, delivery.attempts) == ("sent", 3)
    assert len(harness.messages_api()) == 3


async def test_refused_message_is_recorded_failed_with_twilios_reason(harness: Harness) -> None:
    harness.context.store_addresses[f"twilio:{CUSTOMER}"] = STORE
    harness.api.fail_next("POST", MESSAGES_PATH, web.json_response({
        "code": 21610, "message": "Attempt to send to unsubscribed recipient",
        "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400}, status=400))

    (delivery,) = await harness.send(CUSTOMER, Reply("hello"))

    assert delivery.status == "failed"
    assert "Attempt to send to unsubscribed recipient" in delivery.error
    assert delivery.attempts == 1
    assert len(harness.messages_api()) == 1


async def test_answer_without_a_sid_is_failed_not_retried(harness: Harness) -> None:
    harness.context.store_addresses[f"twilio:{CUSTOMER}"] = STORE
    harness.api.fail_next("POST", MESSAGES_PATH, web.json_response({}, status=201))

    (delivery,) = await harness.send(CUSTOMER, Reply("hello"))

    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert len(harness.messages_api()) == 1


async def test_sms_parts_wait_for_the_sending_numbers_rate(make_harness: MakeHarness) -> None:
    slow_sms = await make_harness(
        policy=channel_policy(twilio_sms_per_sender=RateSettings(per_second=10, burst=1)))
    slow_sms.context.store_addresses[f"twilio:{CUSTOMER}"] = STORE
    slow_sms.context.store_addresses[f"twilio:{WA_CUSTOMER}"] = WA_STORE
    replies = [Reply(f"Part {n}.") for n in range(4)]

    started = time.monotonic()
    await slow_sms.send(WA_CUSTOMER, *replies)
    whatsapp_took = time.monotonic() - started
    started = time.monotonic()
    await slow_sms.send(CUSTOMER, *replies)
    sms_took = time.monotonic() - started

    assert sms_took >= 0.28  # 3 waits of 0.1 s after the first
    assert whatsapp_took < 0.2


# -- status callbacks ----------------------------------------------------------------------

def status_fields(**fields: str) -> Dict[str, str]:
    base = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "undelivered",
            "AccountSid": ACCOUNT_SID, "From": STORE, "To": CUSTOMER,
            "ApiVersion": "2010-04-01", "SmsSid": "SM" + "1" * 32,
            "SmsStatus": "undelivered", "ErrorCode": "30003"}
    base.update(fields)
    return base


async def test_status_callback_is_recorded(harness: Harness) -> None:
    response = await harness.post(status_fields(), path="/webhooks/twilio/status")

    assert response.status == 200
    (update,) = harness.context.statuses
    assert (update.connector, update.provider_message_id, update.status, update.recipient,
            update.error) == ("twilio", "SM" + "1" * 32, "undelivered", CUSTOMER, "30003")


async def test_forged_status_callback_is_refused(harness: Harness) -> None:
    response = await harness.post(status_fields(), path="/webhooks/twilio/status",
                                 signature="Zm9yZ2Vk")
    missing = await harness.post(status_fields(MessageStatus=""),
                                path="/webhooks/twilio/status")

    assert (response.status, missing.status) == (403, 400)
    assert harness.context.statuses == []


async def test_media_is_downloaded_with_the_account_credentials(harness: Harness) -> None:
    media_path = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM1/Media/ME1"

    async def media(request: RecordedRequest) -> web.Response:
        expected = aiohttp.BasicAuth(ACCOUNT_SID, AUTH_TOKEN).encode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401)
        return web.Response(body=b"\x89PNG parcel", content_type="image/png")

    harness.api.answer("GET", media_path, media)
    assert await harness.channel.download(f"{harness.api.url}{media_path}") == b"\x89PNG parcel"
    with pytest.raises(PermanentError):  # credentials go to Twilio's host only
        await harness.channel.download(f"https://elsewhere.example{media_path}")
