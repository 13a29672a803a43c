"""The Telegram connector against a local server that answers as the Bot API documents
(https://core.telegram.org/bots/api): webhooks in, sendMessage / sendPhoto /
answerCallbackQuery / setWebhook / getFile out. PTB posts form-encoded bodies, with
objects such as reply_markup as JSON strings."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Callable, Dict, List

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)

from connectors.config import RateSettings, TelegramCredentials
from connectors.message import Attachment, Button, Message, Reply
from connectors.outbound import PermanentError, TransientError
from connectors.telegram import (
    SECRET_HEADER,
    TelegramChannel,
    TelegramSetupError,
    _provider_errors,
    set_webhook,
)
from tests.connectors.conftest import RecordingContext, channel_policy, serving
from tests.provider_api import ProviderAPI, RecordedRequest, free_port

TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
SECRET = "s3cret_token-1"
CHAT_ID = 1111111
API = f"/bot{TOKEN}"



def credentials(base_url: str, secret: str = SECRET) -> TelegramCredentials:
    return TelegramCredentials(bot_token=TOKEN, secret_token=secret, api_base_url=base_url)


def sent_message(request: RecordedRequest, message_id: int) -> Dict[str, Any]:
    """The Message object the Bot API returns for a send."""
    form = request.form
    result: Dict[str, Any] = {"message_id": message_id, "date": 1700000000,
                              "chat": {"id": int(form["chat_id"][0]), "type": "private"}}
    if "text" in form:
        result["text"] = form["text"][0]
    else:
        result["photo"] = [{"file_id": "AgAD", "file_unique_id": "u1", "width": 90,
                            "height": 90}]
    return {"ok": True, "result": result}


def bot_api_error(code: int, description: str, **parameters: Any) -> web.Response:
    body: Dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)


@pytest_asyncio.fixture
async def bot_api(provider_api: ProviderAPI) -> ProviderAPI:
    counter = iter(range(100, 10_000))

    async def send(request: RecordedRequest) -> web.Response:
        return web.json_response(sent_message(request, next(counter)))

    async def true(request: RecordedRequest) -> web.Response:
        return web.json_response({"ok": True, "result": True})

    async def get_file(request: RecordedRequest) -> web.Response:
        return web.json_response({"ok": True, "result": {
            "file_id": request.form["file_id"][0], "file_unique_id": "u9",
            "file_size": 5, "file_path": "photos/file_7.jpg"}})

    async def file_bytes(request: RecordedRequest) -> web.Response:
        return web.Response(body=b"\xff\xd8JPG", content_type="image/jpeg")

    provider_api.answer("POST", f"{API}/sendMessage", send)
    provider_api.answer("POST", f"{API}/sendPhoto", send)
    provider_api.answer("POST", f"{API}/answerCallbackQuery", true)
    provider_api.answer("POST", f"{API}/setWebhook", true)
    provider_api.answer("POST", f"{API}/getFile", get_file)
    provider_api.answer("GET", f"/file/bot{TOKEN}/photos/file_7.jpg", file_bytes)
    return provider_api


@pytest_asyncio.fixture
async def channel(bot_api: ProviderAPI) -> AsyncIterator[TelegramChannel]:
    channel = TelegramChannel(credentials(bot_api.url), channel_policy())
    await channel.start()
    yield channel
    await channel.stop()


@pytest_asyncio.fixture
async def client(channel: TelegramChannel,
                 context: RecordingContext) -> AsyncIterator[TestClient]:
    async with serving(channel, context) as client:
        yield client


async def post_update(client: TestClient, update: Any, secret: str | None = SECRET,
                      raw: bytes | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    body = raw if raw is not None else json.dumps(update).encode()
    async with client.post("/webhooks/telegram", data=body, headers=headers) as response:
        return response.status


async def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def user() -> Dict[str, Any]:
    return {"id": CHAT_ID, "is_bot": False, "first_name": "Ada", "last_name": "Lovelace",
            "username": "ada", "language_code": "en"}


def message_update(update_id: int, **content: Any) -> Dict[str, Any]:
    return {"update_id": update_id, "message": {
        "message_id": 1365, "date": 1441645532, "from": user(),
        "chat": {"id": CHAT_ID, "type": "private", "first_name": "Ada"}, **content}}


def callback_update(update_id: int, data: str) -> Dict[str, Any]:
    return {"update_id": update_id, "callback_query": {
        "id": "4382bfdwdsb323b2d9", "from": user(), "chat_instance": "-8930000",
        "data": data,
        "message": {"message_id": 1366, "date": 1441645600, "text": "Is that right?",
                    "chat": {"id": CHAT_ID, "type": "private", "first_name": "Ada"}}}}


def keyboard(request: RecordedRequest) -> List[List[Dict[str, str]]]:
    markup: List[List[Dict[str, str]]] = json.loads(
        request.form["reply_markup"][0])["inline_keyboard"]
    return markup


# -- inbound -----------------------------------------------------------------------

@pytest.mark.parametrize("secret", [None, "wrong", SECRET + "x", ""])
async def test_missing_or_wrong_secret_is_refused(client: TestClient, context: RecordingContext,
                                                  secret: str | None) -> None:
    assert await post_update(client, message_update(1, text="hi"), secret=secret) == 403
    assert context.accepted == []


@pytest.mark.parametrize("raw", [
    b"{not json", b"[1, 2]", b'"text"', b'{"message": {"text": "hi"}}',
    b'{"update_id": "7"}', b'{"update_id": 7, "message": "hi"}',
    b'{"update_id": 7, "message": {"message_id": 1, "chat": {"id": 1, "type": "private"}}}',
])
async def test_malformed_update_is_400(client: TestClient, context: RecordingContext,
                                       raw: bytes) -> None:
    assert await post_update(client, None, raw=raw) == 400
    assert context.accepted == []


async def test_text_message_becomes_a_message(client: TestClient,
                                              context: RecordingContext) -> None:
    assert await post_update(client, message_update(10000, text="where is my order?")) == 200
    [message] = context.accepted
    assert (message.connector, message.channel, message.sender, message.message_id) == (
        "telegram", "telegram", str(CHAT_ID), "10000")
    assert message.text == "where is my order?"
    assert message.profile_name == "Ada"
    assert message.store_address == ""
    assert message.attachments == ()
    assert message.conversation_id == f"telegram:{CHAT_ID}"


async def test_photo_with_caption_keeps_the_largest_size(client: TestClient,
                                                         context: RecordingContext) -> None:
    sizes = [{"file_id": "small", "file_unique_id": "a", "width": 90, "height": 67},
             {"file_id": "large", "file_unique_id": "c", "width": 1280, "height": 960},
             {"file_id": "medium", "file_unique_id": "b", "width": 320, "height": 240}]
    update = message_update(10001, photo=sizes, caption="it arrived broken")
    assert await post_update(client, update) == 200
    [message] = context.accepted
    assert message.text == "it arrived broken"
    assert message.attachments == (
        Attachment("image", "tg-file:large", "image/jpeg", "it arrived broken"),)


async def test_document_becomes_a_file_attachment(client: TestClient,
                                                  context: RecordingContext) -> None:
    document = {"file_id": "BQAD", "file_unique_id": "d", "file_name": "invoice.pdf",
                "mime_type": "application/pdf"}
    assert await post_update(client, message_update(10002, document=document)) == 200
    [message] = context.accepted
    assert message.text == ""
    assert message.attachments == (Attachment("file", "tg-file:BQAD", "application/pdf"),)


async def test_callback_query_gives_the_payload_and_is_answered(
        client: TestClient, context: RecordingContext, bot_api: ProviderAPI) -> None:
    assert await post_update(client, callback_update(10003, "/affirm")) == 200
    [message] = context.accepted
    assert (message.text, message.sender, message.message_id, message.profile_name) == (
        "/affirm", str(CHAT_ID), "10003", "Ada")
    await eventually(lambda: bool(bot_api.calls(f"{API}/answerCallbackQuery")))
    [answer] = bot_api.calls(f"{API}/answerCallbackQuery")
    assert answer.form == {"callback_query_id": ["4382bfdwdsb323b2d9"]}


async def test_callback_answer_is_retried(client: TestClient, bot_api: ProviderAPI) -> None:
    bot_api.fail_next("POST", f"{API}/answerCallbackQuery",
                      bot_api_error(429, "Too Many Requests: retry after 1", retry_after=1))
    assert await post_update(client, callback_update(10004, "/deny")) == 200
    await eventually(lambda: len(bot_api.calls(f"{API}/answerCallbackQuery")) == 2)


async def test_duplicate_update_is_accepted_once(client: TestClient,
                                                 context: RecordingContext) -> None:
    update = message_update(10005, text="hello")
    assert await post_update(client, update) == 200
    assert await post_update(client, update) == 200
    assert [m.message_id for m in context.accepted] == ["10005"]


async def test_other_updates_are_acknowledged_and_ignored(
        client: TestClient, context: RecordingContext, bot_api: ProviderAPI) -> None:
    edited = message_update(10006, text="edited", edit_date=1441645600)
    edited["edited_message"] = edited.pop("message")
    sticker = message_update(10007, sticker={
        "file_id": "CAAD", "file_unique_id": "s", "type": "regular", "width": 512,
        "height": 512, "is_animated": False, "is_video": False})
    assert await post_update(client, edited) == 200
    assert await post_update(client, sticker) == 200
    assert context.accepted == []
    assert bot_api.requests == []


# -- outbound ----------------------------------------------------------------------

async def test_text_with_buttons_is_an_inline_keyboard(
        channel: TelegramChannel, context: RecordingContext, bot_api: ProviderAPI) -> None:
    reply = Reply("Did it arrive?", buttons=(Button("Yes", "/affirm"), Button("No", "/deny")))
    [delivery] = await channel.send(str(CHAT_ID), [reply], context)
    assert (delivery.status, delivery.provider_message_id, delivery.attempts) == ("sent", "100", 1)
    [request] = bot_api.requests
    assert request.path == f"{API}/sendMessage"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert set(request.form) == {"chat_id", "text", "reply_markup"}
    assert (request.form["chat_id"], request.form["text"]) == ([str(CHAT_ID)], ["Did it arrive?"])
    assert keyboard(request) == [[{"text": "Yes", "callback_data": "/affirm"}],
                                 [{"text": "No", "callback_data": "/deny"}]]


async def test_payload_over_64_bytes_maps_back(
        client: TestClient, channel: TelegramChannel, context: RecordingContext,
        bot_api: ProviderAPI) -> None:
    # 40 characters but 80 bytes in UTF-8: the limit is in bytes.
    long_payload = '/choose{"item":"' + "é" * 40 + '"}'
    assert len(long_payload) <= 64 < len(long_payload.encode())
    reply = Reply("Which one?", buttons=(Button("Short", "/affirm"), Button("Long", long_payload)))
    await channel.send(str(CHAT_ID), [reply], context)
    [[short], [hashed]] = keyboard(bot_api.requests[0])
    assert short["callback_data"] == "/affirm"
    assert hashed["callback_data"].startswith("opt:")
    assert len(hashed["callback_data"].encode()) <= 64
    # A newer keyboard must not make the older one unmappable.
    await channel.send(str(CHAT_ID), [Reply("More?", buttons=(Button("X", "/x" * 40),))],
                       context)

    assert await post_update(client, callback_update(10008, hashed["callback_data"])) == 200
    assert [m.text for m in context.accepted] == [long_payload]


async def test_unknown_hashed_option_is_answered_but_not_accepted(
        client: TestClient, context: RecordingContext, bot_api: ProviderAPI) -> None:
    assert await post_update(client, callback_update(10009, "opt:0123456789abcdef")) == 200
    assert context.accepted == []
    await eventually(lambda: bool(bot_api.calls(f"{API}/answerCallbackQuery")))


async def test_payload_that_looks_like_a_hash_is_hashed_too(
        client: TestClient, channel: TelegramChannel, context: RecordingContext,
        bot_api: ProviderAPI) -> None:
    lookalike = "opt:0123456789abcdef"
    await channel.send(str(CHAT_ID), [Reply("Pick", buttons=(Button("A", lookalike),))], context)
    [[button]] = keyboard(bot_api.requests[0])
    assert button["callback_data"] != lookalike
    assert await post_update(client, callback_update(10010, button["callback_data"])) == 200
    assert [m.text for m in context.accepted] == [lookalike]


async def test_long_text_is_split_at_4096_with_the_keyboard_last(
        channel: TelegramChannel, context: RecordingContext, bot_api: ProviderAPI) -> None:
    sentences = [f"Sentence number {n} explains the return policy in detail." for n in range(200)]
    text = " ".join(sentences)
    assert len(text) > 2 * 4096
    reply = Reply(text, buttons=(Button("Thanks", "/thank_you"),))
    deliveries = await channel.send(str(CHAT_ID), [reply], context)
    requests = bot_api.calls(f"{API}/sendMessage")
    assert len(deliveries) == len(requests) == 3
    parts = [request.form["text"][0] for request in requests]
    assert all(len(part) <= 4096 for part in parts)
    assert all(part.endswith("detail.") for part in parts)
    assert " ".join(parts) == text
    assert ["reply_markup" in request.form for request in requests] == [False, False, True]


async def test_image_is_sent_as_a_photo_with_its_caption(
        channel: TelegramChannel, context: RecordingContext, bot_api: ProviderAPI) -> None:
    reply = Reply("Your parcel", image_url="https://shop.example/p.jpg",
                  buttons=(Button("OK", "/affirm"),))
    [delivery] = await channel.send(str(CHAT_ID), [reply], context)
    assert delivery.status == "sent"
    [request] = bot_api.requests
    assert request.path == f"{API}/sendPhoto"
    assert request.form["photo"] == ["https://shop.example/p.jpg"]
    assert request.form["caption"] == ["Your parcel"]
    assert keyboard(request) == [[{"text": "OK", "callback_data": "/affirm"}]]


async def test_rate_limit_answer_is_retried_then_sent(
        channel: TelegramChannel, context: RecordingContext, bot_api: ProviderAPI) -> None:
    bot_api.fail_next("POST", f"{API}/sendMessage",
                      bot_api_error(429, "Too Many Requests: retry after 1", retry_after=1),
                      web.json_response({"ok": False, "error_code": 500,
                                         "description": "Internal Server Error"}, status=500))
    [delivery] = await channel.send(str(CHAT_ID), [Reply("hello")], context)
    assert (delivery.status, delivery.attempts) == ("sent", 3)
    assert len(bot_api.calls(f"{API}/sendMessage")) == 3


async def test_bad_request_is_recorded_failed_without_retry(
        channel: TelegramChannel, context: RecordingContext, bot_api: ProviderAPI) -> None:
    bot_api.fail_next("POST", f"{API}/sendMessage",
                      bot_api_error(400, "Bad Request: chat not found"))
    [delivery] = await channel.send(str(CHAT_ID), [Reply("hello")], context)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert "chat not found" in delivery.error.lower()
    assert len(bot_api.requests) == 1


async def test_blocked_bot_stops_sending_until_the_customer_writes(
        client: TestClient, channel: TelegramChannel, context: RecordingContext,
        bot_api: ProviderAPI) -> None:
    bot_api.fail_next("POST", f"{API}/sendMessage",
                      bot_api_error(403, "Forbidden: bot was blocked by the user"))
    first = await channel.send(str(CHAT_ID), [Reply("one"), Reply("two")], context)
    assert [d.status for d in first] == ["failed", "blocked"]
    assert "blocked by the user" in first[0].error.lower()
    assert await context.opted_out_since("telegram", str(CHAT_ID)) is not None
    assert [d.status for d in await channel.send(str(CHAT_ID), [Reply("three")], context)] == [
        "blocked"]
    assert len(bot_api.requests) == 1

    assert await post_update(client, message_update(10011, text="/start")) == 200
    assert [d.status for d in await channel.send(str(CHAT_ID), [Reply("four")], context)] == [
        "sent"]
    assert await context.opted_out_since("telegram", str(CHAT_ID)) is None


async def test_an_answer_to_what_the_chat_just_wrote_is_sent_without_a_block_lookup(
        channel: TelegramChannel, context: RecordingContext, bot_api: ProviderAPI,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A chat that blocked the bot cannot write to it, so a reply to its message needs
    no trip to the database; a send of our own (an agent's) still looks."""
    asked: List[str] = []

    async def opted_out_since(connector: str, address: str) -> None:
        asked.append(address)

    monkeypatch.setattr(context, "opted_out_since", opted_out_since)
    wrote = Message(connector="telegram", channel="telegram", sender=str(CHAT_ID),
                    message_id="10012", text="where is my order?")
    [answer] = await channel.send(str(CHAT_ID), [Reply("On its way.")], context,
                                  answering=wrote)
    assert (answer.status, asked) == ("sent", [])
    [own] = await channel.send(str(CHAT_ID), [Reply("An agent is here.")], context)
    assert (own.status, asked) == ("sent", [str(CHAT_ID)])


