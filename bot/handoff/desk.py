"""The handoff desk: opens handoffs when the bot escalates or is unavailable, keeps the
bot silent while a person has the conversation, carries out agents' actions (claim,
reply, note, transfer, resolve) with an audit entry and a live event each, and asks
for CSAT when the conversation goes back to the bot."""
from __future__ import annotations

import json
import re
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from actions.policy import EscalationPolicy
from actions.store.types import StoreSystems
from bot.handoff.events import EventBus, EventType
from bot.handoff.live import LiveQueues
from bot.handoff.peak import PeakMode
from bot.handoff.policy import HandoffPolicy, describe_opening, describe_wait
from bot.handoff.snapshot import order_snapshot
from bot.handoff.store import OPEN, Agent, Handoff, HandoffConflict, HandoffStore
from bot.handoff.target import ConsoleTarget, HandoffTarget
from bot.messaging.records import GatewayRecords
from common.handoff_request import HandoffRequest, is_handoff
from common.privacy import mask, redact
from common.timefmt import iso
from connectors.message import Attachment, Button, Delivery, Message, Reply, TranscriptTurn

Send = Callable[[str, str, Sequence[Reply], str], Awaitable[List[Delivery]]]
Download = Callable[[str, str], Awaitable[bytes]]
CSAT_ANSWER = re.compile(r"^\s*(?:csat:)?(\d{1,2})\b")
REACHED = ("sent", "delivered", "read")


@dataclass(frozen=True)
class Place:
    """The conversation a handoff is opened in: its connector, what the customer uses
    there (channel) and who they are on it (sender)."""

    connector: str
    channel: str
    sender: str

    @property
    def conversation_id(self) -> str:
        return f"{self.connector}:{self.sender}"

    @classmethod
    def of(cls, message: Message) -> Place:
        return cls(message.connector, message.channel, message.sender)


class HandoffNotFound(Exception):
    pass


class Forbidden(Exception):
    """The agent may not do this (another team's queue, another agent's conversation)."""


class Invalid(ValueError):
    """The request names something that does not exist (a queue, a disposition)."""


def mask_contact(contact: str) -> str:
    """'ann.smith@example.com' -> 'a***@example.com'; phone numbers as in logs."""
    if "@" in contact:
        local, _, domain = contact.partition("@")
        return f"{local[:1]}***@{domain}"
    return mask(contact) if contact else ""


# A handoff as agents and the API see it (JSON): the stored Handoff's fields with times
# in ISO 8601, slots masked, and its transcript, notes, audit and queue position.
HandoffRecord = Dict[str, Any]

