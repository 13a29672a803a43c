"""The order form: the customer proves who they are (actions/identity.py) before any
order detail is shown, then gives what the request needs (a new address, a photo)."""
from __future__ import annotations

import asyncio
import re
from typing import Any, Dict, List, Optional

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import FormValidationAction
from rasa_sdk.types import DomainDict

from actions.address import read_address
from actions.codes import redeem_code, send_code
from actions.conversation import Turn, TurnAction, shared_store
from actions.identity import Proof, ProofCheck, belongs_to, normalize_contact, proof_holds
from actions.store.types import Order, OrderStatus, normalize_order_id

URL_PATTERN = re.compile(r"https?://\S+")
NO_PHOTO_PATTERN = re.compile(
    r"\b(no|none|not|don'?t|can'?t|cannot|without|skip|threw|thrown)\b", re.IGNORECASE
)
def photo_from_message(tracker: Tracker, text: str) -> Optional[str]:
    """The URL of an image the customer sent (attachment or link), 'none' if they
    have none, or None if this message is neither."""
    metadata = tracker.latest_message.get("metadata") or {}
    for attachment in metadata.get("attachments") or []:
        if str(attachment.get("type", "")).startswith("image") and attachment.get("url"):
            return str(attachment["url"])
    link = URL_PATTERN.search(text or "")
    if link:
        return link.group(0)
    if tracker.latest_message.get("intent", {}).get("name") == "deny" or NO_PHOTO_PATTERN.search(
        text or ""
    ):
        return "none"
    return None


IDENTITY_SLOTS = ("order_id", "contact")
# A text that is only a number, as typed when asked for the order number: "1001", "#1001"
BARE_ORDER_NUMBER = re.compile(r"\s*(?:order\s*(?:number|no\.?)?\s*)?#?\s*(\d{4,8})\s*[.!]?\s*",
                               re.IGNORECASE)
# what the customer is told for each part of an address to fix (actions/address.py)
ADDRESS_PROBLEM_RESPONSES = {
    "country": "utter_invalid_address_country",
    "state": "utter_invalid_address_state",
    "city": "utter_invalid_address_city",
    "postal_code": "utter_invalid_address_postal_code",
    "street": "utter_invalid_address_street",
}
# texts that were not an order number before the bot stops asking and offers a person
ORDER_ID_TRIES = 2


def order_number(text: str, letter: str) -> Optional[str]:
    """The order number in the text: 'A1001' as typed, or '1001' read as the store's
    letter and those digits."""
    found = normalize_order_id(text)
    if found is None and (bare := BARE_ORDER_NUMBER.fullmatch(text or "")):
        found = f"{letter}{bare.group(1)}"
    return found


def extra_slots(request: Optional[str], order: Order) -> List[str]:
    if request == "change_address" and order.can_be_changed:
        return ["new_address"]
    if request in ("damaged_item", "wrong_item") and order.status is OrderStatus.DELIVERED:
        return ["photo"]
    return []


