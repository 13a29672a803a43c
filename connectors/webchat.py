"""Web chat connector: the chat page at `/` and a socket.io endpoint at `/socket.io/`
that speaks the protocol of the rasa-webchat widget, so that widget works unchanged.

Protocol (Engine.IO v4, socket.io-client 3 and 4):
- client `session_request {session_id}` -> server `session_confirm <session_id>` (a plain
  string, as Rasa's socketio channel sends it; rasa-webchat also reads `{session_id}`),
  then `history {turns: [...]}`, which rasa-webchat ignores and our page renders.
- client `user_uttered {message, customData, session_id}` -> `ChannelContext.accept`.
  When the client asks for an acknowledgement it gets `{status}`: accepted, duplicate,
  rejected (do not resend) or unavailable (resend later, with the same message id).
- server `bot_uttered` with `{text}`, `{text, quick_replies}` or `{attachment}`. The
  widget recognises a message by its exact set of keys, so nothing else is added.

Session ids are issued by this server and signed ("<random>.<hmac>"): a client that
presents an id it was not given gets a new one, so nobody can join another customer's
room or read another customer's history. With a Redis URL the rooms are shared through
Redis, so a reply sent by any gateway process reaches the socket, wherever it is held.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import socketio
from aiohttp import web

from common.privacy import mask
from connectors.channel import Channel, ChannelContext
from connectors.message import Button, Delivery, Message, Reply, TranscriptTurn

log = logging.getLogger("connectors.webchat")

CHANNEL = "webchat"
SOCKETIO_PATH = "socket.io"
# Engine.IO 4 over polling: packets are separated by \x1e; a client sends close (1),
# pong (3), message (4) or a base64 binary message (b). Noop (6) comes only from a
# server, and python-engineio treats one from a client as an unknown packet.
PACKET_SEPARATOR = "\x1e"
CLIENT_PACKET_TYPES = frozenset("134b")
STATIC_PREFIX = "/webchat/"
# the page and its scripts, served by this channel
PAGE_DIR = Path(__file__).parent / "webchat_page"

MAX_TEXT_CHARS = 4096
MAX_SESSION_ID_CHARS = 128
MAX_CLIENT_MESSAGE_ID_CHARS = 64
# One utterance is at most 4,096 characters (16 KB in UTF-8) plus a little JSON;
# anything bigger is refused by Engine.IO before it reaches a handler.
MAX_PACKET_BYTES = 64 * 1024
# With Redis (several gateway processes), a reply is published there: a Redis that
# stops answering fails the connection or the reply after this long, a failed delivery,
# instead of holding the conversation. The listener keeps no socket timeout:
# python-socketio would take a quiet subscription's timeout for an outage.
REDIS_WAIT_SECONDS = 2.0

# The MAC covers a purpose label too, so a MAC made with the same secret for something
# else can never pass for a session id.
_SESSION_MAC_LABEL = b"webchat-session:"

# The page may be framed by the store's site, loads images from anywhere, and talks
# only to the gateway it came from.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' https: http: data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'self'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

AckStatus = Dict[str, str]


class SessionSigner:
    """Issues session ids "<random>.<mac>" and recognises the ones it issued."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the web chat needs a non-empty secret to sign session ids")
        self._secret = secret

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(16)
        return f"{nonce}.{self._mac(nonce)}"

    def verify(self, session_id: str) -> bool:
        if len(session_id) > MAX_SESSION_ID_CHARS:
            return False
        nonce, _, mac = session_id.partition(".")
        if not nonce or not mac:
            return False
        # Bytes: compare_digest refuses str with non-ASCII characters.
        return hmac.compare_digest(self._mac(nonce).encode(), mac.encode())

    def _mac(self, nonce: str) -> str:
        digest = hmac.new(self._secret, _SESSION_MAC_LABEL + nonce.encode(),
                          hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class Utterance:
    """A `user_uttered` payload, checked."""

    session_id: str
    text: str
    client_message_id: str


class Refused(ValueError):
    """A `user_uttered` payload that is not processed; the reason is safe to log."""


class NothingSaid(Refused):
    """No text at all: what rasa-webchat sends on every load when its `initPayload` is
    null, so not worth a warning."""


def parse_utterance(payload: object) -> Utterance:
    if not isinstance(payload, dict):
        raise Refused("payload is not an object")
    text, session_id = payload.get("message"), payload.get("session_id")
    if text is None:
        raise NothingSaid("no message")
    if not isinstance(text, str):
        raise Refused("message is not a string")
    if not text.strip():
        raise NothingSaid("message is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise Refused(f"message longer than {MAX_TEXT_CHARS} characters")
    if not isinstance(session_id, str):
        raise Refused("session_id missing")
    return Utterance(session_id, text, _client_message_id(payload.get("customData")))


def _client_message_id(custom_data: object) -> str:
    if not isinstance(custom_data, dict):
        return ""
    value = custom_data.get("message_id")
    if isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_MESSAGE_ID_CHARS:
        return value
    return ""


def message_id_for(session_id: str, client_message_id: str) -> str:
    """The dedupe key of an utterance. A client that numbers its messages resends the
    same id after a lost acknowledgement, and the duplicate is dropped; the id is scoped
    to the session, so no client can shadow another session's messages. Without a
    client id every utterance is new: a socket re-send is then indistinguishable from
    the customer writing the same words again, which must not be dropped."""
    if not client_message_id:
        return uuid.uuid4().hex
    nonce = session_id.partition(".")[0]
    return f"{nonce}:{client_message_id}"


def render_reply(reply: Reply) -> List[Dict[str, Any]]:
    """The `bot_uttered` payloads for one reply: text (with its quick replies), then
    the image. A reply with neither sends nothing."""
    events: List[Dict[str, Any]] = []
    if reply.buttons:
        events.append({"text": reply.text, "quick_replies": quick_replies(reply.buttons)})
    elif reply.text:
        events.append({"text": reply.text})
    if reply.image_url:
        events.append({"attachment": {"type": "image", "payload": {"src": reply.image_url}}})
    return events


def quick_replies(buttons: Sequence[Button]) -> List[Dict[str, str]]:
    return [{"content_type": "text", "title": b.title, "payload": b.payload} for b in buttons]


def history_turn(turn: TranscriptTurn) -> Dict[str, Any]:
    entry: Dict[str, Any] = {"role": turn.role, "text": turn.text, "at": turn.at}
    if turn.buttons:
        entry["quick_replies"] = quick_replies(turn.buttons)
    if turn.image_url:
        entry["image"] = turn.image_url
    return entry


def conversation_id(session_id: str) -> str:
    return f"{CHANNEL}:{session_id}"


class WebChatChannel(Channel):
    name = CHANNEL

    def __init__(self, secret: bytes, redis_url: Optional[str] = None,
                 *, allowed_origins: Union[str, List[str]] = "*") -> None:
        # Any origin by default: the widget is meant to be embedded in the store's own
        # site. That is safe because the socket carries no ambient credential (no
        # cookie): a session is only what the page itself presents, signed.
        self._signer = SessionSigner(secret)
        manager = socketio.AsyncRedisManager(
            redis_url, redis_options={"socket_connect_timeout": REDIS_WAIT_SECONDS}) \
            if redis_url else None
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp", cors_allowed_origins=allowed_origins,
            client_manager=manager, max_http_buffer_size=MAX_PACKET_BYTES,
            logger=False, engineio_logger=False)

    # the gateway side

    def install(self, app: web.Application, context: ChannelContext) -> None:
        async def on_session_request(sid: str, *args: Any) -> None:
            await self._confirm_session(sid, args[0] if args else None, context)

        async def on_user_uttered(sid: str, *args: Any) -> AckStatus:
            return await self._receive(sid, args[0] if args else None, context)

        async def page(request: web.Request) -> web.FileResponse:
            return web.FileResponse(PAGE_DIR / "index.html", headers=_PAGE_HEADERS)

        self.sio.on("session_request", on_session_request)
        self.sio.on("user_uttered", on_user_uttered)
        # as sio.attach() would route it, but a polling POST is checked first
        path = f"/{SOCKETIO_PATH}/"
        app.router.add_get(path, self.sio.handle_request)
        app.router.add_route("OPTIONS", path, self.sio.handle_request)
        app.router.add_post(path, self._polling_post)
        app.router.add_get("/", page)
        app.router.add_static(STATIC_PREFIX, PAGE_DIR)
        # aiohttp 3.9's signal annotation does not match aiosignal 1.4's ParamSpec one.
        app.on_shutdown.append(self._close_sockets)  # type: ignore[arg-type, unused-ignore]

    async def _polling_post(self, request: web.Request) -> web.StreamResponse:
        """Packets a client sends on a polling session, checked before Engine.IO sees
        them: on a packet it does not expect from a client (open, ping, noop) or a
        body over its buffer size, python-engineio 4 closes the session waiting for
        a queue no one reads, and never answers that POST, which leaves the request
        hanging and the session in memory."""
        body = await request.read()
        if len(body) > MAX_PACKET_BYTES:
            return web.Response(status=413, text="packets too large")
        packets = body.decode("utf-8", errors="replace").split(PACKET_SEPARATOR)
        if any(packet[:1] not in CLIENT_PACKET_TYPES for packet in packets):
            return web.Response(status=400, text="not a packet a client sends")
        response: web.StreamResponse = await self.sio.handle_request(
            _WithBody(request, body))
        return response

    async def start(self) -> None:
        # The Redis listener starts with the first socket; nothing to open before.
        return None

    async def stop(self) -> None:
        await self.sio.shutdown()
        await self._stop_redis_listener()

    async def _stop_redis_listener(self) -> None:
        # python-socketio starts a Redis listener task with the first socket and has no
        # call that ends it or closes its connections.
        manager = self.sio.manager
        listener = getattr(manager, "thread", None)
        if isinstance(listener, asyncio.Task):
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        pubsub = getattr(manager, "pubsub", None)
        if pubsub is not None:
            await pubsub.reset()
        redis = getattr(manager, "redis", None)
        if redis is not None:
            # redis 4.6 leaves the pool's sockets open unless told.
            await redis.close(close_connection_pool=True)

    async def send(self, recipient: str, replies: Sequence[Reply], context: ChannelContext,
                   answering: Optional[Message] = None) -> List[Delivery]:
        deliveries = []
        for reply in replies:
            for event in render_reply(reply):
                deliveries.append(await self._emit(recipient, event))
        return deliveries

    # inbound

    async def _confirm_session(self, sid: str, payload: object,
                               context: ChannelContext) -> None:
        requested = payload.get("session_id") if isinstance(payload, dict) else None
        if isinstance(requested, str) and self._signer.verify(requested):
            session_id = requested
        else:
            session_id = self._signer.issue()
            if requested:
                log.warning("webchat: unsigned or forged session id refused; issued %s",
                            mask(session_id))
        previous = (await self.sio.get_session(sid)).get("session_id")
        if previous and previous != session_id:
            await self.sio.leave_room(sid, previous)
        # Join before reading the transcript: a reply sent meanwhile is then either in
        # the history or delivered live, never lost.
        await self.sio.enter_room(sid, session_id)
        await self.sio.save_session(sid, {"session_id": session_id})
        turns = await self._history(session_id, context)
        await self.sio.emit("session_confirm", session_id, to=sid)
        if turns is not None:
            await self.sio.emit("history", {"turns": turns}, to=sid)

    async def _history(self, session_id: str,
                       context: ChannelContext) -> Optional[List[Dict[str, Any]]]:
        try:
            turns = await context.transcript(conversation_id(session_id))
        except Exception as error:  # the chat works on without its history
            log.error("webchat: history of %s unavailable: %s", mask(session_id),
                      type(error).__name__)
            return None
        return [history_turn(turn) for turn in turns]

    async def _receive(self, sid: str, payload: object, context: ChannelContext) -> AckStatus:
        confirmed = (await self.sio.get_session(sid)).get("session_id")
        if not confirmed:
            log.warning("webchat: utterance from a socket without a session ignored")
            return {"status": "rejected", "reason": "no session"}
        try:
            utterance = parse_utterance(payload)
        except Refused as refused:
            level = logging.DEBUG if isinstance(refused, NothingSaid) else logging.WARNING
            log.log(level, "webchat: utterance of %s ignored: %s", mask(confirmed), refused)
            return {"status": "rejected", "reason": str(refused)}
        if utterance.session_id != confirmed:
            log.warning("webchat: utterance for another session than %s's ignored",
                        mask(confirmed))
            return {"status": "rejected", "reason": "session mismatch"}
        message = Message(
            connector=CHANNEL, channel=CHANNEL, sender=confirmed, text=utterance.text,
            message_id=message_id_for(confirmed, utterance.client_message_id))
        try:
            accepted = await context.accept(message)
        except Exception as error:  # the client may resend with the same message id
            log.error("webchat: utterance of %s not accepted: %s", mask(confirmed),
                      type(error).__name__)
            return {"status": "unavailable"}
        return {"status": "accepted" if accepted else "duplicate"}

    # outbound

    async def _emit(self, recipient: str, event: Dict[str, Any]) -> Delivery:
        try:
            await asyncio.wait_for(self.sio.emit("bot_uttered", event, room=recipient),
                                   REDIS_WAIT_SECONDS)
        except Exception as error:  # a Redis outage, say: recorded, never raised
            log.error("webchat: reply to %s not sent: %s", mask(recipient),
                      type(error).__name__)
            return Delivery("failed", error=type(error).__name__, attempts=1)
        return Delivery("sent", provider_message_id=uuid.uuid4().hex, attempts=1)

    async def _close_sockets(self, app: web.Application) -> None:
        # A websocket left open holds the server's shutdown for Engine.IO's whole ping
        # timeout (45 s): its handler swallows the cancellation aiohttp sends. The
        # public `eio.disconnect()` would wait until every client has fetched its CLOSE
        # packet, forever for a polling client that is gone. So: queue the CLOSE, then
        # the end-of-stream marker that ends the socket's writer (and a pending poll)
        # right after it. Clients answer a CLOSE by reconnecting, to another process
        # or to this one restarted.
        for socket in list(self.sio.eio.sockets.values()):
            await socket.close(wait=False)
            socket.queue.put_nowait(None)
        self.sio.eio.sockets.clear()


class _BodyAlreadyRead:
    def __init__(self, body: bytes) -> None:
        self.body = body

    async def read(self, length: int = -1) -> bytes:
        return self.body


class _WithBody:
    """The request as Engine.IO reads it (`content`), with the body already read."""

    def __init__(self, request: web.Request, body: bytes) -> None:
        self._request = request
        self.content = _BodyAlreadyRead(body)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)
