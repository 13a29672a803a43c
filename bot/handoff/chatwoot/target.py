"""Chatwoot as the handoff target, through an API-channel inbox: the gateway keeps the
customer's channel and Chatwoot is where the agents work. A handoff becomes a Chatwoot
conversation (its contact found or created under an identifier of ours, never a phone
number or email), with the transcript so far and a private note of everything the
bot knows, assigned to the queue's team and left open; what the customer writes
meanwhile follows as incoming messages. When Chatwoot cannot take a handoff or a
message, the handoff stays in the gateway's records and the message is held, and both
are offered again every `retry_seconds` (bot/handoff/helpdesk_target.py)."""
from __future__ import annotations

import logging
from typing import List

from bot.handoff.chatwoot.api import ChatwootApi
from bot.handoff.chatwoot.links import ChatwootLinks
from bot.handoff.desk import HandoffDesk
from bot.handoff.helpdesk_policy import ChatwootPolicy
from bot.handoff.helpdesk_target import PUSH_LEASE_SECONDS, HelpdeskTarget, keyed_identifier
from bot.handoff.packet import customer_text, packet_lines, transcript_lines
from bot.handoff.store import Handoff
from connectors.message import TranscriptTurn

__all__ = ["ChatwootTarget", "PUSH_LEASE_SECONDS", "customer_text", "transcript_note"]
log = logging.getLogger("bot.handoff.chatwoot")


class ChatwootTarget(HelpdeskTarget[int]):
    name = "Chatwoot"
    kind = "conversation"

    def __init__(self, api: ChatwootApi, links: ChatwootLinks, desk: HandoffDesk,
                 policy: ChatwootPolicy) -> None:
        super().__init__(links, desk, policy.retry_seconds, log)
        self.api = api
        self.policy = policy

    async def _close(self) -> None:
        await self.api.close()

    async def _create(self, handoff: Handoff) -> int:
        api = self.api
        identifier = self.contact_identifier(handoff["conversation_id"])
        name = handoff["customer_name"] or f"Customer H-{handoff['id']}"
        contact = await api.find_contact(identifier) or await api.create_contact(name,
                                                                                 identifier)
        # made by an earlier try whose answer was lost (a timeout): that one, not another
        reference = f"H-{handoff['id']}"
        made = await api.conversation_with(contact, reference)
        if made is not None:
            return made
        source = await api.contact_inbox(contact, identifier)
        return await api.create_conversation(contact, source, {
            "handoff_reference": reference, "channel": handoff["channel"]})

    async def _describe(self, handoff: Handoff, remote_id: int) -> None:
        """The transcript so far and the handoff as private notes, and the team. A note
        an earlier try posted before it failed (assigning the team) is not posted again:
        its first line tells which note it is."""
        transcript = await self.desk.records.read(self.desk.records.transcript,
                                                  handoff["conversation_id"])
        posted = {note.split("\n", 1)[0] for note in await self.api.private_notes(remote_id)}
        for note in (transcript_note(transcript), self.handoff_note(handoff)):
            if note.split("\n", 1)[0] not in posted:
                await self.api.message(remote_id, note, private=True)
        await self.api.assign_team(remote_id, self.policy.teams[handoff["queue"]])

    async def _add_customer_message(self, remote_id: int, content: str) -> None:
        await self.api.message(remote_id, content, incoming=True)

    def contact_identifier(self, conversation_id: str) -> str:
        return keyed_identifier(self.api.settings.webhook_secret, conversation_id)

    def handoff_note(self, handoff: Handoff) -> str:
        """Everything the bot knows, for the agent: what they need to not ask again."""
        return "\n".join(packet_lines(self.desk, handoff))


def transcript_note(transcript: List[TranscriptTurn]) -> str:
    return "\n".join(transcript_lines(transcript))
