"""Telegram Bot API connector, built on python-telegram-bot (PTB).

Inbound: `POST /webhooks/telegram`. Telegram echoes the `secret_token` given to
setWebhook in X-Telegram-Bot-Api-Secret-Token; the body is parsed once, here, into
PTB's typed `Update`, and nothing past this module sees Telegram's JSON. Messages
(text, photos, documents and other media) and callback queries (inline keyboard
presses) become `Message`s; every callback query is answered, in the background.

Outbound: PTB's `Bot` calls sendMessage and sendPhoto; buttons become an inline
keyboard. The Bot is never `initialize()`d: that calls getMe, and the gateway must
start while Telegram is unreachable. Bot API methods need only the HTTP client, whose
life this channel manages itself (`start`/`stop`).

Files: a photo or document arrives as an attachment whose url is `tg-file:<file_id>`,
not a download URL, because Telegram's download URL carries the bot token and expires
after an hour. `TelegramChannel.download` fetches the bytes when someone needs them.

Callback data: a button's payload goes verbatim into callback_data when it fits in
Telegram's 64 bytes; otherwise callback_data is `opt:<hash of the payload>` and the
button is kept with `ChannelContext.remember_options`, to map the press back.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Iterator, List, Optional, Sequence, Set, Tuple, Union

import aiohttp
from aiohttp import web
from telegram import (
    Audio,
    Bot,
    CallbackQuery,
    Document,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Update,
    User,
    Video,
    Voice,
)
from telegram import Message as TelegramMessage
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import BaseRequest, RequestData
from telegram.warnings import PTBDeprecationWarning

from common.privacy import mask
from connectors.channel import Channel, ChannelContext, forbidden, json_object_body, malformed
from connectors.config import ChannelPolicy, TelegramCredentials
from connectors.message import Attachment, AttachmentKind, Button, Delivery, Message, Reply
from connectors.outbound import (
    Limiters,
    PermanentError,
    TransientError,
    deliver,
    memory_limiters,
)
from connectors.render import split_text

log = logging.getLogger("connectors.telegram")

CHANNEL = "telegram"
WEBHOOK_PATH = "/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ("message", "callback_query")
FILE_SCHEME = "tg-file:"

# Documented Bot API limits: characters for texts, UTF-8 bytes for callback_data.
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64

# sendMessage refuses an empty text, and a keyboard needs a message to hang on.
DEFAULT_PROMPT = "Please choose an option."

# Long payloads offered earlier stay mappable after newer keyboards, up to this many.
REMEMBERED_OPTIONS = 50

# What setWebhook accepts as secret_token.
_SECRET_FORMAT = re.compile(r"[A-Za-z0-9_-]{1,256}")
_HASHED_DATA = re.compile(r"opt:[0-9a-f]{16}")

_Media = Union[Document, Video, Voice, Audio]


class TelegramSetupError(RuntimeError):
    """Telegram refused to configure the bot (setWebhook); the message says why."""


class TelegramChannel(Channel):
    name = CHANNEL

    def __init__(self, credentials: TelegramCredentials, policy: ChannelPolicy,
                 limiters: Limiters = memory_limiters) -> None:
        self._secret = credentials.secret_token.encode()
        self._token = credentials.bot_token
        self._bot = _new_bot(credentials)
        self._retry = policy.retry.policy()
        self._per_chat = limiters("telegram_per_chat", policy.rates.telegram_per_chat.rate())
        self._overall = limiters("telegram_overall", policy.rates.telegram_overall.rate())
        self._answers: Set[asyncio.Task[Delivery]] = set()

    def install(self, app: web.Application, context: ChannelContext) -> None:
        async def webhook(request: web.Request) -> web.Response:
            return await self._receive(request, context)

        app.router.add_post(WEBHOOK_PATH, webhook)

    async def start(self) -> None:
        # Opens the HTTP client only (again, after a stop); no request is made.
        await self._bot.request.initialize()

    async def stop(self) -> None:
        if self._answers:
            _, pending = await asyncio.wait(set(self._answers), timeout=2)
            for task in pending:
                task.cancel()
        await self._bot.request.shutdown()

    # -- inbound -------------------------------------------------------------------

    async def _receive(self, request: web.Request, context: ChannelContext) -> web.Response:
        self._check_secret(request.headers.get(SECRET_HEADER))
        update = self._parse(await request.read())
        if update.callback_query is not None:
            self._answer_later(update.callback_query.id)
        message = await self._message(update, context)
        if message is None:
            log.debug("telegram update %d ignored: no message content", update.update_id)
        elif not await context.accept(message):
            log.info("telegram update %d from %s is a duplicate", update.update_id,
                     mask(message.sender))
        return web.Response(text="ok")

    def _check_secret(self, header: Optional[str]) -> None:
        if header is None:
            raise forbidden(CHANNEL, f"missing {SECRET_HEADER}")
        if not hmac.compare_digest(header.encode(), self._secret):
            raise forbidden(CHANNEL, f"wrong {SECRET_HEADER}")

    def _parse(self, body: bytes) -> Update:
        data = json_object_body(CHANNEL, body)
        try:
            update = Update.de_json(data, self._bot)
        except (TypeError, ValueError, KeyError, AttributeError):
            raise malformed(CHANNEL, "not a Telegram Update") from None
        if not isinstance(update.update_id, int) or isinstance(update.update_id, bool):
            raise malformed(CHANNEL, "update_id is not an integer")
        return update

    async def _message(self, update: Update, context: ChannelContext) -> Optional[Message]:
        if update.message is not None:
            return _from_message(update.update_id, update.message)
        if update.callback_query is not None:
            return await _from_callback(update.update_id, update.callback_query, context)
        return None

    @staticmethod
    async def _blocked(chat_id: str, context: ChannelContext) -> bool:
        """A chat that blocked the bot (see `_send_one`) stays blocked until it writes
        again. Checked here, when sending, so the webhook's answer waits on no database."""
        since = await context.opted_out_since(CHANNEL, chat_id)
        if since is None:
            return False
        wrote = await context.last_inbound_at(f"{CHANNEL}:{chat_id}")
        if wrote is None or wrote <= since:
            return True
        await context.set_opted_out(CHANNEL, chat_id, False)
        log.info("telegram %s writes again; sending resumes", mask(chat_id))
        return False

    def _answer_later(self, query_id: str) -> None:
        """Stop the button's spinner without holding up the webhook's answer."""
        task = asyncio.create_task(self._answer(query_id))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, query_id: str) -> Delivery:
        async def attempt() -> str:
            with _provider_errors(self._token):
                await self._bot.answer_callback_query(query_id)
            return query_id

        return await deliver(attempt, self._retry, (self._overall, "all"),
                             label="telegram answerCallbackQuery")

    # -- outbound ------------------------------------------------------------------

    async def send(self, recipient: str, replies: Sequence[Reply], context: ChannelContext,
                   answering: Optional[Message] = None) -> List[Delivery]:
        outgoing = [item for reply in replies for item in _render(reply)]
        # A chat that blocked the bot cannot write to it, so an answer needs no check; if
        # it blocks the bot meanwhile, Telegram refuses the send and that is recorded.
        if answering is None and await self._blocked(recipient, context):
            return [Delivery("blocked", error="the chat blocked the bot") for _ in outgoing]
        await _remember_hashed(f"{CHANNEL}:{recipient}", replies, context)
        deliveries: List[Delivery] = []
        for item in outgoing:
            delivery, refused = await self._send_one(recipient, item)
            deliveries.append(delivery)
            if refused:
                await context.set_opted_out(CHANNEL, recipient, True)
                log.info("telegram %s refuses the bot; sending stops", mask(recipient))
                blocked = Delivery("blocked", error="the chat blocked the bot")
                return deliveries + [blocked] * (len(outgoing) - len(deliveries))
        return deliveries

    async def _send_one(self, chat_id: str, item: _Outgoing) -> Tuple[Delivery, bool]:
        """The outcome, and whether Telegram refused the chat itself (403: the user
        blocked the bot, or it is no longer in the group)."""
        refused = False

        async def attempt() -> str:
            nonlocal refused
            with _provider_errors(self._token):
                try:
                    sent = await item.send(self._bot, chat_id)
                except Forbidden:
                    refused = True
                    raise
            return str(sent.message_id)

        delivery = await deliver(attempt, self._retry, (self._per_chat, chat_id),
                                 (self._overall, "all"), label=f"telegram {mask(chat_id)}")
        return delivery, refused

    async def download(self, reference: str) -> bytes:
        """The bytes of a `tg-file:` attachment. Raises TransientError or PermanentError."""
        if not reference.startswith(FILE_SCHEME):
            raise ValueError(f"not a Telegram file reference: {reference[:20]!r}")
        with _provider_errors(self._token):
            file = await self._bot.get_file(reference[len(FILE_SCHEME):])
            return bytes(await file.download_as_bytearray())


