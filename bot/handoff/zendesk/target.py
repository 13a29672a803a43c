"""Zendesk as the handoff target, through Sunshine Conversations' switchboard: the
gateway keeps the customer's channel and is an integration of the SunCo app; a handoff
is mirrored into a SunCo conversation and control of it passed to Zendesk's Agent
Workspace, which makes the ticket the agents work.

A handoff becomes a SunCo user (externalId: a keyed hash of the channel conversation,
never a phone number; their name as given), a personal conversation of theirs, the
transcript so far as its messages (the customer's as `author.type: user`, the bot's as
`business`), a last business message of everything the bot knows, then `passControl`
to the Agent Workspace with the ticket's tags and fields in its metadata and
`first_message_id`, so the ticket gets the whole transcript and not only the last 10
messages. What the customer writes meanwhile follows as user messages.

SunCo's webhooks (webhook.py) come back here: a business message that is not one of
ours is an agent's reply, sent to the customer on their channel once (SunCo retries, so
each message and event is handled once); control leaving the Agent Workspace (the
ticket solved: Zendesk releases control to the bot) hands the customer back to the bot
with the CSAT question, control passed to it again afterwards hands them back to people.

When SunCo cannot take a handoff or a message, both are kept and offered again
(bot/handoff/helpdesk_target.py)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, Optional, Tuple

from bot.handoff.desk import HandoffDesk
from bot.handoff.helpdesk_policy import ZendeskPolicy
from bot.handoff.helpdesk_target import HelpdeskTarget, keyed_identifier
from bot.handoff.packet import SPEAKERS, packet_lines
from bot.handoff.store import OPEN as HANDOFF_OPEN
from bot.handoff.store import Handoff, HandoffConflict
from bot.handoff.zendesk.api import SunshineApi
from bot.handoff.zendesk.links import ZendeskLinks
from common.timefmt import iso
from connectors.message import TranscriptTurn

log = logging.getLogger("bot.handoff.zendesk")
# what marks the messages the gateway posts, so their webhooks are not taken for agents'
ORIGIN_KEY = "origin"
ORIGIN = "store-support-gateway"
# the switchboard events that say which integration is active now
SWITCHBOARD_EVENTS = ("switchboard:passControl", "switchboard:acceptControl",
                      "switchboard:releaseControl")
AGENT_WORKSPACE_TYPE = "zd:agentWorkspace"
METADATA_BYTES = 4096  # SunCo's limit on passControl's metadata


class ZendeskTarget(HelpdeskTarget[str]):
    name = "Zendesk"
    kind = "conversation"

    def __init__(self, api: SunshineApi, links: ZendeskLinks, desk: HandoffDesk,
                 policy: ZendeskPolicy) -> None:
        super().__init__(links, desk, policy.retry_seconds, log)
        self.api = api
        self.policy = policy
        # what of each handoff's transcript SunCo has (a retry posts only the rest):
        # handoff id: (messages posted, the first one's id, the transcript's turns)
        self._posted: Dict[int, Tuple[int, str, int]] = {}

    async def _close(self) -> None:
        await self.api.close()

    # handoffs to Zendesk

    def external_id(self, conversation_id: str) -> str:
        return keyed_identifier(self.api.settings.webhook_secret, conversation_id)

    async def _create(self, handoff: Handoff) -> str:
        name = handoff["customer_name"] or f"Customer H-{handoff['id']}"
        user_id = await self.api.ensure_user(self.external_id(handoff["conversation_id"]),
                                             name)
        return await self.api.create_conversation(user_id, f"{name} (H-{handoff['id']})", {
            "handoff_reference": f"H-{handoff['id']}", "channel": handoff["channel"]})

    async def _describe(self, handoff: Handoff, remote_id: str) -> None:
        """The transcript, the handoff, then control to the Agent Workspace."""
        transcript = await self.desk.records.read(self.desk.records.transcript,
                                                  handoff["conversation_id"])
        # the transcript as it was when SunCo first had the conversation: what the
        # customer wrote since is held and follows on its own (helpdesk_target.py)
        posted, first, total = self._posted.setdefault(handoff["id"],
                                                       (0, "", len(transcript)))
        external = self.external_id(handoff["conversation_id"])
        for turn in transcript[posted:total]:
            message_id = await self.api.post_message(
                remote_id, self._author(turn, external), turn_text(turn), {ORIGIN_KEY: ORIGIN})
            posted, first = posted + 1, first or message_id
            self._posted[handoff["id"]] = (posted, first, total)
        if posted == total:  # the packet once, after the transcript
            packet = await self.api.post_message(
                remote_id, {"type": "business", "displayName": "Assistant"},
                "\n".join(packet_lines(self.desk, handoff)), {ORIGIN_KEY: ORIGIN})
            posted, first = posted + 1, first or packet
            self._posted[handoff["id"]] = (posted, first, total)
        await self.api.pass_control(remote_id, self.api.settings.agent_integration,
                                    self.ticket_metadata(handoff, first))
        self._posted.pop(handoff["id"], None)

    async def _add_customer_message(self, remote_id: str, content: str) -> None:
        records = self.desk.records
        handoff_id = await records.read(self.links.handoff_of, remote_id)
        handoff = (await records.read(self.desk.store.get, handoff_id)
                   if handoff_id is not None else None)
        if handoff is None:
            return  # erased meanwhile
        await self.api.post_message(
            remote_id, {"type": "user",
                        "userExternalId": self.external_id(handoff["conversation_id"])},
            content, {ORIGIN_KEY: ORIGIN})

    @staticmethod
    def _author(turn: TranscriptTurn, external_id: str) -> Dict[str, Any]:
        if turn.role == "customer":
            return {"type": "user", "userExternalId": external_id}
        return {"type": "business", "displayName": SPEAKERS.get(turn.role, turn.role)}

    def ticket_metadata(self, handoff: Handoff, first_message_id: str) -> Dict[str, Any]:
        """passControl's metadata (flat, at most 4 KB): the ticket's first message, its
        requester's name, tags and custom fields (Zendesk's `dataCapture.` keys), and
        the handoff itself for anyone reading the switchboard events."""
        values = {"handoff": f"H-{handoff['id']}", "reason": handoff["reason_code"],
                  "rule": handoff["rule"] or "", "tier": handoff["tier"],
                  "queue": handoff["queue"], "order": handoff["order_id"] or "",
                  "channel": handoff["channel"]}
        tags = [*self.policy.tags, self.policy.queue_tags[handoff["queue"]],
                self.policy.tier_tags[handoff["tier"]]]
        metadata: Dict[str, Any] = {
            "first_message_id": first_message_id,
            "dataCapture.systemField.requester.name":
                handoff["customer_name"] or f"Customer H-{handoff['id']}",
            "dataCapture.systemField.tags": " ".join(dict.fromkeys(tags)),
            **{f"dataCapture.ticketField.{field_id}": values[what]
               for what, field_id in self.policy.ticket_fields.items()},
            "handoff_reference": values["handoff"], "handoff_reason": values["reason"],
            "handoff_rule": values["rule"], "handoff_tier": values["tier"],
            "handoff_queue": values["queue"], "order_reference": values["order"],
            "channel": values["channel"], "first_reply_due": iso(handoff["sla_due_at"]),
        }
        return metadata

    # SunCo's webhook events (webhook.py parsed and authenticated them)

    def notify(self, events: List[Dict[str, Any]]) -> None:
        """Handle the events soon, so SunCo's webhook is answered at once."""
        self.in_background(self.handle(events))

    async def handle(self, events: List[Dict[str, Any]]) -> None:
        for event in events:
            payload = event.get("payload") or {}
            conversation = payload.get("conversation") or {}
            conversation_id = conversation.get("id")
            if not isinstance(conversation_id, str):
                continue
            try:
                async with self.one_at_a_time(conversation_id):
                    if event.get("type") == "conversation:message":
                        await self._message(conversation_id, payload.get("message") or {})
                    elif event.get("type") in SWITCHBOARD_EVENTS:
                        await self._switchboard(conversation_id, str(event.get("id")),
                                                conversation)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one event's failure does not stop the others
                log.exception("a Sunshine Conversations %s event could not be handled",
                              event.get("type"))

    async def _handoff(self, conversation_id: str) -> Optional[Handoff]:
        records = self.desk.records
        handoff_id = await records.read(self.links.handoff_of, conversation_id)
        if handoff_id is None:
            return None  # not a handoff's conversation
        return await records.read(self.desk.store.get, handoff_id)

    async def _message(self, conversation_id: str, message: Dict[str, Any]) -> None:
        if not agent_message(message):
            return
        handoff = await self._handoff(conversation_id)
        if handoff is None:
            return
        records = self.desk.records
        if not await records.write(self.links.first_delivery, message["id"],
                                   self.desk.clock()):
            return  # SunCo delivered it again: sent already
        try:
            deliveries = await self.desk.helpdesk_reply(handoff, "zendesk",
                                                        message_text(message))
        except BaseException:  # not sent: a later delivery of it may send it
            await records.write(self.links.forget_delivery, message["id"])
            raise
        log.info("H-%s: Zendesk agent reply sent (%s)", handoff["id"],
                 ", ".join(d.status for d in deliveries))

    async def _switchboard(self, conversation_id: str, event_id: str,
                           conversation: Dict[str, Any]) -> None:
        handoff = await self._handoff(conversation_id)
        if handoff is None:
            return
        records = self.desk.records
        if not await records.write(self.links.first_delivery, f"event:{event_id}",
                                   self.desk.clock()):
            return  # handled already
        with_agents = self.is_agent_workspace(conversation.get("activeSwitchboardIntegration"))
        try:
            if not with_agents and handoff["status"] in HANDOFF_OPEN:
                await self.desk.helpdesk_resolve(handoff, "zendesk",
                                                 self.policy.resolved_disposition)
                log.info("H-%s solved in Zendesk: back to the bot", handoff["id"])
            elif with_agents and handoff["status"] == "resolved":
                await self.desk.helpdesk_reopen(handoff, "zendesk")
                log.info("H-%s back in Zendesk: with people again", handoff["id"])
        except HandoffConflict as error:  # changed meanwhile, or a newer handoff is open
            log.info("H-%s: Zendesk's switchboard not applied (%s)", handoff["id"], error)
        except BaseException:
            await records.write(self.links.forget_delivery, f"event:{event_id}")
            raise

    def is_agent_workspace(self, active: Any) -> bool:
        """Whether the switchboard integration now active is the Agent Workspace."""
        if not isinstance(active, dict):
            return False
        configured = self.api.settings.agent_integration
        return configured in (active.get("id"), active.get("name")) or (
            active.get("integrationType") == AGENT_WORKSPACE_TYPE
            and configured in ("zd-agentWorkspace", AGENT_WORKSPACE_TYPE))


def agent_message(message: Dict[str, Any]) -> bool:
    """What the customer should receive: a business message that is not one the
    gateway posted (the transcript, the handoff), with text, an id and content."""
    author = message.get("author") or {}
    metadata = message.get("metadata") or {}
    return (isinstance(author, dict) and author.get("type") == "business"
            and not (isinstance(metadata, dict) and metadata.get(ORIGIN_KEY) == ORIGIN)
            and isinstance(message.get("id"), str) and 0 < len(message["id"]) <= 64
            and bool(message_text(message)))


def message_text(message: Dict[str, Any]) -> str:
    """The text of an agent's message; a file or image by its link (text beside it)."""
    content = message.get("content") or {}
    if not isinstance(content, dict):
        return ""
    parts = [content.get("text"), content.get("mediaUrl")]
    return "\n".join(p.strip() for p in parts if isinstance(p, str) and p.strip())


def turn_text(turn: TranscriptTurn) -> str:
    attached = "".join(f" [{a.kind}]" for a in turn.attachments)
    return (f"{turn.text}{attached}".strip() or "[empty message]")
