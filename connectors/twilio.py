"""Twilio Messaging: SMS and WhatsApp through one webhook and one send API.

Inbound, Twilio POSTs form fields to `/webhooks/twilio`, signed in X-Twilio-Signature
over the URL it called plus the sorted fields; behind a proxy that URL is the public
one, so PUBLIC_BASE_URL is what we sign against. Opt-out keywords are Twilio's
compliance business: Twilio answers them and blocks its own sends, and we record the
choice so the gateway sends nothing either, and keep them away from the bot.

Outbound goes through the Messages API from the store number the customer wrote to.
Twilio has no buttons on SMS (nor free-form ones on WhatsApp), so buttons become
numbered options that the customer answers with a number.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence, Union

import aiohttp
from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import RequestValidator

from common.privacy import mask
from connectors.channel import (
    ChannelContext,
    HttpChannel,
    forbidden,
    malformed,
    with_chosen_option,
)
from connectors.config import ChannelPolicy, TwilioCredentials
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

log = logging.getLogger("connectors.twilio")

WEBHOOK_PATH = "/webhooks/twilio"
STATUS_PATH = "/webhooks/twilio/status"
WHATSAPP_PREFIX = "whatsapp:"

# Twilio's default keywords (support article "Twilio support for opt-out keywords").
OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP"})
# Twilio also treats YES as opt-in, but "yes" is an everyday answer to the bot: it only
# means opt-in from someone who is opted out.
OPT_IN_WHEN_OPTED_OUT = frozenset({"YES"})

SMS_LIMIT = 1600
WHATSAPP_LIMIT = 4096
# Twilio accepts at most 10 media per message.
MAX_MEDIA = 10

# An empty TwiML answer: Twilio sends nothing on its own, replies go through the API.
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?>\n<Response/>'


Form = MultiDictProxy[str]


class _Malformed(ValueError):
    """The form is signed and ours but not a message we can read."""


class TwilioChannel(HttpChannel):
    name = "twilio"

    def __init__(self, credentials: TwilioCredentials, policy: ChannelPolicy,
                 public_base_url: str = "", limiters: Limiters = memory_limiters) -> None:
        self.credentials = credentials
        self.public_base_url = public_base_url.rstrip("/")
        self._validator = RequestValidator(credentials.auth_token)
        self._retry = policy.retry.policy()
        self._sms_limiter = limiters("twilio_sms_per_sender",
                                     policy.rates.twilio_sms_per_sender.rate())
        self._whatsapp_limiter = limiters("twilio_whatsapp_per_sender",
                                          policy.rates.twilio_whatsapp_per_sender.rate())

    # -- inbound -----------------------------------------------------------------------

    def install(self, app: web.Application, context: ChannelContext) -> None:
        async def on_message(request: web.Request) -> web.StreamResponse:
            return await self._on_message(request, context)

        async def on_status(request: web.Request) -> web.StreamResponse:
            return await self._on_status(request, context)

        app.router.add_post(WEBHOOK_PATH, on_message)
        app.router.add_post(STATUS_PATH, on_status)

    async def _on_message(self, request: web.Request,
                          context: ChannelContext) -> web.StreamResponse:
        form = await self._verified_form(request)
        try:
            message = parse_message(form)
        except _Malformed as error:
            raise malformed(self.name, str(error)) from None
        if await self._handle_opt_keyword(message, form, context):
            return twiml()
        if not form.get("ButtonPayload"):  # a template button is not a typed number
            message = await with_chosen_option(message, context)
        if message.is_empty:
            log.info("twilio message %s has nothing to read (type %s); skipped",
                     message.message_id, form.get("MessageType", "?"))
        elif not await context.accept(message):
            log.info("twilio message %s is a duplicate; acknowledged", message.message_id)
        return twiml()

    async def _on_status(self, request: web.Request,
                         context: ChannelContext) -> web.StreamResponse:
        form = await self._verified_form(request)
        try:
            update = parse_status(form)
        except _Malformed as error:
            raise malformed(self.name, str(error)) from None
        await context.record_status(update)
        return web.Response(status=200)

    async def _verified_form(self, request: web.Request) -> Form:
        """The request's form fields, once the signature and the account are ours."""
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature:
            raise forbidden(self.name, "missing X-Twilio-Signature")
        if request.content_type != "application/x-www-form-urlencoded":
            raise malformed(self.name, f"expected a form body, got {request.content_type}")
        try:
            form = _text_fields(await request.post())
        except (ValueError, LookupError):  # LookupError: an unknown charset
            raise malformed(self.name, "form body cannot be decoded") from None
        if not self._validator.validate(self.signed_url(request), form, signature):
            raise forbidden(self.name, "X-Twilio-Signature does not match")
        if form.get("AccountSid") != self.credentials.account_sid:
            raise forbidden(self.name, "AccountSid is not this account")
        return form

    def signed_url(self, request: web.Request) -> str:
        """The URL Twilio called: the public one when a proxy sits in between."""
        if self.public_base_url:
            return self.public_base_url + request.path_qs
        # Not request.url: aiohttp 3.9 rebuilds it through yarl, and yarl >= 1.10
        # refuses a Host with a port there.
        return f"{request.scheme}://{request.host}{request.path_qs}"

    async def _handle_opt_keyword(self, message: Message, form: Form,
                                  context: ChannelContext) -> bool:
        """Record an opt-out or opt-in; True when the message was one (not for the bot)."""
        opted_out = await self._opt_choice(message.sender, form, context)
        if opted_out is None:
            return False
        await context.set_opted_out(self.name, message.sender, opted_out)
        log.info("twilio %s opted %s", mask(message.sender), "out" if opted_out else "in")
        return True

    async def _opt_choice(self, sender: str, form: Form,
                          context: ChannelContext) -> Optional[bool]:
        """True for an opt-out, False for an opt-in, None for anything else."""
        keyword = form.get("Body", "").strip().upper()
        # With Advanced Opt-Out, Twilio itself names the kind, also for custom keywords.
        kind = form.get("OptOutType", "").upper()
        if kind == "STOP" or keyword in OPT_OUT_KEYWORDS:
            return True
        if kind == "START" or keyword in OPT_IN_KEYWORDS:
            return False
        if keyword in OPT_IN_WHEN_OPTED_OUT and \
                await context.opted_out_since(self.name, sender) is not None:
            return False
        return None

    # -- outbound ----------------------------------------------------------------------

    async def send(self, recipient: str, replies: Sequence[Reply], context: ChannelContext,
                   answering: Optional[Message] = None) -> List[Delivery]:
        if await context.opted_out_since(self.name, recipient) is not None:
            log.info("twilio send to %s blocked: opted out", mask(recipient))
            return [Delivery("blocked", error="recipient opted out") for _ in replies]
        conversation_id = f"{self.name}:{recipient}"
        sender = (answering.store_address if answering is not None
                  else await context.store_address(conversation_id))
        if not sender:
            log.warning("twilio send to %s failed: no store number", mask(recipient))
            return [Delivery("failed", error="no store number: the customer never wrote to us")
                    for _ in replies]
        deliveries: List[Delivery] = []
        for reply in replies:
            if reply.buttons:
                await context.remember_options(conversation_id, reply.buttons)
            for form in self.render(recipient, sender, reply):
                deliveries.append(await self._send_one(form))
        return deliveries

    def render(self, recipient: str, sender: str, reply: Reply) -> List[Dict[str, str]]:
        """The Messages API forms for one reply: text split to the channel's limit,
        numbered options at the end, the image with the first part."""
        limit = WHATSAPP_LIMIT if is_whatsapp(recipient) else SMS_LIMIT
        bodies = _with_options(split_text(reply.text, limit), reply.buttons, limit)
        if not bodies and reply.image_url:
            bodies = [""]
        forms: List[Dict[str, str]] = []
        for index, body in enumerate(bodies):
            form = {"To": recipient, "From": sender}
            if body:
                form["Body"] = body
            if index == 0 and reply.image_url:
                form["MediaUrl"] = reply.image_url
            if self.public_base_url:
                form["StatusCallback"] = self.public_base_url + STATUS_PATH
            forms.append(form)
        return forms

    async def download(self, reference: str) -> bytes:
        """A MediaUrl of an inbound message; Twilio may require the account's basic
        auth for it, which goes only to Twilio's own API host."""
        if not reference.startswith(f"{self.credentials.api_base_url}/"):
            raise PermanentError("not a Twilio media URL")
        auth = aiohttp.BasicAuth(self.credentials.account_sid, self.credentials.auth_token)
        return await fetch(self.session, reference, auth=auth)

    async def _send_one(self, form: Dict[str, str]) -> Delivery:
        session = self.session
        url = (f"{self.credentials.api_base_url}/2010-04-01/Accounts/"
               f"{self.credentials.account_sid}/Messages.json")
        auth = aiohttp.BasicAuth(self.credentials.account_sid, self.credentials.auth_token)

        async def attempt() -> str:
            answer = await post(session, url, data=form, auth=auth)
            sid = answer.get("sid")
            if not isinstance(sid, str) or not sid:
                # Accepted without an id: retrying could send the message twice.
                raise PermanentError("Twilio answered without a message sid")
            return sid

        sender = form["From"]
        limiter = self._whatsapp_limiter if is_whatsapp(sender) else self._sms_limiter
        return await deliver(attempt, self._retry, (limiter, sender),
                             label=f"twilio {mask(form['To'])}")


