"""The one path every write that moves money or parcels takes: cancelling, changing the
delivery address, creating a return, refunding, giving store credit, sending a
replacement, asking a carrier to trace a parcel or opening a claim.

1. **Eligibility on fresh state.** `propose` reads the order afresh (never from the
   order cache: `StoreSystems.read_fresh`), as `carry_out` does, and asks the change
   whether it may be made (`Change.refusal`, by the rules of the policy); a change that
   may not is explained instead. A change the store's platform does not take from the
   bot (`StoreSystems.left_to_people`) is offered to a person, never asked about.
2. **An explicit yes.** The bot asks a question that says exactly what will happen
   (`Change.ask`), with Yes/No buttons. Only a yes given as the customer's very next
   message, within `writes.confirm_within_minutes`, carries it out (`Turn.answers`);
   any other turn withdraws the question.
3. **Once.** The idempotency key is made of the conversation, the question, the change
   and the order. A retried turn finds its key in the write log, or finds the change in
   the store (`Change.find`), and never writes twice.
4. **Read back.** After the write the store is read again; the customer is told what
   the store shows, and only that.
5. **Audit.** Every attempt is kept in the write log (conversation, change, the order
   before, what the store showed after, the store's reference); agents see it with the
   handoff, and `bot writes` prints it.
6. **Stop the line.** An order a stop-the-line rule put on hold (Turn.escalate) gets
   no write until a person resolves its handoff; the customer is told so.
7. **Honest failures.** A refusal by the store is explained from the order's fresh
   state (or plainly, with a person offered); a store that does not answer, or a change
   that does not show on reading back, goes to a person (`write_unconfirmed`). Never
   "the assistant is unavailable".
"""
from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Sequence, Type

from actions.conversation import Question, Turn, money
from actions.store.types import Order, StoreError, StoreUnavailable, WriteRecord

log = logging.getLogger("actions.guarded")

# What a change found in the store after it was made: its reference and facts to tell.
Found = Dict[str, str]
Explain = Callable[[], None]
# the changes people make by hand where the platform does not take them from the bot,
# as the customer hears them (utter_made_by_people's {what})
MADE_BY_HAND = {"cancel": "cancelling an order", "change_address": "changing the address",
                "return": "setting up a return", "refund": "refunding",
                "store_credit": "giving store credit", "replacement": "sending a replacement",
                "claim": "opening a claim with the carrier"}


class Change(ABC):
    """A write on one order. Subclasses name their `kind` and are registered by it."""

    kind: ClassVar[str]
    registry: ClassVar[Dict[str, Type[Change]]] = {}

    def __init__(self, order_id: str, **params: str) -> None:
        self.order_id = order_id
        self.params = dict(params)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:  # a concrete change, not a family of them
            Change.registry[cls.kind] = cls

    @classmethod
    def from_question(cls, question: Question) -> Optional[Change]:
        params = dict(question.change)
        change_class = cls.registry.get(str(params.pop("kind", "")))
        return change_class(question.order_id, **params) if change_class else None

    @property
    def write_kind(self) -> str:
        """Which of the store's kinds of write this is (types.WRITE_KINDS)."""
        return self.kind

    @property
    def made_by_hand(self) -> str:
        """The change as the customer hears that people make it."""
        return MADE_BY_HAND[self.write_kind]

    @abstractmethod
    def refusal(self, turn: Turn, order: Order) -> Optional[Explain]:
        """None when the change may be made to the order as it is now; else what tells
        the customer why not."""

    @abstractmethod
    def ask(self, turn: Turn, order: Order) -> None:
        """Ask for the yes, saying exactly what will happen (`turn.ask("write", …)` with
        `self.question_fields()`)."""

    @abstractmethod
    def apply(self, turn: Turn, order: Order, key: str) -> None:
        """Make the change in the store (may raise StoreError or StoreUnavailable)."""

    @abstractmethod
    def find(self, turn: Turn, key: str) -> Optional[Found]:
        """Read the store: the change's reference and facts once it is there, else None."""

    @abstractmethod
    def tell(self, turn: Turn, order: Order, found: Mapping[str, str]) -> None:
        """Tell the customer what the store shows."""

    def question_fields(self) -> Dict[str, Any]:
        return {"order_id": self.order_id, "change": {"kind": self.kind, **self.params}}


def propose(turn: Turn, change: Change, order: Order, intro: str = "", **facts: Any) -> None:
    """Explain why the change cannot be made, or ask for the yes (after `intro`): on
    the order as the store has it now, never as an earlier turn kept it
    (actions/store/cache.py)."""
    turn.store.read_fresh()
    order = turn.store.orders.get_order(order.order_id) or order
    if on_hold(turn, order):
        return
    refusal = change.refusal(turn, order)
    if refusal is not None:
        refusal()
        return
    if intro:  # why it comes to this, also where people make the change
        turn.say(intro, order_id=order.order_id, **facts)
    if change.write_kind in turn.store.left_to_people:
        log.info("%s on order %s is made by people on this platform", change.write_kind,
                 order.order_id)
        offer_people(turn, [change.made_by_hand])
        return
    change.ask(turn, order)