class ValidateOrderForm(FormValidationAction):
    def name(self) -> str:
        return "validate_order_form"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[Dict[str, Any]]:
        # the validators read the store, which blocks: the whole validation runs on a
        # worker thread (with a loop of its own) so the action server's loop never waits
        validation = super().run(dispatcher, tracker, domain)

        def validate() -> List[Dict[str, Any]]:
            shared_store().begin_turn()
            return asyncio.run(validation)

        return await asyncio.to_thread(validate)

    async def required_slots(
        self,
        domain_slots: List[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> List[str]:
        turn = Turn(dispatcher, tracker)
        if out_of_tries(turn) or gave_no_order_number(turn):
            return []
        order = turn.verified_order()
        if order is None and turn.slot("code_sent_to"):
            return ["one_time_code", *IDENTITY_SLOTS]
        if order is None:
            return list(IDENTITY_SLOTS)
        return list(IDENTITY_SLOTS) + extra_slots(tracker.get_slot("request"), order)

    def validate_order_id(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        turn = Turn(dispatcher, tracker)
        order_id = order_number(str(value or ""), turn.policy.identity.order_number_letter)
        if order_id is not None:
            return {"order_id": order_id, "order_id_misses": None}
        contact = normalize_contact(str(value or ""), turn.region)
        if contact is not None:  # no order number, but the email on the orders
            if not send_code(turn, contact):
                turn.set("order_id_misses", ORDER_ID_TRIES)  # a person looks it up
            return {"order_id": None, **slots_set(turn)}
        misses = (tracker.get_slot("order_id_misses") or 0) + 1
        if misses < ORDER_ID_TRIES:
            dispatcher.utter_message(response="utter_invalid_order_id")
        return {"order_id": None, "order_id_misses": misses}

    def validate_one_time_code(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        turn = Turn(dispatcher, tracker)
        contact = redeem_code(turn, str(value or ""))
        if contact is not None:
            remember_proof(turn, contact)
            turn.set("code_sent_to", None)
        elif not turn.slot("code_sent_to"):  # used up: a person looks the order up
            turn.set("order_id_misses", ORDER_ID_TRIES)
        return {"one_time_code": None, **slots_set(turn)}

    def validate_contact(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        contact = normalize_contact(str(value or ""), Turn(dispatcher, tracker).region)
        if contact is None:
            dispatcher.utter_message(response="utter_invalid_contact")
        return {"contact": contact}

    def validate_new_address(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        reading = read_address(str(value or ""), name="")
        if reading.address is None:
            dispatcher.utter_message(response=ADDRESS_PROBLEM_RESPONSES[reading.problem])
            return {"new_address": None}
        return {"new_address": str(value).strip()}

    def validate_photo(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        photo = photo_from_message(tracker, str(value or ""))
        if photo is None:
            dispatcher.utter_message(response="utter_invalid_photo")
        return {"photo": photo}

    async def get_validation_events(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[Dict[str, Any]]:
        events = await super().get_validation_events(dispatcher, tracker, domain)
        turn = Turn(dispatcher, tracker, events=list(events))
        pause = check_identity(turn)
        if pause:
            # someone is guessing this order's contact: each wrong guess costs time
            await asyncio.sleep(pause)
        return turn.finish()


def slots_set(turn: Turn) -> Dict[str, Any]:
    """The slots the turn set, as a form's validation returns them."""
    return {e["name"]: e["value"] for e in turn.events if e.get("event") == "slot"}


def out_of_tries(turn: Turn) -> bool:
    """This session used up its wrong proofs: the form stops and a person is offered."""
    failures = turn.slot("verification_failures") or 0
    return bool(failures >= turn.policy.identity.attempts_per_session)


def gave_no_order_number(turn: Turn) -> bool:
    """No order number after ORDER_ID_TRIES texts: the form stops, a person is offered."""
    return not turn.slot("order_id") and (turn.slot("order_id_misses") or 0) >= ORDER_ID_TRIES


def check_identity(turn: Turn) -> float:
    """Once an order number is known, prove that the customer is its buyer: by the
    number WhatsApp proved, else by the contact they gave. Returns the seconds to wait
    before answering (a wrong guess at an order someone is guessing at)."""
    forget_expired_proof(turn)
    order_id = turn.slot("order_id")
    if not order_id or turn.verified_order() is not None:
        return 0
    order = turn.store.orders.get_order(order_id)
    phone = turn.channel_phone()
    if order is not None and phone and belongs_to(order, phone, turn.region):
        remember_proof(turn, phone)
        return 0
    contact = turn.slot("contact")
    if not contact:
        return 0
    if contact == turn.proven_contact():
        # An order that isn't the proven customer's: ask for its own contact; no try used.
        turn.set("contact", None)
        return 0
    return _check_contact(turn, order_id, order, contact)


def _check_contact(turn: Turn, order_id: str, order: Optional[Order], contact: str) -> float:
    """A mismatch says nothing about whether the order exists."""
    identity = turn.policy.identity
    checks = ProofCheck(turn.store.contacts, identity, turn.now)
    proof = checks.check(order, contact, turn.conversation_id)
    if proof is Proof.VERIFIED:
        remember_proof(turn, contact)
        return 0
    turn.set("order_id", None)
    turn.set("contact", None)
    if proof is Proof.REFUSED:
        turn.set("verification_failures", identity.attempts_per_session)
        return 0
    guessed = checks.record_failure(order_id, turn.conversation_id)
    failures = identity.attempts_per_session if guessed else \
        (turn.slot("verification_failures") or 0) + 1
    turn.set("verification_failures", failures)
    if failures < identity.attempts_per_session:
        turn.say("utter_verification_failed")
    return identity.slowdown_seconds if guessed else 0


def remember_proof(turn: Turn, contact: str) -> None:
    turn.set("contact", contact)
    turn.set("verified_contact", contact)
    turn.set("verified_at", turn.now.timestamp())


def forget_expired_proof(turn: Turn) -> None:
    """A proof past its lifetime is dropped, with the contact it was made with, so the
    customer is asked again."""
    expired = turn.slot("verified_contact")
    if not expired or proof_holds(turn.slot("verified_at"), turn.now, turn.policy.identity):
        return
    turn.set("verified_contact", None)
    turn.set("verified_at", None)
    if turn.slot("contact") == expired:
        turn.set("contact", None)
    turn.say("utter_verification_expired")


class ActionAskOrderId(TurnAction):
    """Asks for the order number; to a customer whose contact is proven (WhatsApp's
    number, or an email proven with a code) it offers their recent orders as buttons."""

    def name(self) -> str:
        return "action_ask_order_id"

    def act(self, turn: Turn) -> None:
        contact = turn.channel_phone() or turn.proven_contact()
        orders = turn.store.orders.orders_for_contact(contact) if contact else []
        if not orders:
            turn.say("utter_ask_order_id")
            return
        turn.dispatcher.utter_message(response="utter_which_order", buttons=[
            {"title": order_label(order), "payload": f'/inform{{"order_id":"{order.order_id}"}}'}
            for order in orders[:turn.policy.identity.orders_listed]])


def order_label(order: Order) -> str:
    """'#A1001 Blender' or '#A1001 Blender +2'."""
    first = order.items[0].name if order.items else ""
    more = f" +{len(order.items) - 1}" if len(order.items) > 1 else ""
    return f"#{order.order_id} {first}{more}".strip()
