"""Freshdesk as the handoff target: the gateway keeps the customer's channel and a
Freshdesk ticket is where the agents work. A handoff becomes a ticket (requester: an
SMS or WhatsApp customer's phone number when helpdesk.yml allows it, else an external
id of ours with their name; subject from the reason; the transcript so far as its
description; priority from the tier; status Open; the queue's group; tags), then a
private note of everything the bot knows. What the customer writes meanwhile is added
as public incoming notes from the requester.

Freshdesk tells the gateway about agents' work through an automation rule's webhook
(webhook.py), which only says which ticket changed: the gateway then reads the ticket's
conversations and sends the agents' public replies it has not sent yet, in order, and
on a status change reads the ticket's status: Resolved or Closed hands the customer
back to the bot, anything else after that back to people. So a webhook delivered twice
sends nothing twice, and one that was lost is made up by the next of that ticket.

When Freshdesk cannot take a handoff or a message, both are kept and offered again
(bot/handoff/helpdesk_target.py); a ticket Freshdesk could not be read for is read
again then."""
from __future__ import annotations

import asyncio
import html
import logging
import re
from typing import Any, Dict, List, Optional

from bot.handoff.desk import HandoffDesk
from bot.handoff.freshdesk.api import (
    CLOSED,
    OPEN,
    REPLY,
    RESOLVED,
    SOURCE_CHAT,
    FreshdeskApi,
    FreshdeskError,
)
from bot.handoff.freshdesk.links import FreshdeskLinks
from bot.handoff.helpdesk_policy import FreshdeskPolicy
from bot.handoff.helpdesk_target import HelpdeskTarget, keyed_identifier
from bot.handoff.packet import packet_lines, transcript_lines
from bot.handoff.store import OPEN as HANDOFF_OPEN
from bot.handoff.store import Handoff, HandoffConflict

log = logging.getLogger("bot.handoff.freshdesk")
PHONE_CHANNELS = ("sms", "whatsapp")
TAG_LENGTH = 32


class FreshdeskTarget(HelpdeskTarget[int]):
    name = "Freshdesk"
    kind = "ticket"

    def __init__(self, api: FreshdeskApi, links: FreshdeskLinks, desk: HandoffDesk,
                 policy: FreshdeskPolicy) -> None:
        super().__init__(links, desk, policy.retry_seconds, log)
        self.api = api
        self.policy = policy
        self._requesters: Dict[int, int] = {}  # ticket id: its requester's id
        # tickets to read again (Freshdesk failed), and whether for their status too
        self._resync: Dict[int, bool] = {}

    async def _close(self) -> None:
        await self.api.close()

    # handoffs to Freshdesk

    async def _create(self, handoff: Handoff) -> int:
        transcript = await self.desk.records.read(self.desk.records.transcript,
                                                  handoff["conversation_id"])
        ticket = await self.api.create_ticket({
            **self.requester(handoff),
            "subject": subject(handoff),
            "description": as_html(transcript_lines(transcript)),
            "status": OPEN,
            "priority": self.policy.priorities[handoff["tier"]],
            "source": SOURCE_CHAT,
            "group_id": self.policy.groups[handoff["queue"]],
            "tags": self.tags(handoff),
        })
        if isinstance(ticket.get("requester_id"), int):
            self._requesters[ticket["id"]] = ticket["requester_id"]
        return int(ticket["id"])

    async def _describe(self, handoff: Handoff, remote_id: int) -> None:
        """The handoff, everything the bot knows, as a private note."""
        await self.api.note(remote_id, as_html(packet_lines(self.desk, handoff)),
                            private=True)

    async def _add_customer_message(self, remote_id: int, content: str) -> None:
        """A public note, incoming, from the requester: as if they had written it."""
        requester = self._requesters.get(remote_id)
        if requester is None:
            found = (await self.api.ticket(remote_id)).get("requester_id")
            requester = found if isinstance(found, int) else None
            if requester is not None:
                self._requesters[remote_id] = requester
        await self.api.note(remote_id, as_html([content]), private=False, incoming=True,
                            user_id=requester)

    def requester(self, handoff: Handoff) -> Dict[str, Any]:
        """Who the ticket is from. The gateway keeps no customer's email unmasked, so an
        SMS or WhatsApp customer is their phone number (when helpdesk.yml allows it) and
        anyone else an external id of ours: a keyed hash of the conversation."""
        name = handoff["customer_name"] or f"Customer H-{handoff['id']}"
        phone = phone_of(handoff) if self.policy.requester_phone else None
        if phone:
            return {"phone": phone, "name": name}
        return {"unique_external_id": keyed_identifier(self.api.settings.webhook_secret,
                                                       handoff["conversation_id"]),
                "name": name}

    def tags(self, handoff: Handoff) -> List[str]:
        made = [*self.policy.tags, f"reason-{handoff['reason_code']}",
                f"queue-{handoff['queue']}"]
        return list(dict.fromkeys(tag[:TAG_LENGTH] for tag in made))

    # agents' work back from Freshdesk

    def notify(self, ticket_id: int, status_changed: bool) -> None:
        """Freshdesk's webhook says the ticket changed: catch up with it soon, so the
        webhook is answered at once."""
        self.in_background(self.sync(ticket_id, status_changed))

    async def sync(self, ticket_id: int, status_changed: bool) -> None:
        """Send the ticket's agents' replies not sent yet; on a status change, apply
        the ticket's status. On failure the ticket is read again later."""
        try:
            records = self.desk.records
            handoff_id = await records.read(self.links.handoff_of, ticket_id)
            if handoff_id is None:
                return  # not a handoff's ticket
            async with self.one_at_a_time(ticket_id):
                handoff = await records.read(self.desk.store.get, handoff_id)
                if handoff is None:
                    return
                await self._send_replies(handoff, ticket_id)
                if status_changed:
                    await self._apply_status(handoff["id"], ticket_id)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - kept for the next round
            self._resync[ticket_id] = self._resync.get(ticket_id, False) or status_changed
            if isinstance(error, FreshdeskError):
                self._failed(error)
                log.warning("Freshdesk ticket %s could not be read (%s); read again in "
                            "%.0f s", ticket_id, error, self.retry_seconds)
            else:
                log.exception("Freshdesk ticket %s: catching up failed; tried again in "
                              "%.0f s", ticket_id, self.retry_seconds)

    async def retry_once(self) -> None:
        await super().retry_once()
        again, self._resync = self._resync, {}
        for ticket_id, status_changed in again.items():
            if self._quiet():
                self._resync[ticket_id] = self._resync.get(ticket_id, False) or status_changed
            else:
                await self.sync(ticket_id, status_changed)

    async def _send_replies(self, handoff: Handoff, ticket_id: int) -> None:
        records = self.desk.records
        for reply in agent_replies(await self.api.conversations(ticket_id)):
            if not await records.write(self.links.first_delivery, reply["id"],
                                       self.desk.clock()):
                continue  # sent already
            actor = _actor(reply.get("user_id"))
            try:
                deliveries = await self.desk.helpdesk_reply(handoff, actor, reply_text(reply))
            except BaseException:  # not sent, or stopped while sending: the next catch-up sends it
                await records.write(self.links.forget_delivery, reply["id"])
                raise
            now = await records.read(self.desk.store.get, handoff["id"])
            handoff = now if now is not None else handoff
            log.info("H-%s: Freshdesk agent reply sent (%s)", handoff["id"],
                     ", ".join(d.status for d in deliveries))

    async def _apply_status(self, handoff_id: int, ticket_id: int) -> None:
        ticket = await self.api.ticket(ticket_id)
        handoff = await self.desk.records.read(self.desk.store.get, handoff_id)
        status = ticket.get("status")
        if handoff is None or not isinstance(status, int):
            return
        actor = _actor(ticket.get("responder_id"))
        try:
            if status in (RESOLVED, CLOSED) and handoff["status"] in HANDOFF_OPEN:
                await self.desk.helpdesk_resolve(handoff, actor,
                                                 self.policy.resolved_disposition)
                log.info("H-%s resolved in Freshdesk: back to the bot", handoff_id)
            elif status not in (RESOLVED, CLOSED) and handoff["status"] == "resolved":
                await self.desk.helpdesk_reopen(handoff, actor)
                log.info("H-%s reopened in Freshdesk: with people again", handoff_id)
        except HandoffConflict as error:  # changed meanwhile, or a newer handoff is open
            log.info("H-%s: Freshdesk status %s not applied (%s)", handoff_id, status, error)


