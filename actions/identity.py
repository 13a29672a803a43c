"""Who the customer is: what proves it, for how long, and how many wrong proofs a
conversation session, a sender and an order get.

A proof is an order number with the email address or phone number on that order, or,
on WhatsApp, the number WhatsApp itself proved (the gateway passes it as the
message's `proven_phone`). Emails compare case-insensitively after trimming; phone
numbers compare whole, as E.164, never by their last digits.

A proof is kept in two slots, `verified_contact` and `verified_at`; it holds for
`identity.verification_ttl_minutes` and never beyond the conversation session (slots
do not carry over into a new session). Only `prove` sets them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Callable, Optional

import phonenumbers

from actions.policy import Identity
from actions.store.types import ContactLog, Order

EMAIL_PATTERN = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# failed proofs in the contact log, keyed by order and by sender
PROOF_FAILED = "verification_failed"


def normalize_email(text: str) -> Optional[str]:
    found = EMAIL_PATTERN.search(text or "")
    return found.group(0).strip().lower() if found else None


def normalize_phone(text: str, region: str) -> Optional[str]:
    """The number in E.164 ('+14155550101'), or None when it is not a valid number
    (too short, no area code). Without a country code it is read in `region`."""
    try:
        number = phonenumbers.parse(text or "", region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_contact(text: Optional[str], region: str) -> Optional[str]:
    """An email (lower-cased) or a phone number (E.164), or None."""
    if not text or not text.strip():
        return None
    return normalize_email(text) or normalize_phone(text, region)


def belongs_to(order: Order, contact: Optional[str], region: str) -> bool:
    """Whether a normalised contact is the email or phone number on the order."""
    if not contact:
        return False
    customer = order.customer
    if "@" in contact:
        return customer.email.strip().lower() == contact
    return normalize_phone(customer.phone, region) == contact


def proof_holds(verified_at: Any, now: datetime, policy: Identity) -> bool:
    """Whether a proof made at `verified_at` (epoch seconds) still holds."""
    if not isinstance(verified_at, int | float):
        return False
    age = now.timestamp() - float(verified_at)
    return 0 <= age <= policy.verification_ttl_minutes * 60


class Proof(Enum):
    VERIFIED = "verified"
    WRONG = "wrong"
    # this sender has used up its tries: nothing was checked
    REFUSED = "refused"


@dataclass(frozen=True)
class ProofCheck:
    """Checks a proof for an order and keeps count of the wrong ones, per sender and
    per order, in the store's contact log (shared by every action-server process)."""

    contacts: ContactLog
    policy: Identity
    now: datetime

    def check(self, order: Optional[Order], contact: str, sender: str) -> Proof:
        """`order` is None when no order has the number given: a wrong proof like any
        other, so an answer never tells whether an order exists."""
        if self._failures(_sender_key(sender)) >= self.policy.attempts_per_sender:
            return Proof.REFUSED
        if order is not None and belongs_to(order, contact, self.policy.default_phone_region):
            return Proof.VERIFIED
        return Proof.WRONG

    def record_failure(self, order_id: str, sender: str) -> bool:
        """Count a wrong proof; True when the order is being guessed (past its limit)."""
        for key in (_order_key(order_id), _sender_key(sender)):
            self.contacts.record(key, PROOF_FAILED, sender)
        return self._failures(_order_key(order_id)) > self.policy.attempts_per_order

    def _failures(self, key: str) -> int:
        since = self.now - timedelta(hours=self.policy.failures_window_hours)
        return self.contacts.count_since(key, PROOF_FAILED, since, excluding_conversation="")


def _order_key(order_id: str) -> str:
    return f"order:{order_id}"


def _sender_key(sender: str) -> str:
    return f"sender:{sender}"


SlotReader = Callable[[str], Any]


def proven_contact(slot: SlotReader, now: datetime, policy: Identity) -> Optional[str]:
    """The contact this conversation proved, while the proof holds."""
    contact = slot("verified_contact")
    return contact if contact and proof_holds(slot("verified_at"), now, policy) else None