# -- parsing ---------------------------------------------------------------------------

def parse_message(form: Mapping[str, str]) -> Message:
    """Twilio's inbound message fields as a `Message` (before options and opt-outs)."""
    message_id = _required(form, "MessageSid")
    sender = _required(form, "From")
    store_address = _required(form, "To")
    return Message(
        connector=TwilioChannel.name,
        channel="whatsapp" if is_whatsapp(sender) else "sms",
        sender=sender,
        message_id=message_id,
        # A quick-reply button carries its payload; the body is only its title.
        text=form.get("ButtonPayload", "") or form.get("Body", ""),
        attachments=(*_media(form), *_location(form)),
        profile_name=form.get("ProfileName", ""),
        store_address=store_address,
        # WhatsApp proves its senders' numbers; an SMS From can be spoofed on some routes
        proven_phone=sender.removeprefix(WHATSAPP_PREFIX) if is_whatsapp(sender) else "",
    )


def parse_status(form: Mapping[str, str]) -> StatusUpdate:
    code, detail = form.get("ErrorCode", ""), form.get("ErrorMessage", "")
    return StatusUpdate(
        connector=TwilioChannel.name,
        provider_message_id=_required(form, "MessageSid"),
        status=_required(form, "MessageStatus"),
        recipient=form.get("To", ""),
        error=": ".join(filter(None, (code, detail))),
    )


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise _Malformed(f"no {name}")
    return value