async def test_network_failure_is_failed_and_never_shows_the_token(
        context: RecordingContext) -> None:
    fast = channel_policy(telegram_per_chat=RateSettings(per_second=1000, burst=10))
    channel = TelegramChannel(credentials(f"http://127.0.0.1:{free_port()}"), fast)
    await channel.start()
    try:
        [delivery] = await channel.send(str(CHAT_ID), [Reply("hello")], context)
    finally:
        await channel.stop()
    assert (delivery.status, delivery.attempts) == ("failed", 5)
    assert "could not reach the Bot API (ClientConnectorError)" in delivery.error
    assert TOKEN not in delivery.error


async def test_per_chat_rate_is_respected(bot_api: ProviderAPI,
                                         context: RecordingContext) -> None:
    policy = channel_policy(telegram_per_chat=RateSettings(per_second=10, burst=1))
    channel = TelegramChannel(credentials(bot_api.url), policy)
    await channel.start()
    started = time.monotonic()
    try:
        deliveries = await channel.send(str(CHAT_ID), [Reply("a"), Reply("b"), Reply("c")],
                                        context)
    finally:
        await channel.stop()
    assert [d.status for d in deliveries] == ["sent"] * 3
    assert time.monotonic() - started >= 0.18


@pytest.mark.parametrize(("error", "expected", "retry_after"), [
    (RetryAfter(3), TransientError, 3.0),
    (TimedOut(), TransientError, None),
    (NetworkError("Bad Gateway"), TransientError, None),
    (BadRequest("Bad Request: chat not found"), PermanentError, None),
    (Forbidden("Forbidden: bot was blocked by the user"), PermanentError, None),
    (InvalidToken(), PermanentError, None),
    (ChatMigrated(-100123), PermanentError, None),
])
def test_provider_errors_are_classified(error: Exception, expected: type[Exception],
                                        retry_after: float | None) -> None:
    with pytest.raises(expected) as raised, _provider_errors(TOKEN):
        raise error
    if isinstance(raised.value, TransientError):
        assert raised.value.retry_after == retry_after


