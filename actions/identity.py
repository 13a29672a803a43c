"""The order form: the customer proves who they are before any order detail is
shown, then gives what the request needs (a new address, a photo)."""
from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Dict, List, Optional

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import FormValidationAction
from rasa_sdk.types import DomainDict

from actions.conversation import Turn, contact_matches, normalize_contact
from actions.store.types import Address, Order, OrderStatus, normalize_order_id

URL_PATTERN = re.compile(r"https?://\S+")
NO_PHOTO_PATTERN = re.compile(
    r"\b(no|none|not|don'?t|can'?t|cannot|without|skip|threw|thrown)\b", re.IGNORECASE
)
POSTAL_CODE_PATTERN = re.compile(r"\b(\d{5}(?:-\d{4})?|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}|\d{4,6})\b",
                                 re.IGNORECASE)


def parse_address(text: str, name: str) -> Optional[Address]:
    """'12 Oak Street, Springfield, 62704[, US]' -> Address, or None when a part is missing."""
    parts = [p.strip() for p in re.split(r"[,\n]", text or "") if p.strip()]
    street = parts[0] if parts else ""
    if len(parts) < 2 or not re.search(r"\d", street) or not re.search(r"[A-Za-z]{2,}", street):
        return None
    postal = POSTAL_CODE_PATTERN.search(" ".join(parts[1:]))
    if postal is None:
        return None
    rest = [p.replace(postal.group(0), "").strip() for p in parts[1:]]
    rest = [p for p in rest if p]
    if not rest or not re.search(r"[A-Za-z]{2,}", rest[0]):
        return None
    country = rest[1] if len(rest) > 1 else "US"
    return Address(name=name, line1=parts[0], city=rest[0], postal_code=postal.group(0).upper(),
                   country=country)


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


def extra_slots(request: Optional[str], order: Order) -> List[str]:
    if request == "change_address" and order.can_be_changed:
        return ["new_address"]
    if request in ("damaged_item", "wrong_item") and order.status is OrderStatus.DELIVERED:
        return ["photo"]
    return []


class ValidateOrderForm(FormValidationAction):
    def name(self) -> str:
        return "validate_order_form"

    async def required_slots(
        self,
        domain_slots: List[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> List[str]:
        turn = Turn(dispatcher, tracker)
        failures = tracker.get_slot("verification_failures") or 0
        if failures >= turn.policy.limits.verification_attempts:
            return []
        order = turn.verified_order()
        if order is None:
            return list(IDENTITY_SLOTS)
        return list(IDENTITY_SLOTS) + extra_slots(tracker.get_slot("request"), order)

    def validate_order_id(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        order_id = normalize_order_id(str(value or ""))
        if order_id is None:
            dispatcher.utter_message(response="utter_invalid_order_id")
        return {"order_id": order_id}

    def validate_contact(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        contact = normalize_contact(str(value or ""))
        if contact is None:
            dispatcher.utter_message(response="utter_invalid_contact")
        return {"contact": contact}

    def validate_new_address(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        if parse_address(str(value or ""), name="") is None:
            dispatcher.utter_message(response="utter_invalid_address")
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
        return self._check_identity(turn)

    @staticmethod
    def _check_identity(turn: Turn) -> List[Dict[str, Any]]:
        """Once both an order id and a contact are known, they must belong together.

        A mismatch says nothing about whether the order exists."""
        order_id, contact = turn.slot("order_id"), turn.slot("contact")
        if not order_id or not contact:
            return turn.finish()
        if _guessed_too_often(turn, order_id):
            # as if this conversation used up its tries: the form stops, a person is offered
            turn.set("verification_failures", turn.policy.limits.verification_attempts)
            turn.set("order_id", None)
            turn.set("contact", None)
            return turn.finish()
        order = turn.store.orders.get_order(order_id)
        if order is not None and contact_matches(order, contact):
            turn.set("verified_contact", normalize_contact(contact))
            return turn.finish()
        if normalize_contact(contact) == turn.slot("verified_contact"):
            # A new order that isn't the verified customer's: ask for its own contact.
            turn.set("contact", None)
            return turn.finish()
        failures = (turn.slot("verification_failures") or 0) + 1
        turn.store.contacts.record(_failures_key(order_id), VERIFICATION_FAILED,
                                   turn.conversation_id)
        turn.set("verification_failures", failures)
        turn.set("order_id", None)
        turn.set("contact", None)
        if failures < turn.policy.limits.verification_attempts:
            turn.say("utter_verification_failed")
        return turn.finish()


# failed identity checks are kept in the contact log, keyed by order
VERIFICATION_FAILED = "verification_failed"


def _failures_key(order_id: str) -> str:
    return f"order:{order_id}"


def _guessed_too_often(turn: Turn, order_id: str) -> bool:
    """Wrong contacts for this order from any conversation within the window reach
    the limit (an order that does not exist is counted the same way)."""
    since = turn.now - timedelta(days=turn.policy.windows.verification_failures_days)
    failures = turn.store.contacts.count_since(_failures_key(order_id), VERIFICATION_FAILED,
                                               since, excluding_conversation="")
    return failures >= turn.policy.limits.order_verification_failures
