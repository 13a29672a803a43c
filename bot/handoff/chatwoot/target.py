"""Chatwoot as the handoff target, through an API-channel inbox: the gateway keeps the
customer's channel and Chatwoot is where the agents work. A handoff becomes a Chatwoot
conversation (its contact found or created under an identifier of ours, never a phone
number or email), with the transcript so far and a private note of everything the
bot knows, assigned to the queue's team and left open; what the customer writes
meanwhile follows as incoming messages. When Chatwoot cannot take a handoff or a
message, the handoff stays in the gateway's records and the message is held, and both
are offered again every `retry_seconds`."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from typing import List, Optional

from bot.handoff.chatwoot.api import ChatwootApi, ChatwootError
from bot.handoff.chatwoot.links import ChatwootLinks
from bot.handoff.desk import HandoffDesk, agent_slots
from bot.handoff.helpdesk_policy import ChatwootPolicy
from bot.handoff.store import Handoff
from common.timefmt import iso
from connectors.message import Message, TranscriptTurn

log = logging.getLogger("bot.handoff.chatwoot")
# how long one gateway may hold a handoff it is pushing before another may try
PUSH_LEASE_SECONDS = 60.0
SPEAKERS = {"customer": "Customer", "bot": "Assistant", "agent": "Agent"}


class ChatwootTarget:
    def __init__(self, api: ChatwootApi, links: ChatwootLinks, desk: HandoffDesk,
                 policy: ChatwootPolicy) -> None:
        self.api = api
        self.links = links
        self.desk = desk
        self.policy = policy
        self._retries: Optional[asyncio.Task[None]] = None

    async def start(self) -> None:
        self._retries = asyncio.create_task(self._retry_forever())

    async def stop(self) -> None:
        if self._retries is not None:
            self._retries.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retries
            self._retries = None
        await self.api.close()

    async def opened(self, handoff: Handoff) -> None:
        await self.desk.records.write(self.links.add, handoff["id"])
        await self.push(handoff["id"])

    async def customer_wrote(self, handoff: Handoff, message: Message) -> None:
        """Mirrored as an incoming message, held until Chatwoot takes it; before Chatwoot
        has the conversation, the transcript it is given carries it."""
        records = self.desk.records
        if await records.read(self.links.conversation_of, handoff["id"]) is None:
            return
        await records.write(self.links.hold, handoff["id"], customer_text(message))
        await self.send_held()

    async def send_held(self) -> bool:
        """The customers' held messages to Chatwoot, oldest first; False when Chatwoot
        failed (the rest waits for the next try)."""
        records = self.desk.records
        while True:
            held = await records.write(self.links.next_held, self.desk.clock(),
                                       PUSH_LEASE_SECONDS)
            if held is None:
                return True
            held_id, conversation, content = held
            try:
                await self.api.message(conversation, content, incoming=True)
            except ChatwootError as error:
                if error.status == 404:  # the conversation was deleted in Chatwoot
                    log.warning("Chatwoot conversation %s is gone; a customer message for "
                                "it is dropped (the gateway's transcript has it)", conversation)
                    await records.write(self.links.sent, held_id)
                    continue
                await records.write(self.links.unclaim, held_id)
                log.warning("Chatwoot conversation %s: a customer message is held (%s)",
                            conversation, error)
                return False
            await records.write(self.links.sent, held_id)

    async def push(self, handoff_id: int) -> bool:
        """Give Chatwoot the handoff unless it has it or another gateway is at it;
        False when Chatwoot failed (the handoff waits for the next try)."""
        records = self.desk.records
        if not await records.write(self.links.claim, handoff_id, self.desk.clock(),
                                   PUSH_LEASE_SECONDS):
            return True
        handoff = await records.read(self.desk.store.get, handoff_id)
        if handoff is None:  # erased meanwhile
            return True
        try:
            conversation = await self._conversation(handoff)
            await self._describe(handoff, conversation)
        except ChatwootError as error:
            await records.write(self.links.release, handoff_id)
            log.warning("H-%s: Chatwoot did not take the handoff (%s); kept, offered again "
                        "in %.0f s", handoff_id, error, self.policy.retry_seconds)
            return False
        await records.write(self.links.completed, handoff_id)
        log.info("H-%s is Chatwoot conversation %s", handoff_id, conversation)
        return True

    async def _conversation(self, handoff: Handoff) -> int:
        """The handoff's conversation, made once: linked as soon as Chatwoot has it, so
        a later try completes it rather than making another."""
        known = await self.desk.records.read(self.links.conversation_of, handoff["id"])
        if known is not None:
            return known
        api = self.api
        identifier = self.contact_identifier(handoff["conversation_id"])
        name = handoff["customer_name"] or f"Customer H-{handoff['id']}"
        contact = await api.find_contact(identifier) or await api.create_contact(name,
                                                                                 identifier)
        source = await api.contact_inbox(contact, identifier)
        conversation = await api.create_conversation(contact, source, {
            "handoff_reference": f"H-{handoff['id']}", "channel": handoff["channel"]})
        await self.desk.records.write(self.links.linked, handoff["id"], conversation)
        return conversation

    async def _describe(self, handoff: Handoff, conversation: int) -> None:
        """The transcript so far and the handoff as private notes, and the team."""
        transcript = await self.desk.records.read(self.desk.records.transcript,
                                                  handoff["conversation_id"])
        await self.api.message(conversation, transcript_note(transcript), private=True)
        await self.api.message(conversation, self.handoff_note(handoff), private=True)
        await self.api.assign_team(conversation, self.policy.teams[handoff["queue"]])

    def contact_identifier(self, conversation_id: str) -> str:
        """Ours for this customer conversation: keyed, so a phone number cannot be
        recovered from it by trying them all."""
        key = self.api.settings.webhook_secret.encode()
        digest = hmac.new(key, conversation_id.encode(), hashlib.sha256).hexdigest()
        return f"gw-{digest[:32]}"

    def handoff_note(self, handoff: Handoff) -> str:
        """Everything the bot knows, for the agent: what they need to not ask again."""
        desk = self.desk
        summary = handoff["summary"]
        slots = agent_slots(handoff["slots"], desk.policy.slots_shown_whole)
        lines = [
            f"Handoff H-{handoff['id']} from the assistant ({handoff['channel']})",
            f"Reason: {handoff['reason_code']} (rule {handoff['rule'] or '-'}), "
            f"tier {handoff['tier']}, queue {desk.teams.get(handoff['queue'], handoff['queue'])}",
            f"First reply due: {iso(handoff['sla_due_at'])}",
            f"Customer: {handoff['customer_name'] or 'unknown'}; identity verified: "
            f"{'yes' if handoff['customer_verified'] else 'no'}"
            + (f"; contact {handoff['customer_contact']}" if handoff["customer_contact"] else ""),
            f"What happened: {summary.get('what_happened') or '-'}",
            f"Next step: {summary.get('next') or '-'}",
        ]
        if summary.get("eta"):
            lines.append(f"Promised: {summary['eta']}")
        lines.append("The assistant tried: "
                     + (", ".join(handoff["actions_attempted"]) or "nothing yet"))
        if slots:
            lines.append("Details: " + ", ".join(f"{k}={v}" for k, v in slots.items()
                                                  if v not in (None, "")))
        if handoff["order_snapshot"]:
            lines.append("Order: " + json.dumps(handoff["order_snapshot"], sort_keys=True))
        return "\n".join(lines)

    async def _retry_forever(self) -> None:
        while True:
            await asyncio.sleep(self.policy.retry_seconds)
            try:
                for handoff_id in await self.desk.records.read(self.links.waiting):
                    if not await self.push(handoff_id):
                        break  # Chatwoot is still failing: the rest waits for the next round
                await self.send_held()
            except Exception:  # noqa: BLE001 - the loop outlives a database hiccup
                log.exception("offering handoffs to Chatwoot again failed")


def customer_text(message: Message) -> str:
    """What the customer sent, with attachments named (agents open them in the
    gateway's console: the channel's links need its credentials)."""
    names = [f"[{a.kind}]" for a in message.attachments]
    return " ".join([message.text, *names]).strip() or "[empty message]"


def transcript_note(transcript: List[TranscriptTurn]) -> str:
    lines = ["Conversation before the handoff:"]
    for turn in transcript:
        attached = "".join(f" [{a.kind}]" for a in turn.attachments)
        lines.append(f"{iso(turn.at)} {SPEAKERS.get(turn.role, turn.role)}: {turn.text}{attached}")
    return "\n".join(lines)