def test_provider_error_text_never_shows_the_token() -> None:
    quoting = NetworkError(f"httpx.InvalidURL: https://api.telegram.org/bot{TOKEN}/sendMessage")
    with pytest.raises(TransientError) as raised, _provider_errors(TOKEN):
        raise quoting
    assert TOKEN not in str(raised.value)
    assert "/bot<token>/sendMessage" in str(raised.value)


async def test_download_fetches_a_file_reference(channel: TelegramChannel,
                                                 bot_api: ProviderAPI) -> None:
    assert await channel.download("tg-file:AgADlarge") == b"\xff\xd8JPG"
    [get_file] = bot_api.calls(f"{API}/getFile")
    assert get_file.form == {"file_id": ["AgADlarge"]}


# -- lifecycle and setup -----------------------------------------------------------

async def test_start_makes_no_request_even_when_telegram_is_down(
        bot_api: ProviderAPI) -> None:
    reachable = TelegramChannel(credentials(bot_api.url), channel_policy())
    unreachable = TelegramChannel(credentials(f"http://127.0.0.1:{free_port()}"),
                                  channel_policy())
    for channel in (reachable, unreachable):
        await channel.start()
        await channel.stop()
    assert bot_api.requests == []


async def test_set_webhook_sends_url_secret_and_update_types(bot_api: ProviderAPI) -> None:
    await set_webhook(credentials(bot_api.url), "https://support.example/webhooks/telegram")
    [request] = bot_api.requests
    assert request.path == f"{API}/setWebhook"
    form = request.form
    assert form["url"] == ["https://support.example/webhooks/telegram"]
    assert form["secret_token"] == [SECRET]
    assert json.loads(form["allowed_updates"][0]) == ["message", "callback_query"]


async def test_set_webhook_refused_raises_a_clear_error(bot_api: ProviderAPI) -> None:
    bot_api.fail_next("POST", f"{API}/setWebhook",
                      bot_api_error(400, "Bad Request: bad webhook: An HTTPS URL must be "
                                         "provided for webhook"))
    with pytest.raises(TelegramSetupError, match="(?i)https url must be provided"):
        await set_webhook(credentials(bot_api.url), "http://support.example/webhooks/telegram")


async def test_set_webhook_rejects_a_secret_telegram_would_refuse(
        bot_api: ProviderAPI) -> None:
    with pytest.raises(TelegramSetupError, match="TELEGRAM_SECRET_TOKEN"):
        await set_webhook(credentials(bot_api.url, secret="has spaces!"),
                          "https://support.example/webhooks/telegram")
    assert bot_api.requests == []