def offer_people(turn: Turn, made_by_hand: Sequence[str]) -> None:
    """Say that people make these changes here (nothing was changed), and offer one."""
    what = " or ".join(made_by_hand)
    turn.say("utter_made_by_people", what=what[:1].upper() + what[1:])
    turn.offer_person("made_by_people", "utter_offer_person")


def carry_out(turn: Turn, question: Question) -> None:
    """The customer said yes, in time, to this write: make it once and tell the truth."""
    change = Change.from_question(question)
    # eligibility, the write and its read-back on the order as the store has it now
    turn.store.read_fresh()
    order = turn.verified_order()
    if change is None or order is None or order.order_id != change.order_id:
        turn.say("utter_offer_expired")  # the proof of identity ran out meanwhile
        return
    key = idempotency_key(turn.conversation_id, question)
    earlier = turn.store.writes.get(key)
    if (earlier is None or earlier.status == "started") and on_hold(turn, order):
        return
    if earlier is not None and earlier.status == "done":
        change.tell(turn, order, earlier.after)  # a retried turn: already made
    elif earlier is not None and earlier.status == "refused":
        _refused(turn, change, order, earlier.error)
    elif earlier is not None and earlier.status == "unconfirmed":
        _unconfirmed(turn, change, order, earlier.error)
    else:  # new, or a turn that stopped half-way: the store tells whether it was made
        _make(turn, change, order, key, first_try=earlier is None)


def on_hold(turn: Turn, order: Order) -> bool:
    """A stop-the-line rule paused the order's writes: the customer is told, and waits
    for the person reviewing it."""
    hold = turn.store.writes.hold_on(order.order_id)
    if hold is not None:
        turn.say("utter_order_on_hold", order_id=order.order_id)
    return hold is not None


def _make(turn: Turn, change: Change, order: Order, key: str, first_try: bool) -> None:
    writes = turn.store.writes
    if first_try:
        writes.claim(WriteRecord(key=key, conversation_id=turn.conversation_id,
                                 kind=change.kind, order_id=order.order_id,
                                 params=change.params, status="started",
                                 before=order_facts(order), created_at=turn.now))
    # a turn that stopped half-way may have made it: the store says
    found = None if first_try else change.find(turn, key)
    if found is None:
        refusal = change.refusal(turn, order)
        if refusal is not None:
            writes.finish(key, "refused", {}, error="not eligible when confirmed")
            refusal()
            return
        try:
            change.apply(turn, order, key)
        except StoreError as error:
            writes.finish(key, "refused", {}, error=str(error))
            _refused(turn, change, order, str(error))
            return
        except StoreUnavailable as error:
            writes.finish(key, "unconfirmed", {}, error=f"store unavailable: {error}")
            _unconfirmed(turn, change, order, str(error))
            return
        found = change.find(turn, key)
        if found is None:
            writes.finish(key, "unconfirmed", {}, error="not found on reading back")
            _unconfirmed(turn, change, order, "not found on reading back")
            return
    writes.finish(key, "done", found, reference=found.get("reference", ""))
    change.tell(turn, order, found)


def _refused(turn: Turn, change: Change, order: Order, reason: str) -> None:
    """The store said no: explain from the order's state now, else plainly."""
    log.info("the store refused %s on order %s: %s", change.kind, order.order_id, reason)
    fresh = turn.store.orders.get_order(order.order_id) or order
    refusal = change.refusal(turn, fresh)
    if refusal is not None:
        refusal()
        return
    turn.say("utter_store_refused")
    turn.offer_person("store_refused", "utter_offer_human")


def _unconfirmed(turn: Turn, change: Change, order: Order, reason: str) -> None:
    """Neither a yes nor a no from the store: a person finds out, the customer is told."""
    log.warning("%s on order %s unconfirmed: %s", change.kind, order.order_id, reason)
    turn.say("utter_write_unconfirmed", order_id=order.order_id)
    turn.escalate("write_unconfirmed", order,
                  f"The customer confirmed '{change.kind}' on order {order.order_id} "
                  f"({json.dumps(change.params, sort_keys=True)}); the store did not confirm "
                  f"it ({reason}). Check the store before answering.")


def idempotency_key(conversation_id: str, question: Question) -> str:
    """The same for every retry of one answer to one question, different otherwise."""
    material = json.dumps([conversation_id, question.turn, question.order_id,
                           question.change], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def order_facts(order: Order) -> Dict[str, str]:
    """The order as the write log keeps it from before a write."""
    return {"status": order.status.value, "total": money(order.total),
            "currency": order.currency, "payment_method": order.payment_method,
            "shipping_address": order.shipping_address.one_line()}