async def set_webhook(credentials: TelegramCredentials, url: str) -> None:
    """Point the bot's updates at `url`, signed with the secret token; for the CLI."""
    if not _SECRET_FORMAT.fullmatch(credentials.secret_token):
        raise TelegramSetupError("TELEGRAM_SECRET_TOKEN must be 1 to 256 characters of "
                                 "A-Z, a-z, 0-9, _ and - (Telegram's rule)")
    bot = _new_bot(credentials)
    try:
        accepted = await bot.set_webhook(url=url, secret_token=credentials.secret_token,
                                         allowed_updates=list(ALLOWED_UPDATES))
    except InvalidToken:
        raise TelegramSetupError("Telegram rejected TELEGRAM_BOT_TOKEN") from None
    except TelegramError as error:
        reason = _reason(error, credentials.bot_token)
        raise TelegramSetupError(f"Telegram refused setWebhook for {url}: {reason}") from None
    finally:
        await bot.request.shutdown()
    if not accepted:
        raise TelegramSetupError(f"Telegram refused setWebhook for {url}")


class AiohttpRequest(BaseRequest):
    """PTB's HTTP transport on aiohttp, which the gateway already runs on: PTB's own
    (httpx) costs twice the CPU per call (2.2 against 1.1 ms a sendMessage, measured
    against a local server), and every reply pays it."""

    TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=5.0)

    def __init__(self) -> None:
        self._session: Optional[aiohttp.ClientSession] = None

    @property
    def read_timeout(self) -> float:
        return float(self.TIMEOUT.sock_read or 0)

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.TIMEOUT)

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def do_request(self, url: str, method: str,
                         request_data: Optional[RequestData] = None,
                         read_timeout: object = BaseRequest.DEFAULT_NONE,
                         write_timeout: object = BaseRequest.DEFAULT_NONE,
                         connect_timeout: object = BaseRequest.DEFAULT_NONE,
                         pool_timeout: object = BaseRequest.DEFAULT_NONE) -> Tuple[int, bytes]:
        await self.initialize()
        assert self._session is not None
        try:
            async with self._session.request(method, url, data=_body(request_data),
                                             timeout=_timeout(read_timeout)) as response:
                return response.status, await response.read()
        except asyncio.TimeoutError as error:
            raise TimedOut() from error
        except aiohttp.ClientError as error:
            raise NetworkError(f"could not reach the Bot API ({type(error).__name__})") from error


