"""What every action needs: the store, the policy, the verified order, replies,
slot changes and escalation, behind one small `Turn` object."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any, Dict, List, Optional

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.policy import EscalationPolicy, current_policy, policy_facts
from actions.store.sql import Store, open_store
from actions.store.types import Order, normalize_order_id

EMAIL_PATTERN = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


@lru_cache(maxsize=1)
def shared_store() -> Store:
    """One store (and connection pool) per action-server process."""
    return open_store()


def normalize_contact(text: Optional[str]) -> Optional[str]:
    """An email (lower-cased) or a phone number (digits only), or None."""
    if not text:
        return None
    email = EMAIL_PATTERN.search(text)
    if email:
        return email.group(0).lower()
    digits = re.sub(r"\D", "", text)
    return digits if 7 <= len(digits) <= 15 else None


def contact_matches(order: Order, contact: Optional[str]) -> bool:
    wanted = normalize_contact(contact)
    if wanted is None:
        return False
    customer = order.customer
    if "@" in wanted:
        return customer.email.lower() == wanted
    return re.sub(r"\D", "", customer.phone).endswith(wanted[-10:])


def day(value: date | datetime) -> str:
    return f"{value:%a %d %b}"


def money(value: Decimal) -> str:
    return f"{value:.2f}"


@dataclass
class Turn:
    """One action run: read the conversation, reply, record events."""

    dispatcher: CollectingDispatcher
    tracker: Tracker
    store: Store = field(default_factory=shared_store)
    policy: EscalationPolicy = field(default_factory=current_policy)
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    events: List[EventType] = field(default_factory=list)

    def say(self, response: str, **facts: Any) -> None:
        values = {**policy_facts(self.policy), **facts}
        self.dispatcher.utter_message(response=response, **{k: str(v) for k, v in values.items()})

    def set(self, slot: str, value: Any) -> None:
        self.events.append(SlotSet(slot, value))

    def slot(self, name: str) -> Any:
        for event in reversed(self.events):
            if event.get("event") == "slot" and event.get("name") == name:
                return event.get("value")
        return self.tracker.get_slot(name)

    @property
    def conversation_id(self) -> str:
        return self.tracker.sender_id

    def verified_order(self) -> Optional[Order]:
        """The order in the slots, only if the contact given matches it."""
        order_id = normalize_order_id(self.slot("order_id") or "")
        if order_id is None:
            return None
        order = self.store.orders.get_order(order_id)
        if order is None or not contact_matches(order, self.slot("contact")):
            return None
        return order

    def offer(self, kind: str, response: str, **facts: Any) -> None:
        """Ask a yes/no question; action_confirm_offer / _decline_offer act on it."""
        self.set("pending_offer", kind)
        self.say(response, **facts)

    def escalate(self, rule_name: str, order: Optional[Order], what_happened: str) -> None:
        rule = self.policy.rule(rule_name)
        tier = self.policy.tiers[rule.tier]
        summary = (
            f"{what_happened} Rule {rule_name} fired (tier {rule.tier}). "
            f"Next: {rule.next_step}. Customer told to expect a reply {tier.team_reply}."
        )
        handoff = self.store.handoffs.create(
            conversation_id=self.conversation_id,
            reason_code=rule.reason,
            tier=rule.tier,
            rule=rule_name,
            order_id=order.order_id if order else None,
            summary=summary,
        )
        response = "utter_escalated_safety" if rule_name == "safety_legal" else "utter_escalated"
        self.say(
            response,
            team=self.policy.teams[rule.team],
            team_reply=tier.team_reply,
            handoff_id=handoff.handoff_id,
        )
        self.set("pending_offer", None)

    def finish(self) -> List[Dict[str, Any]]:
        return self.events
