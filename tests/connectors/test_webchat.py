"""Web chat connector: the rasa-webchat socket.io protocol, driven by python-socketio's
client against the channel installed in an aiohttp app."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional

import pytest
import pytest_asyncio
import socketio
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from connectors.message import Button, Message, Reply, TranscriptTurn
from connectors.webchat import MAX_TEXT_CHARS, SessionSigner, WebChatChannel
from tests.connectors.conftest import RecordingContext

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = b"webchat-test-secret"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = 5.0


class ChatClient:
    """A socket.io client that speaks the widget's protocol and keeps what it gets."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received: Dict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        for event in ("session_confirm", "history", "bot_uttered"):
            self.sio.on(event, self._keeper(event))

    def _keeper(self, event: str) -> Any:
        async def keep(data: Any = None) -> None:
            await self.received[event].put(data)
        return keep

    async def connect(self, url: str) -> ChatClient:
        # Long-polling: python-engineio 4.15's client websocket needs aiohttp 3.10, and
        # Rasa pins 3.9. The browser tests cover the server's websocket transport.
        await self.sio.connect(url, transports=["polling"], wait_timeout=WAIT)
        return self

    async def leave(self) -> None:
        # Without waiting for the pending poll: python-engineio's client would wait for
        # it to end (up to 25 s), where a browser aborts it.
        await self.sio.eio.disconnect(abort=True)

    async def next(self, event: str) -> Any:
        return await asyncio.wait_for(self.received[event].get(), WAIT)

    async def start_session(self, session_id: Any = None) -> str:
        await self.sio.emit("session_request", {"session_id": session_id})
        confirmed = await self.next("session_confirm")
        assert isinstance(confirmed, str)
        return confirmed

    async def utter(self, text: Any, session_id: Any,
                    custom: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
        ack: Dict[str, str] = await self.sio.call(
            "user_uttered", {"message": text, "customData": custom or {},
                             "session_id": session_id}, timeout=WAIT)
        return ack


@pytest_asyncio.fixture(autouse=True)
async def no_sleepers_left() -> AsyncIterator[None]:
    """Engine.IO leaves tasks asleep for up to a ping interval (25 s) after a socket
    closes, on the server (the next ping) and in python-socketio's polling client (its
    write loop); they end by themselves in a running gateway, but not before a test's
    event loop closes, so they are ended here."""
    yield
    leftovers = asyncio.all_tasks() - {asyncio.current_task()}
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)


@pytest_asyncio.fixture
async def channel() -> AsyncIterator[WebChatChannel]:
    webchat = WebChatChannel(SECRET)
    await webchat.start()
    yield webchat
    await webchat.stop()


@dataclass
class Gateway:
    server: TestServer
    clients: List[ChatClient] = field(default_factory=list)

    async def client(self) -> ChatClient:
        opened = await ChatClient().connect(str(self.server.make_url("/")))
        self.clients.append(opened)
        return opened


@pytest_asyncio.fixture
async def gateway(channel: WebChatChannel,
                  context: RecordingContext) -> AsyncIterator[Gateway]:
    app = web.Application()
    channel.install(app, context)
    test_server = TestServer(app)
    await test_server.start_server()
    opened = Gateway(test_server)
    yield opened
    for client in opened.clients:
        await client.leave()
    await test_server.close()