def _body(request_data: Optional[RequestData]) -> Any:
    """PTB's parameters as a form; the gateway sends media by URL, never uploads."""
    if request_data is None:
        return None
    if request_data.contains_files:
        raise TypeError("file uploads are not supported: send media by URL")
    return request_data.json_parameters


def _timeout(read_timeout: object) -> aiohttp.ClientTimeout:
    """A read timeout the caller chose (a number, or None for none), else ours."""
    if read_timeout is not None and not isinstance(read_timeout, int | float):
        return AiohttpRequest.TIMEOUT
    return aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=read_timeout)


def _new_bot(credentials: TelegramCredentials) -> Bot:
    # One client for both of PTB's request slots: a webhook bot never calls getUpdates.
    request = AiohttpRequest()
    return Bot(credentials.bot_token, base_url=f"{credentials.api_base_url}/bot",
               base_file_url=f"{credentials.api_base_url}/file/bot",
               request=request, get_updates_request=request)


# -- inbound translation -------------------------------------------------------------

def _from_message(update_id: int, message: TelegramMessage) -> Optional[Message]:
    attachment = _attachment(message)
    result = Message(
        connector=CHANNEL, channel=CHANNEL, sender=str(message.chat.id),
        message_id=str(update_id), text=message.text or message.caption or "",
        attachments=(attachment,) if attachment else (),
        profile_name=_first_name(message.from_user),
    )
    # Service messages (a member joined, a pin) carry nothing for the bot.
    return None if result.is_empty else result


def _attachment(message: TelegramMessage) -> Optional[Attachment]:
    caption = message.caption or ""
    if message.photo:
        largest = max(message.photo, key=lambda size: size.width * size.height)
        return Attachment("image", FILE_SCHEME + largest.file_id, "image/jpeg", caption)
    media: Tuple[Tuple[AttachmentKind, Optional[_Media], str], ...] = (
        ("file", message.document, ""),
        ("video", message.video, "video/mp4"),
        ("audio", message.voice, "audio/ogg"),
        ("audio", message.audio, "audio/mpeg"),
    )
    for kind, item, default_mime in media:
        if item is not None:
            return Attachment(kind, FILE_SCHEME + item.file_id,
                              item.mime_type or default_mime, caption)
    if message.location is not None:
        where = message.location
        return Attachment("location", f"geo:{where.latitude},{where.longitude}")
    return None


