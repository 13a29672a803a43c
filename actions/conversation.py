"""What every action needs: the store, the policy, the verified order, replies,
slot changes and escalation, behind one small `Turn` object."""
from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any, Dict, Iterable, List, Literal, Mapping, Optional, Sequence

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.identity import belongs_to, normalize_phone, proven_contact
from actions.policy import EscalationPolicy, current_policy, policy_facts
from actions.store.backend import open_systems, platform_policy
from actions.store.types import Order, StoreSystems, normalize_order_id
from common.handoff_request import HandoffRequest

HOUSEKEEPING_ACTIONS = frozenset({"action_listen", "action_session_start"})

QuestionKind = Literal["write", "person", "remedy"]


@dataclass(frozen=True)
class Question:
    """The yes/no question (or choice) the bot asked last, kept in the slot
    `pending_offer` until answered: a write to carry out (actions/guarded.py), a person
    to bring in, or remedies to choose from. `turn` counts the customer's messages when
    it was asked: only the very next one answers it."""

    kind: QuestionKind
    turn: int
    at: float
    order_id: str = ""
    change: Dict[str, Any] = field(default_factory=dict)
    rule: str = ""
    problem: str = ""
    # the customer's request that led to the question ("cancel_order")
    request: str = ""

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def decode(cls, value: Any) -> Optional[Question]:
        try:
            return cls(**json.loads(value))
        except (TypeError, ValueError):
            return None


@lru_cache(maxsize=1)
def shared_store() -> StoreSystems:
    """One set of store systems (and connection pools) per action-server process, on
    the platform STORE_BACKEND names."""
    return open_systems(platform=platform_policy(current_policy()))


def day(value: date | datetime) -> str:
    return f"{value:%a %d %b}"


def money(value: Decimal) -> str:
    return f"{value:.2f}"


@dataclass
class Turn:
    """One action run: read the conversation, reply, record events."""

    dispatcher: CollectingDispatcher
    tracker: Tracker
    store: StoreSystems = field(default_factory=shared_store)
    policy: EscalationPolicy = field(default_factory=current_policy)
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    events: List[EventType] = field(default_factory=list)
    handed_over: bool = False

    def say(self, response: str, **facts: Any) -> None:
        self._utter(response, (), facts)

    def _utter(self, response: str, buttons: Sequence[Dict[str, str]],
               facts: Mapping[str, Any]) -> None:
        values = {**policy_facts(self.policy), **facts}
        self.dispatcher.utter_message(response=response, buttons=list(buttons),
                                      **{k: str(v) for k, v in values.items()})

    def set(self, slot: str, value: Any) -> None:
        self.events.append(SlotSet(slot, value))

    def slot(self, name: str) -> Any:
        for event in reversed(self.events):
            if event.get("event") == "slot" and event.get("name") == name:
                return event.get("value")
        return self.tracker.get_slot(name)

    def session_slot(self, name: str) -> Any:
        """The slot's value if this conversation session set it, else None: a value
        carried over from an earlier session (set before the first message) is not."""
        events = session_events(self.tracker)
        first = next((i for i, e in enumerate(events) if e.get("event") == "user"), len(events))
        values = [e.get("value") for e in [*events[first:], *self.events]
                  if e.get("event") == "slot" and e.get("name") == name]
        return values[-1] if values else None

    @property
    def conversation_id(self) -> str:
        return self.tracker.sender_id

    def verified_order(self) -> Optional[Order]:
        """The order in the slots, only while this conversation's proof of identity
        holds and covers it (actions/identity.py). Every action reads orders here."""
        contact = self.proven_contact()
        order_id = normalize_order_id(self.slot("order_id") or "")
        if contact is None or order_id is None:
            return None
        order = self.store.orders.get_order(order_id)
        if order is None or not belongs_to(order, contact, self.region):
            return None
        return order

    def proven_contact(self) -> Optional[str]:
        return proven_contact(self.slot, self.now, self.policy.identity)

    def channel_phone(self) -> Optional[str]:
        """The sender's phone number when the channel proved it (WhatsApp), else None."""
        metadata = self.tracker.latest_message.get("metadata") or {}
        return normalize_phone(str(metadata.get("proven_phone") or ""), self.region)

    @property
    def region(self) -> str:
        return self.policy.identity.default_phone_region

    def ask(self, kind: QuestionKind, response: str,
            facts: Optional[Mapping[str, Any]] = None, *,
            buttons: Sequence[Dict[str, str]] = (), order_id: str = "",
            change: Optional[Mapping[str, Any]] = None, rule: str = "",
            problem: str = "") -> None:
        """Ask a question (its yes/no buttons are the response's, in domain.yml, unless
        `buttons` are given); action_confirm_offer, _decline_offer and _choose_remedy act
        on the answer. The response may name `{order_id}`."""
        question = Question(kind, self.customer_turns(), self.now.timestamp(), order_id,
                            dict(change or {}), rule, problem, self.slot("request") or "")
        self.set("pending_offer", question.encode())
        self._utter(response, buttons, {"order_id": order_id, **(facts or {})})

    def offer_person(self, rule: str, response: str) -> None:
        self.ask("person", response, rule=rule)

    def question(self) -> Optional[Question]:
        return Question.decode(self.slot("pending_offer"))

    def answers(self, question: Question) -> bool:
        """Whether this message answers the question: it is the customer's very next
        message, within the policy's window. Any other turn withdrew the question."""
        age = self.now.timestamp() - question.at
        return (self.customer_turns() == question.turn + 1
                and 0 <= age <= self.policy.writes.confirm_within_minutes * 60)

    def customer_turns(self) -> int:
        return sum(1 for event in self.tracker.events if event.get("event") == "user")

    def current_slots(self) -> Dict[str, Any]:
        """Every slot that has a value once this run's changes are applied."""
        changed = [e.get("name") for e in self.events if e.get("event") == "slot"]
        names = dict.fromkeys([*self.tracker.current_slot_values(), *changed])
        values = {name: self.slot(name) for name in names}
        return {name: value for name, value in values.items() if value is not None}

    def escalate(self, rule_name: str, order: Optional[Order], what_happened: str) -> None:
        """Hand the conversation to a person: tell the customer, then the gateway.

        `order` is what verified_order() returned: every caller passes it, so an order
        here means the customer proved who they are."""
        rule = self.policy.rule(rule_name)
        # The person answers from here; a question left open must not reach them as a slot.
        self.set("pending_offer", None)
        if rule.hold_order and order is not None:
            # stop the line: no write on the order until a person resolves the handoff
            self.store.writes.hold(order.order_id, rule_name, self.conversation_id)
        self.say(rule.response, team=self.policy.teams[rule.team],
                 team_reply=self.policy.tiers[rule.tier].team_reply)
        # Last: the gateway takes it out of the replies and opens the handoff.
        self.handed_over = True
        payload = handoff_payload(self, rule_name, order, what_happened)
        self.dispatcher.utter_message(json_message={"handoff": payload})

    def pass_on_next_request(self) -> None:
        """This request is done: the customer's other one (components/several_requests.py)
        goes to the gateway, which asks it next as the customer's words. Not while a
        question waits for its answer, a form runs or a person takes over."""
        later = self.slot("next_request")
        if (not later or self.question() is not None or self.handed_over
                or (self.tracker.active_loop or {}).get("name")):
            return
        self.set("next_request", None)
        self.say("utter_next_request_now", request=later)
        self.dispatcher.utter_message(json_message={"next_request": later})

    def finish(self) -> List[Dict[str, Any]]:
        return self.events


