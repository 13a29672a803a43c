"""The REST channel: Rasa's REST contract, `{sender, message}` in and the list of
replies out, as an authenticated API for a store's own systems and for tests.

- Every request carries `Authorization: Bearer <REST_API_TOKEN>`; anything else is a 401.
- A caller's senders live in their own namespace: sender "ann" is the conversation
  "rest:ann", so no caller can name a Telegram, WhatsApp, SMS or web chat conversation.
- A message is processed like every channel's (recorded, flood-limited, handed to the
  person who has the conversation, else the bot) while the caller waits; the answer is
  what was sent to the conversation meanwhile. What a person sends later (an agent's
  reply) is read with `GET /webhooks/rest/conversations/{sender}?after=<epoch seconds>`.
- Of the message's metadata only `attachments` is read: what the channel is, whether
  it is peak time and what the sender has proven is for the gateway to say.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid
import weakref
from typing import Any, Dict, List, Optional, Sequence

from aiohttp import web

from common.pydantic_v1 import BaseModel, Extra, StrictStr, ValidationError, constr
from connectors.channel import Channel, ChannelContext
from connectors.message import (
    Attachment,
    AttachmentKind,
    Delivery,
    Message,
    Reply,
    TranscriptTurn,
)

log = logging.getLogger("connectors.rest")

CHANNEL = "rest"
WEBHOOK_PATH = "/webhooks/rest/webhook"
CONVERSATION_PATH = "/webhooks/rest/conversations/{sender}"
MAX_SENDER_CHARS = 128
MAX_TEXT_CHARS = 4096


class _Attachment(BaseModel):
    type: AttachmentKind
    url: constr(strict=True, min_length=1, max_length=2048)  # type: ignore[valid-type]
    mime_type: StrictStr = ""
    caption: constr(strict=True, max_length=1024) = ""  # type: ignore[valid-type]


class _Metadata(BaseModel):
    attachments: List[_Attachment] = []

    class Config:
        extra = Extra.ignore


class _Body(BaseModel):
    sender: constr(strict=True, strip_whitespace=True, min_length=1,  # type: ignore[valid-type]
                   max_length=MAX_SENDER_CHARS)
    message: constr(strict=True, max_length=MAX_TEXT_CHARS)  # type: ignore[valid-type]
    metadata: Optional[_Metadata] = None


def refusal(status: type[web.HTTPException], reason: str,
            headers: Optional[Dict[str, str]] = None) -> web.HTTPException:
    return status(text=json.dumps({"error": reason}), content_type="application/json",
                  headers=headers)


def parse_body(raw: bytes) -> _Body:
    """The request body, checked; a 400 naming the field when it is not a message."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise refusal(web.HTTPBadRequest, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise refusal(web.HTTPBadRequest, "the body must be a JSON object")
    try:
        return _Body.parse_obj(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise refusal(web.HTTPBadRequest, f"'{where}': {first['msg']}") from None


def as_rasa_reply(recipient: str, reply: Reply) -> Dict[str, Any]:
    """One reply in the shape of Rasa's REST channel."""
    answer: Dict[str, Any] = {"recipient_id": recipient, "text": reply.text}
    if reply.buttons:
        answer["buttons"] = [{"title": b.title, "payload": b.payload} for b in reply.buttons]
    if reply.image_url:
        answer["image"] = reply.image_url
    return answer


def as_turn(turn: TranscriptTurn) -> Dict[str, Any]:
    return {"role": turn.role, "text": turn.text, "at": turn.at,
            "buttons": [{"title": b.title, "payload": b.payload} for b in turn.buttons],
            "image": turn.image_url}


class RestChannel(Channel):
    name = CHANNEL

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the REST channel needs a token")
        self._token = token.encode()
        # what is sent to a conversation while its caller waits, by conversation id
        self._answers: Dict[str, List[Reply]] = {}
        # one request per conversation at a time in this process, so answers don't mix
        self._turns: weakref.WeakValueDictionary[str, asyncio.Lock] = \
            weakref.WeakValueDictionary()

    def install(self, app: web.Application, context: ChannelContext) -> None:
        async def webhook(request: web.Request) -> web.Response:
            self._authenticate(request)
            return await self._converse(parse_body(await request.read()), context)

        async def conversation(request: web.Request) -> web.Response:
            self._authenticate(request)
            return await self._history(request, context)

        app.router.add_post(WEBHOOK_PATH, webhook)
        app.router.add_get(CONVERSATION_PATH, conversation)

    async def start(self) -> None:
        """Nothing to open: replies go back in the HTTP answer."""

    async def stop(self) -> None:
        """Nothing to release."""

    def _authenticate(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                  self._token):
            raise refusal(web.HTTPUnauthorized, "a valid 'Authorization: Bearer <token>' "
                          "header is required", {"WWW-Authenticate": 'Bearer realm="rest"'})

    async def _converse(self, body: _Body, context: ChannelContext) -> web.Response:
        attachments = tuple(Attachment(a.type, a.url, a.mime_type, a.caption)
                            for a in (body.metadata.attachments if body.metadata else []))
        message = Message(connector=CHANNEL, channel=CHANNEL, sender=body.sender,
                          message_id=uuid.uuid4().hex, text=body.message,
                          attachments=attachments)
        if message.is_empty:
            raise refusal(web.HTTPBadRequest, "'message': empty, and no attachments")
        conversation = message.conversation_id
        turn = self._turns.setdefault(conversation, asyncio.Lock())
        async with turn:
            answer = self._answers[conversation] = []
            try:
                await context.process_now(message)
            finally:
                del self._answers[conversation]
        return web.json_response([as_rasa_reply(body.sender, reply) for reply in answer])

    async def _history(self, request: web.Request, context: ChannelContext) -> web.Response:
        sender = request.match_info["sender"].strip()
        try:
            after = float(request.query.get("after", "0"))
        except ValueError:
            raise refusal(web.HTTPBadRequest, "'after' must be epoch seconds") from None
        if not sender or len(sender) > MAX_SENDER_CHARS:
            raise refusal(web.HTTPBadRequest, "'sender' must be 1 to 128 characters")
        turns = await context.transcript(f"{CHANNEL}:{sender}")
        return web.json_response([as_turn(t) for t in turns if t.at > after])

    async def send(self, recipient: str, replies: Sequence[Reply], context: ChannelContext,
                   answering: Optional[Message] = None) -> List[Delivery]:
        """Replies go into the answer of the request in flight for this conversation;
        with none in flight (a person's later reply) they stay in the conversation's
        record, which the caller reads."""
        waiting = self._answers.get(f"{CHANNEL}:{recipient}")
        if waiting is not None:
            waiting.extend(replies)
        return [Delivery("sent", attempts=1) for _ in replies]