def agent_replies(conversations: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """What the customer should receive: agents' public replies, oldest first. Notes
    (private or public, ours included) and the customer's own (incoming) are not."""
    replies = [c for c in conversations
               if c.get("source") == REPLY and c.get("private") is False
               and c.get("incoming") is False and isinstance(c.get("id"), int)
               and not isinstance(c.get("id"), bool) and 0 < c["id"] < 2**63
               and reply_text(c)]
    return sorted(replies, key=lambda c: (str(c.get("created_at") or ""), c["id"]))


def reply_text(conversation: Dict[str, Any]) -> str:
    """The reply as text: Freshdesk's body_text, else its HTML body without tags."""
    text = conversation.get("body_text")
    if not isinstance(text, str) or not text.strip():
        body = conversation.get("body")
        text = html.unescape(re.sub(r"<[^>]+>", " ", body)) if isinstance(body, str) else ""
    return text.strip()


def phone_of(handoff: Handoff) -> Optional[str]:
    """An SMS or WhatsApp customer's number, +E.164, from their conversation."""
    if handoff["channel"] not in PHONE_CHANNELS:
        return None
    sender = handoff["conversation_id"].split(":", 1)[-1].removeprefix("whatsapp:")
    digits = sender.lstrip("+")
    return f"+{digits}" if digits.isdigit() and 8 <= len(digits) <= 15 else None


def subject(handoff: Handoff) -> str:
    reason = handoff["reason_code"].replace("_", " ").strip().capitalize() or "Handoff"
    return f"{reason} (H-{handoff['id']}, {handoff['channel']})"


def as_html(lines: List[str]) -> str:
    """Lines of text as Freshdesk's HTML bodies: escaped, one line each."""
    return "<div>" + "<br>".join(html.escape(line) for line in lines) + "</div>"


def _actor(agent: Any) -> str:
    """How the audit trail names a Freshdesk agent: by id, not by name."""
    return (f"freshdesk:{agent}" if isinstance(agent, int) and not isinstance(agent, bool)
            else "freshdesk")
