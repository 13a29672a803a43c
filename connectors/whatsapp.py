"""WhatsApp Cloud API (Meta) connector.

Inbound: `GET /webhooks/whatsapp` answers Meta's subscription handshake; `POST` carries
messages and status callbacks, signed with X-Hub-Signature-256 (HMAC-SHA256 of the raw
body with the app secret). The payload is parsed once, here, into typed models; nothing
past this module sees Meta's JSON.

Outbound: `POST {api_base_url}/{phone_number_id}/messages`. Replies become text, reply
buttons (up to 3), a list (up to 10 rows) or numbered options, and images. Outside the
customer-service window only the approved template from policy/channels.yml is sent.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from aiohttp import web
from yarl import URL

from common.privacy import mask
from common.pydantic_v1 import BaseModel, Field, ValidationError
from connectors.channel import (
    ChannelContext,
    HttpChannel,
    forbidden,
    json_object_body,
    malformed,
    with_chosen_option,
)
from connectors.config import ChannelPolicy, WhatsAppCredentials
from connectors.message import (
    Attachment,
    AttachmentKind,
    Button,
    Delivery,
    Message,
    Reply,
    StatusUpdate,
)
from connectors.outbound import (
    Limiters,
    PermanentError,
    deliver,
    fetch,
    memory_limiters,
    post,
)
from connectors.render import numbered_options, split_text

log = logging.getLogger("connectors.whatsapp")

CHANNEL = "whatsapp"
WEBHOOK_PATH = "/webhooks/whatsapp"
SIGNATURE_HEADER = "X-Hub-Signature-256"

# Meta's customer-service window: a business may send free-form messages only within
# 24 hours of the customer's last message to it; after that, only approved template
# messages (Cloud API error 131047 otherwise).
SERVICE_WINDOW_SECONDS = 24 * 60 * 60

# Documented Cloud API limits, in characters.
TEXT_LIMIT = 4096
INTERACTIVE_BODY_LIMIT = 1024
CAPTION_LIMIT = 1024
MAX_REPLY_BUTTONS = 3
BUTTON_TITLE_LIMIT = 20
BUTTON_ID_LIMIT = 256
MAX_LIST_ROWS = 10
ROW_TITLE_LIMIT = 24
ROW_DESCRIPTION_LIMIT = 72
ROW_ID_LIMIT = 200

LIST_BUTTON_LABEL = "Choose"
# Interactive messages need a body; a reply with buttons but no text still gets one.
DEFAULT_PROMPT = "Please choose an option."

# Meta answers these with HTTP 400 as often as 429, yet waiting helps: 4 (app call
# limit), 80007 (account rate limit), 130429 (throughput), 131056 (pair rate limit),
# and 2 / 131016 (service temporarily unavailable).
TRANSIENT_ERROR_CODES = frozenset({2, 4, 80007, 130429, 131016, 131056})


# Meta media have no public URL: they are fetched from the Graph API by id.
_MEDIA_KINDS: Dict[str, AttachmentKind] = {
    "image": "image", "video": "video", "audio": "audio", "document": "file",
}
# An option number is at most two digits and a dot; only then is a lookup worth it.


# --- Meta's webhook payload, as documented (unknown fields are ignored) ----------------

class _Text(BaseModel):
    body: str


class _ChosenReply(BaseModel):
    id: str
    title: str = ""


class _Interactive(BaseModel):
    type: str
    button_reply: Optional[_ChosenReply] = None
    list_reply: Optional[_ChosenReply] = None


class _QuickReply(BaseModel):
    payload: str = ""
    text: str = ""


class _Media(BaseModel):
    id: str
    mime_type: str = ""
    caption: str = ""


class _Location(BaseModel):
    latitude: float
    longitude: float
    name: str = ""
    address: str = ""


class _InboundMessage(BaseModel):
    sender: str = Field(alias="from")
    id: str
    type: str
    timestamp: Optional[str] = None
    text: Optional[_Text] = None
    interactive: Optional[_Interactive] = None
    button: Optional[_QuickReply] = None
    image: Optional[_Media] = None
    video: Optional[_Media] = None
    audio: Optional[_Media] = None
    document: Optional[_Media] = None
    location: Optional[_Location] = None


class _ErrorData(BaseModel):
    details: str = ""


class _StatusError(BaseModel):
    code: int
    title: str = ""
    message: str = ""
    error_data: Optional[_ErrorData] = None


class _Status(BaseModel):
    id: str
    status: str
    timestamp: Optional[str] = None
    recipient_id: str = ""
    errors: List[_StatusError] = []


class _Profile(BaseModel):
    name: str = ""


class _Contact(BaseModel):
    wa_id: str
    profile: Optional[_Profile] = None


class _Metadata(BaseModel):
    phone_number_id: str
    display_phone_number: str = ""


class _MessagesValue(BaseModel):
    metadata: _Metadata
    contacts: List[_Contact] = []
    messages: List[_InboundMessage] = []
    statuses: List[_Status] = []


class _Change(BaseModel):
    field: str
    value: Dict[str, Any]


class _Entry(BaseModel):
    id: str
    changes: List[_Change] = []


class _Notification(BaseModel):
    object: str
    entry: List[_Entry]


@dataclass(frozen=True)
class _Received:
    message: Message
    typed: bool  # free text the customer typed, which may be an option number


@dataclass(frozen=True)
class _Events:
    messages: List[_Received]
    statuses: List[StatusUpdate]


class WhatsAppChannel(HttpChannel):
    """Meta's WhatsApp Cloud API, webhooks and Graph API sends."""

    name = CHANNEL

    def __init__(self, credentials: WhatsAppCredentials, policy: ChannelPolicy,
                 limiters: Limiters = memory_limiters) -> None:
        self.credentials = credentials
        self.policy = policy
        self._retry = policy.retry.policy()
        self._per_number = limiters("whatsapp_per_number",
                                    policy.rates.whatsapp_per_number.rate())
        self._per_recipient = limiters("whatsapp_per_recipient",
                                       policy.rates.whatsapp_per_recipient.rate())

    # --- inbound ---------------------------------------------------------------------

    def install(self, app: web.Application, context: ChannelContext) -> None:
        async def receive(request: web.Request) -> web.Response:
            return await self._receive(request, context)

        app.router.add_get(WEBHOOK_PATH, self._verify_subscription)
        app.router.add_post(WEBHOOK_PATH, receive)

    async def _verify_subscription(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("hub.mode") != "subscribe":
            raise forbidden(CHANNEL, "hub.mode is not subscribe")
        if not _equal(query.get("hub.verify_token", ""), self.credentials.verify_token):
            raise forbidden(CHANNEL, "wrong hub.verify_token")
        return web.Response(text=query.get("hub.challenge", ""), content_type="text/plain")

    async def _receive(self, request: web.Request, context: ChannelContext) -> web.Response:
        body = await request.read()
        if not self._signed(body, request.headers.get(SIGNATURE_HEADER, "")):
            raise forbidden(CHANNEL, f"bad or missing {SIGNATURE_HEADER}")
        # parsed here, not by pydantic: it takes a top-level list of pairs for an object
        # and then raises TypeError on a key that is not a string
        notification = json_object_body(CHANNEL, body)
        try:
            events = _events(_Notification.parse_obj(notification), self.credentials.api_base_url)
        except ValueError as error:  # pydantic's ValidationError and ours alike
            raise malformed(CHANNEL, _reason(error)) from None
        for received in events.messages:
            message = received.message
            if received.typed:
                message = await with_chosen_option(message, context)
            await self._accept(message, context)
        for update in events.statuses:
            await context.record_status(update)
        return web.Response(text="ok")

    def _signed(self, body: bytes, header: str) -> bool:
        digest = hmac.new(self.credentials.app_secret.encode(), body, hashlib.sha256)
        return _equal(header, f"sha256={digest.hexdigest()}")

    @staticmethod
    async def _accept(message: Message, context: ChannelContext) -> None:
        if not await context.accept(message):
            log.info("whatsapp duplicate %s from %s ignored", message.message_id,
                     mask(message.sender))

    # --- outbound --------------------------------------------------------------------

    async def send(self, recipient: str, replies: Sequence[Reply], context: ChannelContext,
                   answering: Optional[Message] = None) -> List[Delivery]:
        if not replies:
            return []
        if await context.opted_out_since(CHANNEL, recipient) is not None:
            return [Delivery("blocked", error="opted out") for _ in replies]
        conversation = f"{CHANNEL}:{recipient}"
        wrote = (answering.received_at if answering is not None
                 else await context.last_inbound_at(conversation))
        if not _window_open(wrote):
            return await self._send_window_closed(recipient, replies)
        deliveries: List[Delivery] = []
        for reply in replies:
            for payload in await _render(reply, conversation, context):
                deliveries.append(await self._send_payload(recipient, payload))
        return deliveries

    async def _send_window_closed(self, recipient: str,
                                  replies: Sequence[Reply]) -> List[Delivery]:
        """One approved template invites the customer back; the free text is held back,
        because Meta refuses it outside the window (and it would cost trust anyway)."""
        template = self.policy.whatsapp.window_closed_template
        log.info("whatsapp window closed for %s: template %s instead of %d replies",
                 mask(recipient), template.name, len(replies))
        sent = await self._send_payload(recipient, {
            "type": "template",
            "template": {"name": template.name, "language": {"code": template.language}},
        })
        blocked = Delivery("blocked", error="outside the 24-hour window")
        return [replace(sent, template=template.name), *([blocked] * len(replies))]

    async def _send_payload(self, recipient: str, payload: Dict[str, Any]) -> Delivery:
        request = {"messaging_product": "whatsapp", "recipient_type": "individual",
                   "to": recipient, **payload}

        async def attempt() -> str:
            return await self._post_message(request)

        return await deliver(
            attempt, self._retry,
            (self._per_number, self.credentials.phone_number_id),
            (self._per_recipient, recipient),
            label=f"whatsapp {payload['type']} to {mask(recipient)}",
        )

    async def download(self, reference: str) -> bytes:
        """Media of an inbound message: its id resolves to a short-lived URL, both
        behind the access token (Graph API, "Retrieve Media URL")."""
        if not reference.startswith(f"{self.credentials.api_base_url}/"):
            raise PermanentError("not a WhatsApp media reference")
        headers = {"Authorization": f"Bearer {self.credentials.access_token}"}
        try:
            media = json.loads(await fetch(self.session, reference, headers=headers))
        except ValueError as error:
            raise PermanentError("the media answer is not JSON") from error
        url = media.get("url") if isinstance(media, dict) else None
        api_host = str(URL(self.credentials.api_base_url).origin())
        if not isinstance(url, str) or not url.startswith(("https://", f"{api_host}/")):
            raise PermanentError("the media answer has no URL")
        return await fetch(self.session, url, headers=headers)

    async def _post_message(self, request: Dict[str, Any]) -> str:
        url = f"{self.credentials.api_base_url}/{self.credentials.phone_number_id}/messages"
        headers = {"Authorization": f"Bearer {self.credentials.access_token}"}
        answer = await post(self.session, url, json=request, headers=headers,
                            transient_error=_rate_limited)
        sent = answer.get("messages")
        if isinstance(sent, list) and sent and isinstance(sent[0], dict):
            return str(sent[0].get("id", ""))
        return ""


# --- inbound helpers -------------------------------------------------------------------

def _equal(given: str, expected: str) -> bool:
    """Constant-time comparison that also tolerates non-ASCII input."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def _reason(error: ValueError) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"
    return str(error)


def _events(notification: _Notification, media_base_url: str) -> _Events:
    if notification.object != "whatsapp_business_account":
        raise ValueError(f"object {notification.object!r}")
    messages: List[_Received] = []
    statuses: List[StatusUpdate] = []
    for entry in notification.entry:
        for change in entry.changes:
            # Other fields (template reviews, account updates) are not ours to handle.
            if change.field != "messages":
                continue
            value = _MessagesValue.parse_obj(change.value)
            messages.extend(_messages(value, media_base_url))
            statuses.extend(_status_update(status) for status in value.statuses)
    return _Events(messages, statuses)


def _messages(value: _MessagesValue, media_base_url: str) -> List[_Received]:
    names = {contact.wa_id: contact.profile.name if contact.profile else ""
             for contact in value.contacts}
    messages: List[_Received] = []
    for inbound in value.messages:
        content = _content(inbound, media_base_url)
        if content is None:
            log.info("whatsapp %s message %s skipped: type not supported",
                     inbound.type, inbound.id)
            continue
        text, attachments = content
        message = Message(
            connector=CHANNEL, channel=CHANNEL, sender=inbound.sender,
            message_id=inbound.id, text=text, attachments=attachments,
            profile_name=names.get(inbound.sender, ""),
            store_address=value.metadata.phone_number_id,
            received_at=_sent_at(inbound.timestamp),
            # a wa_id is the number WhatsApp verified, with its country code, without '+'
            proven_phone=f"+{inbound.sender}" if inbound.sender.isdigit() else "",
        )
        messages.append(_Received(message, typed=inbound.type == "text"))
    return messages


def _content(inbound: _InboundMessage,
             media_base_url: str) -> Optional[Tuple[str, Tuple[Attachment, ...]]]:
    """The text (a button's payload when one was pressed) and attachments, or None
    for a type the bot cannot use (stickers, reactions, contacts ...)."""
    if inbound.type == "text" and inbound.text:
        return inbound.text.body, ()
    if inbound.type == "interactive" and inbound.interactive:
        chosen = inbound.interactive.button_reply or inbound.interactive.list_reply
        return (chosen.id, ()) if chosen else None
    if inbound.type == "button" and inbound.button:
        return inbound.button.payload or inbound.button.text, ()
    if inbound.type == "location" and inbound.location:
        place = inbound.location
        caption = place.name or place.address
        return "", (Attachment("location", f"geo:{place.latitude},{place.longitude}",
                               caption=caption),)
    kind = _MEDIA_KINDS.get(inbound.type)
    media: Optional[_Media] = getattr(inbound, inbound.type, None) if kind else None
    if kind and media:
        url = f"{media_base_url}/{media.id}"
        return media.caption, (Attachment(kind, url, media.mime_type, media.caption),)
    return None


def _sent_at(timestamp: Optional[str]) -> float:
    """When the customer sent it, which is what Meta's window counts from; a webhook
    retried for hours must not make the window look younger than it is."""
    now = time.time()
    try:
        return min(float(timestamp), now) if timestamp else now
    except ValueError:
        return now


def _status_update(status: _Status) -> StatusUpdate:
    return StatusUpdate(
        connector=CHANNEL, provider_message_id=status.id, status=status.status,
        recipient=status.recipient_id,
        error="; ".join(_error_text(error) for error in status.errors),
        at=_sent_at(status.timestamp),
    )


def _error_text(error: _StatusError) -> str:
    details = error.error_data.details if error.error_data else ""
    summary = error.title or error.message
    return f"{error.code} {summary}: {details}" if details else f"{error.code} {summary}"


# --- outbound helpers ------------------------------------------------------------------

def _window_open(last_inbound_at: Optional[float]) -> bool:
    return (last_inbound_at is not None
            and time.time() - last_inbound_at < SERVICE_WINDOW_SECONDS)


async def _render(reply: Reply, conversation: str,
                  context: ChannelContext) -> List[Dict[str, Any]]:
    """One reply as Cloud API message payloads, in the order they are sent. An image
    goes first, so that any buttons end up last, where the customer answers."""
    text = reply.text.strip()
    payloads: List[Dict[str, Any]] = []
    if reply.image_url:
        if text and not reply.buttons and len(text) <= CAPTION_LIMIT:
            return [_image(reply.image_url, text)]
        payloads.append(_image(reply.image_url, ""))
    if reply.buttons:
        payloads.extend(await _render_buttons(text, reply.buttons, conversation, context))
    else:
        payloads.extend(_text(part) for part in split_text(text, TEXT_LIMIT))
    return payloads


async def _render_buttons(text: str, buttons: Sequence[Button], conversation: str,
                          context: ChannelContext) -> List[Dict[str, Any]]:
    if _fit_reply_buttons(buttons):
        leading, body = _leading_and_body(text)
        return [*map(_text, leading), _reply_buttons(body, buttons)]
    if _fit_list(buttons):
        leading, body = _leading_and_body(text)
        return [*map(_text, leading), _list(body, buttons)]
    await context.remember_options(conversation, buttons)
    options = numbered_options(buttons)
    parts = split_text(text, TEXT_LIMIT)
    if parts and len(parts[-1]) + 2 + len(options) <= TEXT_LIMIT:
        parts[-1] = f"{parts[-1]}\n\n{options}"
    else:
        parts.append(options)
    return [_text(part) for part in parts]


def _fit_reply_buttons(buttons: Sequence[Button]) -> bool:
    titles = [_shorten(button.title, BUTTON_TITLE_LIMIT) for button in buttons]
    return (len(buttons) <= MAX_REPLY_BUTTONS and _ids_fit(buttons, BUTTON_ID_LIMIT)
            and len(set(titles)) == len(titles))


def _fit_list(buttons: Sequence[Button]) -> bool:
    return len(buttons) <= MAX_LIST_ROWS and _ids_fit(buttons, ROW_ID_LIMIT)


def _ids_fit(buttons: Sequence[Button], limit: int) -> bool:
    """Payloads travel as button ids, which Meta wants unique, non-empty and short;
    otherwise numbered options carry any payload."""
    payloads = [button.payload for button in buttons]
    return (all(0 < len(payload) <= limit for payload in payloads)
            and len(set(payloads)) == len(payloads))


def _leading_and_body(text: str) -> Tuple[List[str], str]:
    """An interactive body holds 1,024 characters: the text before goes as text."""
    parts = split_text(text, INTERACTIVE_BODY_LIMIT) or [DEFAULT_PROMPT]
    if len(parts) == 1:
        return [], parts[0]
    return split_text(" ".join(parts[:-1]), TEXT_LIMIT), parts[-1]


def _shorten(title: str, limit: int) -> str:
    title = title.strip()
    return title if len(title) <= limit else title[:limit - 1].rstrip() + "…"


def _text(body: str) -> Dict[str, Any]:
    return {"type": "text", "text": {"body": body}}


def _image(url: str, caption: str) -> Dict[str, Any]:
    image = {"link": url, "caption": caption} if caption else {"link": url}
    return {"type": "image", "image": image}


def _reply_buttons(body: str, buttons: Sequence[Button]) -> Dict[str, Any]:
    return {"type": "interactive", "interactive": {
        "type": "button",
        "body": {"text": body},
        "action": {"buttons": [
            {"type": "reply",
             "reply": {"id": button.payload,
                       "title": _shorten(button.title, BUTTON_TITLE_LIMIT)}}
            for button in buttons
        ]},
    }}


def _list(body: str, buttons: Sequence[Button]) -> Dict[str, Any]:
    return {"type": "interactive", "interactive": {
        "type": "list",
        "body": {"text": body},
        "action": {"button": LIST_BUTTON_LABEL, "sections": [
            {"rows": [_row(button) for button in buttons]},
        ]},
    }}


def _row(button: Button) -> Dict[str, str]:
    """A row title holds 24 characters; a longer one is cut, and the description
    (72 characters) shows it in full, or as much as fits."""
    title = _shorten(button.title, ROW_TITLE_LIMIT)
    row = {"id": button.payload, "title": title}
    if title != button.title.strip():
        row["description"] = _shorten(button.title, ROW_DESCRIPTION_LIMIT)
    return row


def _rate_limited(answer: Dict[str, Any]) -> bool:
    """Meta reports rate limits and brief outages as HTTP 400 with its own codes."""
    error = answer.get("error")
    return isinstance(error, dict) and error.get("code") in TRANSIENT_ERROR_CODES
