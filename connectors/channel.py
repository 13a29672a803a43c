"""The contract between the gateway and a channel connector.

A connector receives webhooks (verify, parse to `Message`, hand over through the
`ChannelContext`) and sends replies (render for the channel, send, retry). It never
talks to Rasa or to another channel; what it needs from the gateway is the small
`ChannelContext` below, which the gateway implements.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import logging
from typing import Any, Dict, List, Optional, Protocol, Sequence

import aiohttp
from aiohttp import web

from connectors.message import (
    Button,
    Delivery,
    Message,
    Reply,
    StatusUpdate,
    TranscriptTurn,
)
from connectors.outbound import PermanentError
from connectors.render import chosen_option, option_number

log = logging.getLogger("connectors")


class ChannelContext(Protocol):
    async def accept(self, message: Message) -> bool:
        """Keep an inbound message for processing, quickly; False when it is a duplicate
        (the same connector and message id seen before)."""

    async def process_now(self, message: Message) -> None:
        """Process the message in this process and return once it is answered, for a
        channel whose caller waits for the answer (REST). Webhooks use `accept`."""

    async def record_status(self, update: StatusUpdate) -> None:
        """Record a provider status callback for a message we sent."""

    async def set_opted_out(self, connector: str, address: str, opted_out: bool) -> None:
        """Stop (or resume) every outbound message to this address."""

    async def opted_out_since(self, connector: str, address: str) -> Optional[float]:
        """When this address stopped outbound messages (opted out, blocked the bot);
        None while it receives them."""

    async def last_inbound_at(self, conversation_id: str) -> Optional[float]:
        """Epoch seconds of the customer's latest inbound message, if any."""

    async def store_address(self, conversation_id: str) -> str:
        """The store address of the customer's latest inbound message ('' if none)."""

    async def remember_options(self, conversation_id: str, buttons: Sequence[Button]) -> None:
        """Keep the options last offered as text ("reply 1, 2 ..."), to map a number back."""

    async def offered_options(self, conversation_id: str) -> List[Button]:
        ...

    async def transcript(self, conversation_id: str) -> List[TranscriptTurn]:
        """The conversation so far, oldest first (web chat replays it after a reload)."""


class Channel(abc.ABC):
    """One messaging channel. Subclasses set `name` and implement the two halves."""

    name: str

    @abc.abstractmethod
    def install(self, app: web.Application, context: ChannelContext) -> None:
        """Add this channel's webhook routes to the gateway app, bound to `context`."""

    @abc.abstractmethod
    async def send(self, recipient: str, replies: Sequence[Reply], context: ChannelContext,
                   answering: Optional[Message] = None) -> List[Delivery]:
        """Render and send the replies to one recipient, in order; one Delivery per
        provider message. Never raises for a provider failure: it is a Delivery.
        `answering` is the recipient's message these replies answer, when they do: what
        it tells (when the customer wrote, to which store number) needs no lookup."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Open what the channel needs (HTTP sessions); must not need the provider."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release what `start` opened."""

    async def download(self, reference: str) -> bytes:
        """The bytes of an attachment this channel received (the Attachment's url), for
        agents: providers keep media behind their credentials."""
        raise PermanentError(f"{self.name} attachments are plain links")


class HttpChannel(Channel):
    """A channel that sends with plain HTTP requests over one aiohttp session."""

    send_timeout = aiohttp.ClientTimeout(total=15)
    _session: Optional[aiohttp.ClientSession] = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.send_timeout)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"{self.name}: start() must be awaited before send()")
        return self._session


async def with_chosen_option(message: Message, context: ChannelContext) -> Message:
    """A typed reply that is only a number, answering options we offered as text,
    becomes that option's payload. Other texts never cost a lookup."""
    if option_number(message.text) is None:
        return message
    payload = chosen_option(message.text, await context.offered_options(message.conversation_id))
    return dataclasses.replace(message, text=payload) if payload else message


def forbidden(channel: str, reason: str) -> web.HTTPForbidden:
    """A refused webhook: logged (without the payload) and answered 403."""
    log.warning("%s webhook refused: %s", channel, reason)
    return web.HTTPForbidden(text=f"forbidden: {reason}\n")


def malformed(channel: str, reason: str) -> web.HTTPBadRequest:
    """A webhook we cannot parse: logged (without the payload) and answered 400."""
    log.warning("%s webhook malformed: %s", channel, reason)
    return web.HTTPBadRequest(text=f"malformed: {reason}\n")


def json_object_body(channel: str, body: bytes) -> Dict[str, Any]:
    """A webhook's body as a JSON object; raises `malformed` when it is not one."""
    try:
        data = json.loads(body)
    except ValueError:
        raise malformed(channel, "body is not JSON") from None
    if not isinstance(data, dict):
        raise malformed(channel, "body is not a JSON object")
    return data
