"""Customers' conversations: which gateway conversation belongs to which store customer."""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import (
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
)

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from actions.identity import normalize_phone
from actions.store.types import (
    Customer,
)
from bot.handoff import store as handoff_tables
from bot.messaging.records import conversations
from bot.outreach.policy import PHONE_CONNECTORS
from common.privacy import mask


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    connector: str
    channel: str
    sender: str
    last_inbound_at: float

    @property
    def masked(self) -> str:
        return f"{self.connector}:{mask(self.sender)}"


def sender_phone(connector: str, sender: str) -> Optional[str]:
    """The E.164 number of a phone channel's sender: Twilio's From ('+1415…',
    'whatsapp:+1415…') or a WhatsApp id (the number with its country code, no '+')."""
    number = sender.removeprefix("whatsapp:")
    if connector == "whatsapp" and number.isdigit():
        number = f"+{number}"
    return normalize_phone(number, "ZZ") if number.startswith("+") else None


@dataclass(frozen=True)
class Directory:
    """Which conversations belong to which customer, read once per run."""

    by_phone: Mapping[str, Sequence[Conversation]]
    by_customer: Mapping[int, Sequence[Conversation]]
    phone_region: str

    def conversations_of(self, customer: Customer) -> List[Conversation]:
        found = {c.conversation_id: c for c in self.by_customer.get(customer.customer_id, ())}
        key = normalize_phone(customer.phone, self.phone_region)
        for conversation in self.by_phone.get(key, ()) if key else ():
            found[conversation.conversation_id] = conversation
        return list(found.values())

    def last_used(self, customer: Customer) -> Optional[Conversation]:
        found = self.conversations_of(customer)
        if not found:
            return None
        return max(found, key=lambda c: (c.last_inbound_at, c.conversation_id))


def read_directory(engine: Engine, phone_region: str) -> Directory:
    """Phone conversations by phone key; any conversation whose handoff carries a
    verified order, by that order's customer as the handoff's order snapshot names them
    (bot/handoff/snapshot.py): the store is not asked, so a run costs the same however
    many handoffs there were, and spends none of a platform's rate limit."""
    c, h = conversations.c, handoff_tables.handoffs.c
    with engine.connect() as db:
        rows = db.execute(sa.select(c.conversation_id, c.connector, c.channel, c.sender,
                                    c.last_inbound_at)).all()
        verified = db.execute(sa.select(h.conversation_id, h.order_snapshot).where(
            h.customer_verified.is_(True), h.order_id.is_not(None)).distinct()).all()
    known = {row.conversation_id: Conversation(row.conversation_id, row.connector, row.channel,
                                               row.sender, float(row.last_inbound_at))
             for row in rows}
    by_phone: Dict[str, List[Conversation]] = defaultdict(list)
    for conversation in known.values():
        key = sender_phone(conversation.connector, conversation.sender)
        if conversation.connector in PHONE_CONNECTORS and key:
            by_phone[key].append(conversation)
    owned = {(owner, conversation_id) for conversation_id, snapshot in verified
             if conversation_id in known and (owner := snapshot_owner(snapshot)) is not None}
    by_customer: Dict[int, List[Conversation]] = defaultdict(list)
    for owner, conversation_id in sorted(owned):
        by_customer[owner].append(known[conversation_id])
    return Directory(dict(by_phone), dict(by_customer), phone_region)


def snapshot_owner(snapshot: Optional[str]) -> Optional[int]:
    """The customer id of a handoff's order snapshot (JSON); None without one (the store
    did not answer then)."""
    try:
        found = json.loads(snapshot or "null")
    except ValueError:
        return None
    owner = found.get("customer_id") if isinstance(found, dict) else None
    return owner if isinstance(owner, int) else None
