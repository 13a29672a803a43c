"""What a helpdesk's agents are given with a handoff, as lines of plain text (each
target renders them as its helpdesk shows text): the transcript so far and the packet,
everything the bot knows, so the agent does not ask the customer again."""
from __future__ import annotations

import json
from typing import List

from bot.handoff.desk import HandoffDesk, agent_slots
from bot.handoff.store import Handoff
from common.timefmt import iso
from connectors.message import Message, TranscriptTurn

SPEAKERS = {"customer": "Customer", "bot": "Assistant", "agent": "Agent"}


def customer_text(message: Message) -> str:
    """What the customer sent, with attachments named (agents open them in the
    gateway's console: the channel's links need its credentials)."""
    names = [f"[{a.kind}]" for a in message.attachments]
    return " ".join([message.text, *names]).strip() or "[empty message]"


def transcript_lines(transcript: List[TranscriptTurn]) -> List[str]:
    lines = ["Conversation before the handoff:"]
    for turn in transcript:
        attached = "".join(f" [{a.kind}]" for a in turn.attachments)
        lines.append(f"{iso(turn.at)} {SPEAKERS.get(turn.role, turn.role)}: {turn.text}{attached}")
    return lines


def packet_lines(desk: HandoffDesk, handoff: Handoff) -> List[str]:
    """The handoff: reason, rule, tier, queue, SLA, verified identity (the masked
    contact), the summary, what the bot tried, the slots, the order snapshot."""
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
    return lines