def mac_with(secret: bytes, nonce: str) -> str:
    digest = hmac.new(secret, b"webchat-session:" + nonce.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def wait_for_accepted(context: RecordingContext, count: int) -> List[Message]:
    deadline = time.monotonic() + WAIT
    while len(context.accepted) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return context.accepted


# sessions

async def test_a_new_client_gets_a_signed_session_and_an_empty_history(gateway: Gateway) -> None:
    client = await gateway.client()
    session_id = await client.start_session(None)

    nonce, _, mac = session_id.partition(".")
    assert len(nonce) >= 20 and mac == mac_with(SECRET, nonce)
    assert not SessionSigner(b"another secret").verify(session_id)
    assert await client.next("history") == {"turns": []}


async def test_a_signed_session_id_is_kept(gateway: Gateway) -> None:
    first = await (await gateway.client()).start_session()
    again = await (await gateway.client()).start_session(first)
    assert again == first


def forged_ids() -> List[Any]:
    genuine = SessionSigner(SECRET).issue()
    nonce, _, mac = genuine.partition(".")
    return [
        "", "rasa-style-session-id", "abc.def", f"{nonce}.", f".{mac}", nonce,
        f"{nonce}.{mac_with(b'guessed secret', nonce)}",   # signed with another secret
        f"x{nonce}.{mac}",                                  # tampered nonce
        f"{nonce}.{mac[:-1]}",                              # truncated mac
        f"{nonce}.{mac}" + "A" * 200,                       # too long
        f"{nonce}.{mac[:-1]}é",                             # not ASCII
        42, ["a", "b"], {"session_id": genuine},
    ]


@pytest.mark.parametrize("forged", forged_ids(), ids=[
    "empty", "unsigned", "bad-mac", "no-mac", "no-nonce", "nonce-only", "other-secret",
    "tampered-nonce", "truncated-mac", "too-long", "non-ascii", "number", "list", "object"])
async def test_a_forged_or_unsigned_session_id_gets_a_new_one(gateway: Gateway,
                                                              forged: Any) -> None:
    session_id = await (await gateway.client()).start_session(forged)
    assert session_id != forged
    assert SessionSigner(SECRET).verify(session_id)


async def test_a_session_request_without_payload_gets_a_new_session(gateway: Gateway) -> None:
    client = await gateway.client()
    await client.sio.emit("session_request")
    assert SessionSigner(SECRET).verify(await client.next("session_confirm"))


async def test_a_forged_id_does_not_join_the_owners_room(
        gateway: Gateway, channel: WebChatChannel, context: RecordingContext) -> None:
    owner, intruder = await gateway.client(), await gateway.client()
    session_id = await owner.start_session()
    nonce = session_id.partition(".")[0]
    intruder_id = await intruder.start_session(f"{nonce}.{mac_with(b'guess', nonce)}")

    await channel.send(session_id, [Reply(text="Your order ships today")], context)
    await channel.send(intruder_id, [Reply(text="for the intruder")], context)

    assert await owner.next("bot_uttered") == {"text": "Your order ships today"}
    assert await intruder.next("bot_uttered") == {"text": "for the intruder"}


# inbound

async def test_an_utterance_reaches_the_gateway_as_a_message(
        gateway: Gateway, context: RecordingContext) -> None:
    client = await gateway.client()
    session_id = await client.start_session()

    ack = await client.utter("where is my order", session_id, {"language": "en"})

    assert ack == {"status": "accepted"}
    [message] = context.accepted
    assert (message.connector, message.channel, message.sender, message.text) == (
        "webchat", "webchat", session_id, "where is my order")
    assert message.conversation_id == f"webchat:{session_id}"
    assert len(message.message_id) == 32 and int(message.message_id, 16) >= 0


async def test_an_utterance_without_acknowledgement_like_rasa_webchat(
        gateway: Gateway, context: RecordingContext) -> None:
    client = await gateway.client()
    session_id = await client.start_session()
    await client.sio.emit("user_uttered", {"message": "hello", "customData": {"language": "en"},
                                           "session_id": session_id})
    [message] = await wait_for_accepted(context, 1)
    assert message.text == "hello" and message.sender == session_id


async def test_each_utterance_without_client_id_is_a_new_message(
        gateway: Gateway, context: RecordingContext) -> None:
    client = await gateway.client()
    session_id = await client.start_session()
    assert await client.utter("yes", session_id) == {"status": "accepted"}
    assert await client.utter("yes", session_id) == {"status": "accepted"}
    assert len({m.message_id for m in context.accepted}) == 2


async def test_a_resent_utterance_with_its_client_id_is_a_duplicate(
        gateway: Gateway, context: RecordingContext) -> None:
    client, other = await gateway.client(), await gateway.client()
    session_id, other_id = await client.start_session(), await other.start_session()
    custom = {"message_id": "3f0c9a52-0000-4000-8000-000000000001"}

    assert await client.utter("hello", session_id, custom) == {"status": "accepted"}
    assert await client.utter("hello", session_id, custom) == {"status": "duplicate"}
    # The same client id in another session is another message: ids are scoped.
    assert await other.utter("hello", other_id, custom) == {"status": "accepted"}

    assert [m.sender for m in context.accepted] == [session_id, other_id]
    assert context.accepted[0].message_id.endswith(custom["message_id"])
    assert context.accepted[0].message_id != context.accepted[1].message_id


async def test_an_utterance_for_another_session_is_ignored(
        gateway: Gateway, context: RecordingContext, caplog: pytest.LogCaptureFixture) -> None:
    victim, intruder = await gateway.client(), await gateway.client()
    victim_id = await victim.start_session()
    await intruder.start_session()

    ack = await intruder.utter("cancel my order", victim_id)

    assert ack["status"] == "rejected"
    assert context.accepted == []
    assert "another session" in caplog.text
    assert victim_id not in caplog.text and "cancel my order" not in caplog.text


async def test_an_utterance_before_any_session_is_ignored(
        gateway: Gateway, context: RecordingContext) -> None:
    client = await gateway.client()
    ack = await client.utter("hello", SessionSigner(SECRET).issue())
    assert ack == {"status": "rejected", "reason": "no session"}
    assert context.accepted == []


@pytest.mark.parametrize("text", ["x" * (MAX_TEXT_CHARS + 1), "", "   ", None, 12, ["hi"]],
                         ids=["too-long", "empty", "blank", "null", "number", "list"])
async def test_an_oversized_or_malformed_utterance_is_ignored(
        gateway: Gateway, context: RecordingContext, text: Any) -> None:
    client = await gateway.client()
    session_id = await client.start_session()
    assert (await client.utter(text, session_id))["status"] == "rejected"
    assert context.accepted == []


async def test_an_utterance_at_the_size_limit_is_accepted(
        gateway: Gateway, context: RecordingContext) -> None:
    client = await gateway.client()
    session_id = await client.start_session()
    assert await client.utter("é" * MAX_TEXT_CHARS, session_id) == {"status": "accepted"}
    assert len(context.accepted[0].text) == MAX_TEXT_CHARS


@pytest.mark.parametrize("payload", [None, "hello", ["hello"], {"message": "hi"}])
async def test_a_payload_that_is_not_an_utterance_is_ignored(
        gateway: Gateway, context: RecordingContext, payload: Any) -> None:
    client = await gateway.client()
    await client.start_session()
    ack = await client.sio.call("user_uttered", payload, timeout=WAIT)
    assert ack["status"] == "rejected"
    assert context.accepted == []


async def test_a_failing_gateway_asks_the_client_to_resend(
        gateway: Gateway, context: RecordingContext, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    async def broken_accept(message: Message) -> bool:
        raise ConnectionError(f"database down while saving {message.text!r}")

    monkeypatch.setattr(context, "accept", broken_accept)
    client = await gateway.client()
    session_id = await client.start_session()
    assert await client.utter("my secret address", session_id) == {"status": "unavailable"}
    assert "ConnectionError" in caplog.text and "my secret address" not in caplog.text


# outbound

async def test_replies_are_emitted_in_the_widgets_shapes_to_that_room_only(
        gateway: Gateway, channel: WebChatChannel, context: RecordingContext) -> None:
    customer, bystander = await gateway.client(), await gateway.client()
    session_id, bystander_id = await customer.start_session(), await bystander.start_session()

    deliveries = await channel.send(session_id, [
        Reply(text="Hi! How can I help?"),
        Reply(text="Did that help?", buttons=(Button("Yes", "/affirm"), Button("No", "/deny"))),
        Reply(image_url="https://shop.example/parcel.jpg"),
        Reply(text="Here it is", image_url="https://shop.example/label.png"),
    ], context)

    assert [await customer.next("bot_uttered") for _ in range(5)] == [
        {"text": "Hi! How can I help?"},
        {"text": "Did that help?", "quick_replies": [
            {"content_type": "text", "title": "Yes", "payload": "/affirm"},
            {"content_type": "text", "title": "No", "payload": "/deny"}]},
        {"attachment": {"type": "image", "payload": {"src": "https://shop.example/parcel.jpg"}}},
        {"text": "Here it is"},
        {"attachment": {"type": "image", "payload": {"src": "https://shop.example/label.png"}}},
    ]
    assert [d.status for d in deliveries] == ["sent"] * 5
    assert len({d.provider_message_id for d in deliveries}) == 5
    # The bystander's first event is its own reply: nothing of the other room came before.
    await channel.send(bystander_id, [Reply(text="only yours")], context)
    assert await bystander.next("bot_uttered") == {"text": "only yours"}


async def test_every_tab_of_a_session_gets_the_reply(
        gateway: Gateway, channel: WebChatChannel, context: RecordingContext) -> None:
    first_tab, second_tab = await gateway.client(), await gateway.client()
    session_id = await first_tab.start_session()
    await second_tab.start_session(session_id)
    await channel.send(session_id, [Reply(text="to both")], context)
    assert await first_tab.next("bot_uttered") == {"text": "to both"}
    assert await second_tab.next("bot_uttered") == {"text": "to both"}


async def test_a_socket_that_changes_session_leaves_the_old_room(
        gateway: Gateway, channel: WebChatChannel, context: RecordingContext) -> None:
    client = await gateway.client()
    old = await client.start_session()
    new = await client.start_session(SessionSigner(SECRET).issue())
    await channel.send(old, [Reply(text="old")], context)
    await channel.send(new, [Reply(text="new")], context)
    assert await client.next("bot_uttered") == {"text": "new"}


async def test_a_reply_that_cannot_be_emitted_is_a_failed_delivery(
        channel: WebChatChannel, context: RecordingContext,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def unreachable(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("redis down")

    monkeypatch.setattr(channel.sio, "emit", unreachable)
    [delivery] = await channel.send("someone", [Reply(text="hi")], context)
    assert delivery.status == "failed" and delivery.error == "ConnectionError"


async def test_a_reply_with_nothing_to_show_sends_nothing(
        channel: WebChatChannel, context: RecordingContext) -> None:
    assert await channel.send("someone", [Reply()], context) == []


# history

async def test_the_history_is_replayed_after_a_reconnect(
        gateway: Gateway, context: RecordingContext) -> None:
    first = await gateway.client()
    session_id = await first.start_session()
    await first.next("history")
    await first.utter("where is my order", session_id)
    conversation = context.turns[f"webchat:{session_id}"]
    conversation.append(TranscriptTurn(
        "bot", "Which order?", 1700000001.5,
        buttons=(Button("A-1001", "/order_status{\"order_id\": \"A-1001\"}"),)))
    conversation.append(TranscriptTurn("agent", "Here is the parcel", 1700000002.0,
                                       image_url="https://shop.example/parcel.jpg"))

    # A reload: a new socket presents the stored id (the old one may linger a while).
    again = await gateway.client()
    assert await again.start_session(session_id) == session_id
    turns = (await again.next("history"))["turns"]

    assert turns[0]["role"] == "customer" and turns[0]["text"] == "where is my order"
    assert isinstance(turns[0]["at"], float) and "quick_replies" not in turns[0]
    assert turns[1:] == [
        {"role": "bot", "text": "Which order?", "at": 1700000001.5, "quick_replies": [
            {"content_type": "text", "title": "A-1001",
             "payload": "/order_status{\"order_id\": \"A-1001\"}"}]},
        {"role": "agent", "text": "Here is the parcel", "at": 1700000002.0,
         "image": "https://shop.example/parcel.jpg"},
    ]


async def test_a_new_session_never_sees_another_sessions_history(
        gateway: Gateway, context: RecordingContext) -> None:
    owner = await gateway.client()
    session_id = await owner.start_session()
    await owner.utter("my address is 1 Main St", session_id)
    nonce = session_id.partition(".")[0]

    intruder = await gateway.client()
    await intruder.start_session(f"{nonce}.forged")
    assert await intruder.next("history") == {"turns": []}


async def test_the_session_is_confirmed_even_when_the_history_is_unavailable(
        gateway: Gateway, context: RecordingContext, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken_transcript(conversation_id: str) -> List[TranscriptTurn]:
        raise TimeoutError("database")

    monkeypatch.setattr(context, "transcript", broken_transcript)
    client = await gateway.client()
    assert SessionSigner(SECRET).verify(await client.start_session())


# the page

async def test_the_page_and_its_assets_are_served_by_the_gateway(gateway: Gateway) -> None:
    server = gateway.server
    async with ClientSession() as http:
        async with http.get(server.make_url("/")) as page:
            html = await page.text()
            assert page.status == 200 and page.content_type == "text/html"
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        for asset in ("webchat/chat.js", "webchat/chat.css", "webchat/vendor/socket.io.min.js"):
            assert f'"{asset}"' in html
            async with http.get(server.make_url(f"/{asset}")) as response:
                assert response.status == 200, asset
        async with http.get(server.make_url("/webchat/vendor/socket.io.min.js")) as response:
            assert (await response.text()).startswith("/*!\n * Socket.IO v4")
        async with http.get(server.make_url("/webchat/../../../connectors/webchat.py")) as escape:
            assert escape.status in (403, 404)


async def test_stopping_the_gateway_closes_websockets_at_once(
        channel: WebChatChannel, context: RecordingContext) -> None:
    """Engine.IO over a raw websocket, as browsers speak it (python-socketio's own
    client cannot open websockets with aiohttp 3.9)."""
    app = web.Application()
    channel.install(app, context)
    test_server = TestServer(app)
    await test_server.start_server()
    url = test_server.make_url("/socket.io/?EIO=4&transport=websocket")
    async with ClientSession() as http, http.ws_connect(url) as ws:
        assert (await ws.receive_str()).startswith("0{")          # Engine.IO open
        await ws.send_str("40")                                   # socket.io connect
        assert (await ws.receive_str()).startswith("40{")
        await ws.send_str('42["session_request",{"session_id":null}]')
        assert (await ws.receive_str()).startswith('42["session_confirm"')
        frames = asyncio.ensure_future(ws_frames(ws))

        # Left open, the socket would hold the shutdown for the 45 s ping timeout.
        await asyncio.wait_for(test_server.close(), 5)
        assert "1" in await asyncio.wait_for(frames, 5)           # Engine.IO close


async def ws_frames(ws: Any) -> List[str]:
    return [message.data async for message in ws if isinstance(message.data, str)]


# several gateway processes

@pytest_asyncio.fixture
async def redis_channels() -> AsyncIterator[List[WebChatChannel]]:
    from redis import asyncio as aioredis
    probe = aioredis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await probe.ping()
    except (OSError, aioredis.RedisError) as error:
        pytest.skip(f"Redis not reachable at {REDIS_URL} ({error}); start redis-server "
                    "or set TEST_REDIS_URL")
    finally:
        await probe.close(close_connection_pool=True)
    channels = [WebChatChannel(SECRET, REDIS_URL) for _ in range(2)]
    yield channels
    for webchat in channels:
        await webchat.stop()


async def test_a_reply_from_another_gateway_process_reaches_the_socket(
        redis_channels: List[WebChatChannel], context: RecordingContext) -> None:
    holder, other = redis_channels
    app = web.Application()
    holder.install(app, context)
    async with TestServer(app) as test_server:
        client = await ChatClient().connect(str(test_server.make_url("/")))
        session_id = await client.start_session()
        # The holder subscribes to Redis when its first socket arrives; until then a
        # publication has no listener, so the other process tries until one lands.
        received = None
        for _ in range(25):
            deliveries = await other.send(session_id, [Reply(text="from process 2")], context)
            assert [d.status for d in deliveries] == ["sent"]
            try:
                received = await asyncio.wait_for(client.received["bot_uttered"].get(), 0.2)
                break
            except asyncio.TimeoutError:
                continue
        await client.leave()
    assert received == {"text": "from process 2"}