def _media(form: Mapping[str, str]) -> List[Attachment]:
    raw = form.get("NumMedia", "0").strip() or "0"
    if not raw.isdigit() or int(raw) > MAX_MEDIA:
        raise _Malformed("NumMedia is not a count from 0 to 10")
    attachments = []
    for index in range(int(raw)):
        url = _required(form, f"MediaUrl{index}")
        mime_type = form.get(f"MediaContentType{index}", "")
        attachments.append(Attachment(media_kind(mime_type), url, mime_type))
    return attachments


def _location(form: Mapping[str, str]) -> List[Attachment]:
    """A WhatsApp shared location, as a geo: URI."""
    latitude, longitude = form.get("Latitude", ""), form.get("Longitude", "")
    if not latitude and not longitude:
        return []
    try:
        point = f"geo:{float(latitude)},{float(longitude)}"
    except ValueError:
        raise _Malformed("Latitude/Longitude are not numbers") from None
    caption = form.get("Label", "") or form.get("Address", "")
    return [Attachment("location", point, caption=caption)]


def media_kind(mime_type: str) -> AttachmentKind:
    major = mime_type.partition("/")[0].lower()
    if major == "image":
        return "image"
    if major == "video":
        return "video"
    if major == "audio":
        return "audio"
    return "file"


def is_whatsapp(address: str) -> bool:
    return address.startswith(WHATSAPP_PREFIX)


def _with_options(bodies: List[str], buttons: Sequence[Button], limit: int) -> List[str]:
    """Append the numbered options to the last part, or as a part of their own."""
    if not buttons:
        return bodies
    options = numbered_options(buttons)
    if bodies and len(bodies[-1]) + 2 + len(options) <= limit:
        return [*bodies[:-1], f"{bodies[-1]}\n\n{options}"]
    return [*bodies, *split_text(options, limit)]


def _text_fields(fields: MultiDictProxy[Union[str, bytes, web.FileField]]) -> Form:
    """Only text fields: a urlencoded body has nothing else, and the signature is
    computed over text (repeated names keep every value)."""
    return MultiDictProxy(MultiDict(
        (name, value) for name, value in fields.items() if isinstance(value, str)))


def twiml() -> web.Response:
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")