class TurnAction(Action, ABC):
    """An action whose work is `act(turn)`; it always returns the turn's events."""

    # whether the customer's request is done when this action has run (unless it asked a
    # question): their other request, if they made two, comes next
    completes_request = False

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[Dict[str, Any]]:
        # store calls block (SQL, a platform's HTTP API with its retries): on a worker
        # thread, so the action server keeps serving other conversations meanwhile
        return await asyncio.to_thread(self._run, dispatcher, tracker)

    def _run(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> List[Dict[str, Any]]:
        turn = Turn(dispatcher, tracker)
        turn.store.begin_turn()
        self.act(turn)
        if self.completes_request:
            turn.pass_on_next_request()
        return turn.finish()

    @abstractmethod
    def act(self, turn: Turn) -> None: ...


def session_events(tracker: Tracker) -> List[Dict[str, Any]]:
    """The events of the current conversation session: those after its start."""
    events = list(tracker.events)
    starts = [i for i, e in enumerate(events) if e.get("event") == "session_started"]
    return events[starts[-1] + 1:] if starts else events


def user_intent(event: Dict[str, Any]) -> str:
    """The intent of a user event ("" if it has none)."""
    return str(((event.get("parse_data") or {}).get("intent") or {}).get("name") or "")


def handoff_payload(turn: Turn, rule_name: str, order: Optional[Order],
                    what_happened: str) -> HandoffRequest:
    """What the gateway needs to open a handoff; `order` is the verified order or None."""
    rule = turn.policy.rule(rule_name)
    return {
        "reason_code": rule.reason,
        "rule": rule_name,
        "tier": rule.tier,
        "queue": rule.team,
        "order_id": order.order_id if order else None,
        "customer": {
            "name": order.customer.name if order else "",
            "verified": order is not None,
            "contact": str(turn.slot("contact") or ""),  # the gateway masks it for display
        },
        "summary": {
            "what_happened": what_happened,
            "next": rule.next_step,
            "eta": turn.policy.tiers[rule.tier].team_reply,
        },
        "slots": turn.current_slots(),
        "actions_attempted": actions_attempted(turn.tracker.events),
    }


def actions_attempted(events: Iterable[Dict[str, Any]]) -> List[str]:
    """The actions run so far, each once, in the order first run; listening, session
    starts, plain utterances and form validation did nothing for the customer."""
    names = [e.get("name") or "" for e in events if e.get("event") == "action"]
    attempted = [name for name in names if name not in HOUSEKEEPING_ACTIONS
                 and not name.startswith(("utter_", "validate_"))]
    return list(dict.fromkeys(attempted))
