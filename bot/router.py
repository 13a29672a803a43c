"""The gateway router: the gateway's side of the channel contract, and the path of
every inbound message: deduplicate, record, queue in order, hand it to the person who
has the conversation or else ask the bot, send the replies on the customer's channel,
record what happened, and open a handoff when the bot escalates or cannot answer."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from aiohttp import web

from bot.handoff.desk import HandoffDesk, split_handoff
from bot.handoff.store import Handoff
from bot.messaging.inbound_limit import InboundCounter, MemoryInboundCounter
from bot.messaging.inbox import Inbox, InboxUnavailable
from bot.messaging.metrics import GatewayMetrics
from bot.messaging.rasa_client import BotBusy, BotRefused, BotUnavailable, RasaClient
from bot.messaging.records import GatewayRecords
from common.privacy import loggable_error, mask
from connectors.channel import Channel
from connectors.config import ChannelPolicy
from connectors.message import (
    Button,
    Delivery,
    Message,
    Reply,
    StatusUpdate,
    TranscriptTurn,
)
from connectors.outbound import PermanentError

log = logging.getLogger("bot.router")

# What the bot receives for a message that is only attachments (a photo): text that
# no intent claims, so a form waiting for a photo takes it as the slot value.
ATTACHMENT_ONLY_TEXT = "[attachment]"
# Rasa reads a text that starts with this as an intent with entities, not as words.
INTENT_SYNTAX_PREFIX = "/"
# The bot's custom reply carrying the rest of a message that asked for several things,
# and how many requests of one message the gateway asks the bot about in turn.
NEXT_REQUEST = "next_request"
REQUESTS_PER_MESSAGE = 3


def as_words(text: str) -> str:
    """Text without leading slashes: nothing Rasa reads as an intent. Nothing but
    slashes is a question mark, which the bot asks to rephrase."""
    return text.lstrip().lstrip(INTENT_SYNTAX_PREFIX).lstrip() or "?"


def split_next_request(replies: List[Reply]) -> Tuple[List[Reply], Optional[str]]:
    """The bot's replies for the customer, and the rest of their message it hands back
    to be asked next, if any."""
    later = [str(r.custom[NEXT_REQUEST]) for r in replies if r.custom and NEXT_REQUEST in r.custom]
    shown = [r for r in replies if not (r.custom and NEXT_REQUEST in r.custom)]
    return shown, (later[0] if later else None)


def unanswered_because(error: BotUnavailable, retry_seconds: float) -> str:
    """Why the bot gave no answer, for the agent who takes the conversation over."""
    if isinstance(error, BotRefused):
        return f"it refused the turn for {retry_seconds:.0f} s ({error})"
    if isinstance(error, BotBusy):
        return f"the message waited in the gateway: {error}"
    return f"no answer ({error}); the turn may have run, so it was not asked again"


class Router:
    def __init__(self, records: GatewayRecords, inbox: Inbox, rasa: RasaClient,
                 channels: Mapping[str, Channel], policy: ChannelPolicy,
                 desk: HandoffDesk, metrics: Optional[GatewayMetrics] = None,
                 inbound: Optional[InboundCounter] = None) -> None:
        self.records = records
        self.inbox = inbox
        self.inbound = inbound or MemoryInboundCounter(policy.inbound_limit.per_seconds)
        self.rasa = rasa
        self.channels: Dict[str, Channel] = dict(channels)
        self.policy = policy
        self.desk = desk
        self.metrics = metrics or GatewayMetrics(self.channels)
        desk.bind(self.deliver, self.download)

    # the ChannelContext connectors call

    async def accept(self, message: Message) -> bool:
        """Keep the message and return, so the webhook is acknowledged at once and only
        once the message is kept; a provider retry is refused here. When the message
        cannot be kept, the provider is told to try again later (503)."""
        try:
            return await self.inbox.enqueue(message)
        except InboxUnavailable as error:
            log.error("a %s message could not be kept (%s); the sender is asked to retry",
                      message.connector, type(error.__cause__).__name__)
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "5"}) from error

    async def process_now(self, message: Message) -> None:
        """For a caller that waits for the answer (REST): processed here and now, one
        request per conversation at a time (the channel sees to it)."""
        await self.process(message)

    async def record_status(self, update: StatusUpdate) -> None:
        self.metrics.status_reported(update.connector, update.status)
        known = await self.records.write(self.records.record_status, update)
        if update.status == "failed":
            log.warning("%s reports message %s failed: %s", update.connector,
                        update.provider_message_id, loggable_error(update.error))
        elif not known:
            log.info("%s status for unknown message %s", update.connector,
                     update.provider_message_id)

    async def set_opted_out(self, connector: str, address: str, opted_out: bool) -> None:
        await self.records.write(self.records.set_opted_out, connector, address, opted_out)
        log.info("%s %s opted %s", connector, mask(address), "out" if opted_out else "in")

    async def opted_out_since(self, connector: str, address: str) -> Optional[float]:
        return await self.records.read(self.records.opted_out_since, connector, address)

    async def last_inbound_at(self, conversation_id: str) -> Optional[float]:
        row = await self.records.read(self.records.conversation, conversation_id)
        return float(row["last_inbound_at"]) if row else None

    async def store_address(self, conversation_id: str) -> str:
        row = await self.records.read(self.records.conversation, conversation_id)
        return str(row["store_address"]) if row else ""

    async def remember_options(self, conversation_id: str, buttons: Sequence[Button]) -> None:
        await self.records.write(self.records.remember_options, conversation_id, buttons)

    async def offered_options(self, conversation_id: str) -> List[Button]:
        return await self.records.read(self.records.offered_options, conversation_id)

    async def transcript(self, conversation_id: str) -> List[TranscriptTurn]:
        return await self.records.read(self.records.transcript, conversation_id)

    # processing, called by the inbox one message at a time per conversation

    async def process(self, message: Message) -> None:
        handoff = await self.records.write(self._arrive, message)
        if await self.desk.takes(message, handoff) or await self._over_limit(message):
            return
        try:
            replies, escalation = split_handoff(await self._ask_bot_each_request(message))
        except BotUnavailable as error:
            why = unanswered_because(error, self.policy.bot_retry_seconds)
            log.error("bot unavailable for %s: %s; handing to a person", message.connector, why)
            opened = await self.desk.bot_unavailable(message, why)
            replies = [Reply(text=self.policy.texts.bot_unavailable)]
        else:
            opened = await self.desk.escalate(message, escalation) if escalation else None
            if opened is None and await self._taken_meanwhile(message):
                return
        # consoles see a new handoff before any send, which may wait on rate limits
        await self.answer(message, replies)
        self.metrics.processed(message.connector, message.received_at)
        if opened is not None:
            await self.desk.announce(opened)

    async def _taken_meanwhile(self, message: Message) -> bool:
        """A person took the conversation while the bot was answering (an agent reopened
        it in the helpdesk): the bot's answer is not sent over theirs, and the message
        goes to them as if it had come a moment later."""
        handoff = await self.records.read(self.desk.routing, message.conversation_id)
        if handoff is None or handoff["status"] == "resolved":
            return False
        log.info("H-%s: a person took the conversation during the bot's turn; the bot's "
                 "answer was not sent", handoff["id"])
        await self.desk.takes(message, handoff)
        return True

    async def _over_limit(self, message: Message) -> bool:
        """Past the sender's inbound limit: recorded already, not for the bot; the first
        message over it is answered with a notice, the rest in the window not at all."""
        count = await self.inbound.count(message.conversation_id)
        allowed = self.policy.inbound_limit.messages
        if count <= allowed:
            return False
        if count == allowed + 1:
            log.warning("%s %s is over the inbound limit (%d in %.0fs); not passed to the bot",
                        message.connector, mask(message.sender), allowed,
                        self.policy.inbound_limit.per_seconds)
            await self.answer(message, [Reply(text=self.policy.texts.too_many_messages)])
        return True

    def _arrive(self, message: Message) -> Optional[Handoff]:
        """Record the message and find its handoff in one trip to the records' thread:
        each trip waits its turn under load."""
        self.records.record_inbound(message)
        return self.desk.routing(message.conversation_id)

    async def _ask_bot_each_request(self, message: Message) -> List[Reply]:
        """Ask the bot. Once it has done one request of a message that asked for several
        (components/several_requests.py), it hands the rest back; that is asked next, as
        the customer's words (never a button's intent syntax)."""
        replies, later = split_next_request(
            await self._ask_bot(message, await self._text_for_bot(message)))
        for _ in range(REQUESTS_PER_MESSAGE - 1):
            if later is None:
                break
            more, later = split_next_request(await self._ask_bot(message, as_words(later)))
            replies += more
        return replies

    async def _ask_bot(self, message: Message, text: str) -> List[Reply]:
        """Ask Rasa; while it refuses the turn, again with backoff for up to
        bot_retry_seconds. Never after an answer that did not come: the turn may have
        run, and running it twice could write twice."""
        metadata = {"channel": message.channel, "connector": message.connector,
                    "attachments": [a.as_dict() for a in message.attachments],
                    "peak": await self.desk.peak_on()}
        if message.proven_phone:
            metadata["proven_phone"] = message.proven_phone
        deadline: Optional[float] = None  # counted from the first refusal, not the queue
        pause = 0.5
        while True:
            try:
                return await self.rasa.ask(message.conversation_id, text, metadata)
            except BotRefused:
                deadline = deadline or time.monotonic() + self.policy.bot_retry_seconds
                if time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _text_for_bot(self, message: Message) -> str:
        """The customer's words as words: a text in Rasa's intent syntax
        (`/intent{"entity": ...}`) passes only when it is the payload of a button the
        gateway sent this conversation; otherwise its leading slashes are dropped, so
        nobody can type an intent, an entity or an escalation rule."""
        text = message.text or (ATTACHMENT_ONLY_TEXT if message.attachments else "")
        if not text.lstrip().startswith(INTENT_SYNTAX_PREFIX):
            return text
        issued = await self.records.read(self.records.issued_payloads,
                                         message.conversation_id)
        if text.strip() in issued:
            return text.strip()
        log.info("%s %s typed intent syntax; passed to the bot as words", message.connector,
                 mask(message.sender))
        return as_words(text)

    async def download(self, connector: str, reference: str) -> bytes:
        channel = self.channels.get(connector)
        if channel is None:
            raise PermanentError(f"channel {connector} is off")
        return await channel.download(reference)

    async def answer(self, message: Message, replies: Sequence[Reply]) -> List[Delivery]:
        """The bot's replies to a customer's message, sent back on its channel."""
        return await self.deliver(message.connector, message.sender, replies,
                                  answering=message)

    async def deliver(self, connector: str, recipient: str, replies: Sequence[Reply],
                      role: str = "bot", answering: Optional[Message] = None) -> List[Delivery]:
        """Send replies on the customer's channel and record them and their outcome."""
        channel = self.channels.get(connector)
        handed_over_at = time.time()
        if channel is None:
            outcomes = [Delivery("failed", error=f"channel {connector} is off")] * len(replies)
        else:
            outcomes = await channel.send(recipient, replies, self, answering=answering)
        self.metrics.sent(connector, outcomes)
        await self.records.write(self.records.record_sent, f"{connector}:{recipient}", connector,
                                replies, outcomes, role, handed_over_at)
        return outcomes