async def _from_callback(update_id: int, query: CallbackQuery,
                         context: ChannelContext) -> Optional[Message]:
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    message = Message(connector=CHANNEL, channel=CHANNEL, sender=str(chat_id),
                      message_id=str(update_id), text=query.data or "",
                      profile_name=_first_name(query.from_user))
    if not _HASHED_DATA.fullmatch(message.text):
        return None if message.is_empty else message
    offered = await context.offered_options(message.conversation_id)
    payload = next((button.payload for button in offered
                    if _callback_data(button.payload) == message.text), None)
    if payload is None:
        log.info("telegram %s pressed an option no longer remembered", mask(message.sender))
        return None
    return replace(message, text=payload)


def _first_name(user: Optional[User]) -> str:
    return user.first_name if user is not None else ""


# -- outbound rendering --------------------------------------------------------------

@dataclass(frozen=True)
class _Outgoing:
    """One Bot API message: a text, or a photo with an optional caption."""

    text: str = ""
    photo: str = ""
    keyboard: Optional[InlineKeyboardMarkup] = None

    async def send(self, bot: Bot, chat_id: str) -> TelegramMessage:
        if self.photo:
            return await bot.send_photo(chat_id, self.photo, caption=self.text or None,
                                        reply_markup=self.keyboard)
        return await bot.send_message(chat_id, self.text, reply_markup=self.keyboard)


def _render(reply: Reply) -> List[_Outgoing]:
    """Texts split at sentence boundaries, then the image (captioned with the text
    when it fits); the keyboard goes on the last message."""
    text = reply.text.strip()
    if reply.image_url and len(text) <= CAPTION_LIMIT:
        items = [_Outgoing(text=text, photo=reply.image_url)]
    else:
        items = [_Outgoing(text=part) for part in split_text(text, TEXT_LIMIT)]
        if reply.image_url:
            items.append(_Outgoing(photo=reply.image_url))
    if reply.buttons:
        items = items or [_Outgoing(text=DEFAULT_PROMPT)]
        items[-1] = replace(items[-1], keyboard=_keyboard(reply.buttons))
    return items


def _keyboard(buttons: Sequence[Button]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(button.title, callback_data=_callback_data(button.payload))]
         for button in buttons])


def _callback_data(payload: str) -> str:
    """The payload itself when it fits and cannot be mistaken for a hash."""
    if (len(payload.encode()) <= CALLBACK_DATA_LIMIT
            and not _HASHED_DATA.fullmatch(payload)):
        return payload
    return "opt:" + hashlib.sha256(payload.encode()).hexdigest()[:16]


async def _remember_hashed(conversation_id: str, replies: Sequence[Reply],
                           context: ChannelContext) -> None:
    """Keep the buttons whose payload did not fit, newest first, with those offered
    before (an older keyboard may still be pressed)."""
    hashed = [button for reply in replies for button in reply.buttons
              if _callback_data(button.payload) != button.payload]
    if not hashed:
        return
    payloads = {button.payload for button in hashed}
    earlier = [button for button in await context.offered_options(conversation_id)
               if button.payload not in payloads]
    await context.remember_options(conversation_id, (hashed + earlier)[:REMEMBERED_OPTIONS])


# -- provider errors -----------------------------------------------------------------

@contextmanager
def _provider_errors(token: str) -> Iterator[None]:
    """PTB's exceptions as `deliver` understands them: worth retrying or not."""
    try:
        yield
    except RetryAfter as error:
        raise TransientError(_reason(error, token), _seconds(error)) from None
    except BadRequest as error:  # a NetworkError subclass, but retrying cannot help
        raise PermanentError(_reason(error, token)) from None
    except NetworkError as error:  # includes TimedOut and HTTP 5xx
        raise TransientError(_reason(error, token)) from None
    except TelegramError as error:  # Forbidden, InvalidToken, ChatMigrated, Conflict
        raise PermanentError(_reason(error, token)) from None


def _reason(error: TelegramError, token: str) -> str:
    """PTB's message, without the bot token an HTTP error may quote in a URL."""
    return str(error).replace(token, "<token>")[:200]


def _seconds(error: RetryAfter) -> float:
    # PTB 22 warns that retry_after becomes a timedelta; accept either.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