def agent_slots(slots: Dict[str, Any], shown: Sequence[str]) -> Dict[str, Any]:
    """The slots as agents see them: numbers and yes/no as they are; the `shown` ones
    whole unless their value looks like an email, phone number or street address;
    every other value masked like the contact (a new address, a one-time code, the
    email a code went to)."""
    def seen(name: str, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        text = value if isinstance(value, str) else json.dumps(value)
        return text if name in shown and redact(text) == text else mask_contact(text)
    return {name: seen(name, value) for name, value in slots.items()}


def may_see(agent: Agent, queue: str) -> bool:
    """The one rule of who reads and works a handoff, over HTTP and on the live
    socket: agents of its queue's team, and the admin."""
    return agent.admin or queue in agent.teams


def split_handoff(replies: Sequence[Reply]) -> Tuple[List[Reply], Optional[HandoffRequest]]:
    """The bot's replies for the customer, and its escalation payload if it escalated."""
    escalations = [r.custom["handoff"] for r in replies
                   if r.custom is not None and is_handoff(r.custom)]
    shown = [r for r in replies if not is_handoff(r.custom)]
    return shown, (escalations[0] if escalations else None)


class HandoffDesk:
    def __init__(self, store: HandoffStore, records: GatewayRecords, policy: HandoffPolicy,
                 escalation: EscalationPolicy, shop: StoreSystems, bus: EventBus,
                 live: Optional[LiveQueues] = None, peak: Optional[PeakMode] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.records = records
        self.policy = policy
        self.escalation = escalation
        self.teams = dict(escalation.teams)
        self.shop = shop
        self.bus = bus
        self.live = live or LiveQueues(store, records)
        self.peak = peak
        self.clock = clock
        # where agents work; bot/services.py sets another as HANDOFF_TARGET says
        self.target: HandoffTarget = ConsoleTarget()
        self._send: Optional[Send] = None
        self._download: Optional[Download] = None

    @property
    def admin(self) -> Agent:
        """Who the admin token acts as: every team, no capacity limit."""
        return Agent("admin", tuple(self.teams), 0, admin=True)

    def bind(self, send: Send, download: Download) -> None:
        """The router's delivery (which records what it sends) and its channels'
        downloads of customers' attachments."""
        self._send, self._download = send, download

    async def send(self, handoff: Handoff, text: str, role: str,
                   buttons: Sequence[Button] = (), images: Sequence[str] = ()) -> List[Delivery]:
        """The text (with the first image, and the buttons) and any further images."""
        assert self._send is not None, "bind() the desk to the router first"
        conversation = handoff["conversation_id"]
        recipient = conversation.split(":", 1)[1]
        replies = [Reply(text=text, buttons=tuple(buttons), image_url=images[0] if images else ""),
                   *(Reply(image_url=url) for url in images[1:])]
        return await self._send(handoff["connector"], recipient, replies, role)

    # the customer's side, called by the router for every inbound message

    def routing(self, conversation_id: str) -> Optional[Handoff]:
        """The handoff that decides where the conversation's next message goes (see
        `takes`); synchronous, so the router reads it in the trip that records it."""
        since = self.clock() - self.policy.csat.answer_within_hours * 3600
        return self.store.routing(conversation_id, since)

    async def takes(self, message: Message, handoff: Optional[Handoff]) -> bool:
        """True when the message is for people, not the bot: the conversation is with a
        person, or it answers the CSAT question."""
        if handoff is None:
            return False
        if handoff["status"] == "resolved":
            return await self._csat_answer(handoff, message.text)
        await self._customer_wrote(handoff, message)
        return True

    async def _customer_wrote(self, handoff: Handoff, message: Message) -> None:
        await self.publish(EventType.HANDOFF_MESSAGE, handoff)
        await self.target.customer_wrote(handoff, message)
        due = (handoff["last_notice_at"] or 0) + self.policy.still_waiting_every_seconds
        if handoff["status"] == "waiting" and self.clock() >= due:
            await self._tell_position(handoff, self.policy.texts.still_waiting)

    async def _csat_answer(self, handoff: Handoff, text: str) -> bool:
        match = CSAT_ANSWER.match(text)
        scale = len(self.policy.csat.options)
        score = int(match.group(1)) if match else None
        if score is None or not 1 <= score <= scale:
            await self.records.write(self.store.record_csat, handoff["id"], None, self.clock())
            return False
        await self.records.write(self.store.record_csat, handoff["id"], score, self.clock())
        await self.send(handoff, self.policy.texts.csat_thanks, "bot")
        await self.publish(EventType.HANDOFF_CSAT, handoff)
        return True

    async def escalate(self, message: Message,
                       payload: HandoffRequest) -> Optional[Handoff]:
        """Open the handoff the bot asked for (common/handoff_request.py), read as untrusted."""
        customer: Mapping[str, Any] = payload.get("customer") or {}
        summary: Mapping[str, Any] = payload.get("summary") or {}
        values = {
            "reason_code": str(payload.get("reason_code") or "unknown"),
            "rule": str(payload.get("rule") or ""),
            "tier": _tier(payload.get("tier")),
            "queue": str(payload.get("queue") or ""),
            "customer_name": str(customer.get("name") or message.profile_name or ""),
            "customer_verified": bool(customer.get("verified")),
            "customer_contact": mask_contact(str(customer.get("contact") or "")),
            "order_id": payload.get("order_id") or None,
            "slots": payload.get("slots") or {},
            "actions_attempted": payload.get("actions_attempted") or [],
            "summary": {k: str(summary.get(k) or "") for k in ("what_happened", "next", "eta")},
        }
        if values["queue"] not in self.teams:
            values["queue"] = self.policy.bot_unavailable.queue
        return await self._open(Place.of(message), await self._with_snapshot(values))

    async def follow_up(self, place: Place,
                        values: Dict[str, Any]) -> Optional[Handoff]:
        """Open a handoff nobody asked for in this conversation (the monitor's: a promise
        the bot made fell due), with the order's snapshot like the bot's escalations;
        None if the conversation is already with a person."""
        opened = await self._open(place, await self._with_snapshot(values))
        if opened is not None:
            await self.target.opened(opened)
        return opened

    async def _with_snapshot(self, values: Dict[str, Any]) -> Dict[str, Any]:
        if not values["order_id"]:
            return values
        snapshot = await self.records.read(order_snapshot, self.shop, values["order_id"])
        return {**values, "order_snapshot": snapshot}

    async def bot_unavailable(self, message: Message, why: str) -> Optional[Handoff]:
        """The bot gave no answer to the message, for the reason `why` (agents read it)."""
        fallback = self.policy.bot_unavailable
        return await self._open(Place.of(message), {
            "reason_code": "bot_unavailable", "rule": "bot_unavailable", "tier": fallback.tier,
            "queue": fallback.queue, "customer_name": message.profile_name,
            "customer_verified": False, "customer_contact": "", "order_id": None,
            "slots": {}, "actions_attempted": [],
            "summary": {"what_happened": f"The assistant did not answer a {message.channel} "
                                         f"message: {why}.",
                        "next": "read the transcript and reply to the customer",
                        "eta": ""},
        })

    async def _open(self, place: Place,
                    values: Dict[str, Any]) -> Optional[Handoff]:
        """Open the handoff and show it on the consoles; None if the conversation is
        already with a person."""
        now = self.clock()
        surge = await self.peak.surge_targets() if self.peak is not None else None
        target = self.policy.first_response_seconds(values["queue"], place.channel,
                                                    values["tier"], surge)
        starts = self.policy.business_hours.next_open(
            datetime.fromtimestamp(now, timezone.utc)).timestamp()
        if not values["customer_contact"] and place.channel in ("sms", "whatsapp"):
            values["customer_contact"] = mask(place.sender)
        handoff, created = await self.records.write(self.store.open, {
            **values, "conversation_id": place.conversation_id,
            "connector": place.connector, "channel": place.channel,
            "priority": values["tier"], "created_at": now, "sla_target_seconds": target,
            "sla_due_at": starts + target,
        })
        if not created:  # already with a person
            return None
        await self.publish(EventType.HANDOFF_OPENED, handoff, await self.live.changed(handoff))
        return handoff

    async def peak_on(self) -> bool:
        return self.peak is not None and await self.peak.is_on()

    async def announce(self, handoff: Handoff) -> None:
        """Tell the customer their place in the queue, or when the team is back; then
        the handoff goes to where agents work, its transcript complete."""
        texts = self.policy.texts
        await self._tell_position(handoff, texts.queued, after_hours=texts.queued_after_hours)
        await self.target.opened(handoff)

    async def _tell_position(self, handoff: Handoff, text: str,
                             after_hours: Optional[str] = None) -> None:
        now = self.clock()
        moment = datetime.fromtimestamp(now, timezone.utc)
        opens = self.policy.business_hours.next_open(moment)
        if after_hours is not None and opens > moment:
            text = after_hours
        position = await self.live.position(handoff)
        await self.send(handoff, text.format(
            reference=f"H-{handoff['id']}", team=self.teams.get(handoff["queue"], "support"),
            position=position, wait=describe_wait(await self._expected_wait(handoff, position)),
            opens=describe_opening(opens, moment, self.policy.business_hours.timezone)), "bot")
        await self.records.write(self.store.noticed, handoff["id"], now)

    async def _expected_wait(self, handoff: Handoff, position: int) -> float:
        """The queue's median wait before a claim times the position, once there is
        enough history; until then the time left to the SLA target."""
        estimate = self.policy.wait_estimate
        waits = await self.records.read(self.store.claim_waits, handoff["queue"],
                                        estimate.sample)
        if len(waits) >= estimate.min_sample:
            return statistics.median(waits) * position
        return max(60.0, handoff["sla_due_at"] - self.clock())

    # agents' actions

    async def claim(self, handoff_id: int, agent: Agent, for_agent: Agent) -> HandoffRecord:
        handoff = await self._get(handoff_id, agent)
        if not agent.admin and agent.name != for_agent.name:
            raise Forbidden("agents claim for themselves")
        self._check_team(for_agent, handoff)
        claimed = await self.records.write(self.store.claim, handoff_id, for_agent, self.clock())
        return await self._done(agent, "claim", claimed, {"agent": for_agent.name},
                                EventType.HANDOFF_CLAIMED)

    async def claim_next(self, agent: Agent) -> HandoffRecord:
        claimed = await self.records.write(self.store.claim_next, agent, list(agent.teams),
                                           self.clock())
        return await self._done(agent, "claim", claimed, {"agent": agent.name, "next": True},
                                EventType.HANDOFF_CLAIMED)

    async def reply(self, handoff_id: int, agent: Agent,
                    text: str) -> Tuple[List[Delivery], HandoffRecord]:
        handoff = await self._get(handoff_id, agent)
        self._check_owner(agent, handoff)
        deliveries = await self.send(handoff, text, "agent")
        # a template sent instead (WhatsApp's closed window) does not answer the customer
        if any(d.status in REACHED and not d.template for d in deliveries):
            await self.records.write(self.store.first_response, handoff_id, self.clock())
        statuses = [d.status for d in deliveries]
        record = await self._done(agent, "reply", await self._get(handoff_id),
                                  {"deliveries": statuses}, EventType.HANDOFF_MESSAGE)
        return deliveries, record

    async def note(self, handoff_id: int, agent: Agent, text: str) -> HandoffRecord:
        handoff = await self._get(handoff_id, agent)
        await self.records.write(self.store.add_note, handoff_id, agent.name, text, self.clock())
        return await self._done(agent, "note", handoff, {}, EventType.HANDOFF_NOTE)

    async def transfer(self, handoff_id: int, agent: Agent, queue: str) -> HandoffRecord:
        if queue not in self.teams:
            raise Invalid(f"no queue {queue!r}; queues: {', '.join(self.teams)}")
        # An agent may move a handoff of their team to any queue, and then no longer
        # sees it: the answer is the record as it left them.
        handoff = await self._get(handoff_id, agent)
        if handoff["status"] == "active":
            self._check_owner(agent, handoff)
        moved = await self.records.write(self.store.transfer, handoff_id, queue)
        return await self._done(agent, "transfer", moved, {"from": handoff["queue"], "to": queue},
                                EventType.HANDOFF_TRANSFERRED)

    async def resolve(self, handoff_id: int, agent: Agent, disposition: str,
                      note: str) -> HandoffRecord:
        if disposition not in self.policy.dispositions:
            raise Invalid(f"no disposition {disposition!r}; dispositions: "
                          f"{', '.join(self.policy.dispositions)}")
        handoff = await self._get(handoff_id, agent)
        self._check_owner(agent, handoff)
        resolved = await self.records.write(self.store.resolve, handoff_id, disposition, note,
                                            self.clock())
        return await self._hand_back(agent.name, resolved, disposition)

    async def _hand_back(self, actor: str, resolved: Handoff,
                         disposition: str) -> HandoffRecord:
        """The resolved conversation back to the bot: the CSAT question asked."""
        if resolved.get("order_id"):
            # a person reviewed it: a stop-the-line hold on the order ends here
            await self.records.write(self.shop.writes.release, resolved["order_id"])
        # audited before the customer hears of it, so the trail never lags the conversation
        await self.audit(actor, "resolve", resolved, {"disposition": disposition})
        await self.live.changed(resolved)
        texts, options = self.policy.texts, self.policy.csat.options
        await self.send(resolved, texts.handback, "bot")
        await self.send(resolved, texts.csat_question, "bot",
                        [Button(title, f"csat:{n}") for n, title in enumerate(options, 1)])
        return await self.publish(EventType.HANDOFF_RESOLVED, resolved)

    # a helpdesk's agents (the target's webhooks): they act in the helpdesk, which
    # decides who may; `actor` names them in the audit trail

    async def helpdesk_reply(self, handoff: Handoff, actor: str, text: str,
                             images: Sequence[str] = ()) -> List[Delivery]:
        """An agent's reply in the helpdesk (its text, the images they attached), sent
        to the customer on their channel; the first one claims a waiting handoff."""
        handoff = await self.helpdesk_claim(handoff, actor)
        deliveries = await self.send(handoff, text, "agent", images=images)
        if any(d.status in REACHED and not d.template for d in deliveries):
            await self.records.write(self.store.first_response, handoff["id"], self.clock())
        await self._done(self._helpdesk_agent(actor), "reply", await self._get(handoff["id"]),
                         {"deliveries": [d.status for d in deliveries]},
                         EventType.HANDOFF_MESSAGE)
        return deliveries

    async def helpdesk_claim(self, handoff: Handoff, actor: str) -> Handoff:
        """A waiting handoff taken by a helpdesk's agent (assigned there, or replying);
        as it is if it was claimed or resolved meanwhile."""
        if handoff["status"] != "waiting":
            return handoff
        try:
            handoff = await self.records.write(self.store.claim, handoff["id"],
                                               self._helpdesk_agent(actor), self.clock())
        except HandoffConflict:
            return await self._get(handoff["id"])
        await self.audit(actor, "claim", handoff, {})
        await self.publish(EventType.HANDOFF_CLAIMED, handoff)
        return handoff

    async def helpdesk_resolve(self, handoff: Handoff, actor: str,
                               disposition: str) -> HandoffRecord:
        """Resolved in the helpdesk, claimed or not: back to the bot, with CSAT."""
        resolved = await self.records.write(self.store.resolve, handoff["id"], disposition,
                                            "", self.clock(), OPEN)
        return await self._hand_back(actor, resolved, disposition)

    async def helpdesk_reopen(self, handoff: Handoff, actor: str) -> HandoffRecord:
        """Reopened in the helpdesk: the conversation is with people again."""
        reopened = await self.records.write(self.store.reopen, handoff["id"])
        return await self._done(self._helpdesk_agent(actor), "reopen", reopened, {},
                                EventType.HANDOFF_CLAIMED)

    @staticmethod
    def _helpdesk_agent(actor: str) -> Agent:
        """The helpdesk keeps its agents' teams and capacity; here they are unlimited."""
        return Agent(actor, (), 0, admin=True)

    async def attachment(self, handoff_id: int, agent: Agent,
                         url: str) -> Tuple[Attachment, bytes]:
        """An attachment the customer sent in this conversation, fetched through its
        channel; only URLs of the transcript, so this fetches nothing else."""
        handoff = await self._get(handoff_id, agent)
        transcript = await self.records.read(self.records.transcript,
                                             handoff["conversation_id"])
        found = next((a for turn in transcript if turn.role == "customer"
                      for a in turn.attachments if a.url == url), None)
        if found is None:
            raise HandoffNotFound("no such attachment in this conversation")
        assert self._download is not None, "bind() the desk to the router first"
        return found, await self._download(handoff["connector"], url)

    # reading

    async def get(self, handoff_id: int, agent: Agent) -> HandoffRecord:
        return await self.record(await self._get(handoff_id, agent))

    async def list(self, agent: Agent, status: Optional[str],
                   queue: Optional[str]) -> List[HandoffRecord]:
        """The agent's teams' handoffs (all for the admin); Forbidden for a queue of
        another team."""
        if queue is not None and not may_see(agent, queue):
            raise Forbidden(f"{agent.name} is not in the {queue} team")
        queues = [queue] if queue is not None else None if agent.admin else list(agent.teams)
        rows = await self.records.read(self.store.list, status, queues)
        return [await self.record(row) for row in rows]

    async def queues(self) -> List[Dict[str, Any]]:
        counts = await self.records.read(self.store.queue_counts, self.clock())
        empty = {"waiting": 0, "active": 0, "breached": 0, "oldest_waiting_at": None}
        return [{"queue": name, "label": label, **{**empty, **counts.get(name, {})},
                 "oldest_waiting_at": iso(counts.get(name, empty)["oldest_waiting_at"])}
                for name, label in self.teams.items()]

    async def record(self, handoff: Handoff,
                     position: Optional[int] = None) -> HandoffRecord:
        """The handoff as agents and the API see it; `position` if already known."""
        if handoff["status"] == "waiting" and position is None:
            position = await self.live.position(handoff)
        return await self.records.read(self._record, handoff, position)

    def _record(self, handoff: Handoff, position: Optional[int]) -> HandoffRecord:
        """Its reads in one trip to a worker thread: under load each trip waits its turn."""
        handoff_id = handoff["id"]
        return _record(handoff, self.teams, self.policy.slots_shown_whole,
                       self.records.transcript(handoff["conversation_id"]),
                       self.store.notes(handoff_id), self.store.audit_trail(handoff_id),
                       position, self.clock())

    # helpers

    async def audit(self, actor: str, action: str, handoff: Handoff,
                    detail: Dict[str, Any]) -> None:
        await self.records.write(self.store.audit, actor, action, handoff["id"], detail,
                                 self.clock())

    async def publish(self, kind: EventType, handoff: Handoff,
                      position: Optional[int] = None) -> HandoffRecord:
        record = await self.record(handoff, position)
        await self.bus.publish({"type": kind, "handoff": record})
        return record

    async def _done(self, agent: Agent, action: str, handoff: Handoff,
                    detail: Dict[str, Any], event: EventType) -> HandoffRecord:
        await self.audit(agent.name, action, handoff, detail)
        return await self.publish(event, handoff, await self.live.changed(handoff))

    async def _get(self, handoff_id: int, agent: Optional[Agent] = None) -> Handoff:
        """The handoff; with `agent`, only if they may see it (else Forbidden)."""
        handoff = await self.records.read(self.store.get, handoff_id)
        if handoff is None:
            raise HandoffNotFound(f"no handoff {handoff_id}")
        if agent is not None:
            self._check_team(agent, handoff)
        return handoff

    @staticmethod
    def _check_team(agent: Agent, handoff: Handoff) -> None:
        if not may_see(agent, handoff["queue"]):
            raise Forbidden(f"{agent.name} is not in the {handoff['queue']} team")

    @staticmethod
    def _check_owner(agent: Agent, handoff: Handoff) -> None:
        if handoff["status"] != "active":
            raise HandoffConflict(f"the handoff is {handoff['status']}; claim it first")
        if not agent.admin and handoff["agent"] != agent.name:
            raise Forbidden(f"the conversation is with {handoff['agent']}")


def _tier(value: Any) -> int:
    return value if isinstance(value, int) and 1 <= value <= 3 else 1


def _record(handoff: Handoff, teams: Dict[str, str], shown_slots: Sequence[str],
            transcript: List[TranscriptTurn],
            notes: List[Dict[str, Any]], audit: List[Dict[str, Any]], position: Optional[int],
            now: float) -> HandoffRecord:
    answered = handoff["first_response_at"]
    return {
        "id": handoff["id"], "reference": f"H-{handoff['id']}",
        "conversation_id": handoff["conversation_id"], "connector": handoff["connector"],
        "channel": handoff["channel"],
        "customer": {"name": handoff["customer_name"], "verified": handoff["customer_verified"],
                     "contact": handoff["customer_contact"]},
        "reason": {"code": handoff["reason_code"], "rule": handoff["rule"],
                   "tier": handoff["tier"]},
        "queue": handoff["queue"], "queue_label": teams.get(handoff["queue"], handoff["queue"]),
        "priority": handoff["priority"], "status": handoff["status"], "agent": handoff["agent"],
        "created_at": iso(handoff["created_at"]), "claimed_at": iso(handoff["claimed_at"]),
        "first_response_at": iso(answered), "resolved_at": iso(handoff["resolved_at"]),
        "sla": {"target_seconds": handoff["sla_target_seconds"],
                "due_at": iso(handoff["sla_due_at"]),
                "breached": (answered if answered is not None else now) > handoff["sla_due_at"]},
        "position": position,
        "transcript": [{"role": t.role, "text": t.text, "at": iso(t.at),
                        "attachments": [a.as_dict() for a in t.attachments]}
                       for t in transcript],
        "slots": agent_slots(handoff["slots"], shown_slots), "order": handoff["order_snapshot"],
        "actions_attempted": handoff["actions_attempted"], "summary": handoff["summary"],
        "notes": [{**n, "at": iso(n["at"])} for n in notes],
        "disposition": handoff["disposition"], "resolution_note": handoff["resolution_note"],
        "csat": ({"score": handoff["csat_score"], "at": iso(handoff["csat_at"])}
                 if handoff["csat_score"] is not None else None),
        "audit": [{"actor": a["actor"], "action": a["action"], "at": iso(a["at"]),
                   "detail": a["detail"]} for a in audit],
    }
