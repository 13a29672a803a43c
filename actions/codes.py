"""A way in without the order number: the customer gives the email or phone number on
their orders, the store sends a one-time code there (actions/notify.py: an email, or a
text message from the store's own number), and typing it in the chat proves the
customer owns that contact. The bot then lists their orders to pick from.

The bot answers the same whether or not the contact has orders, and whether or not the
message could be sent, so nobody learns who shops here. Codes are kept hashed (store
table one_time_codes); a code works once, for `identity.code_valid_minutes`, with
`identity.code_wrong_tries` tries; a contact is sent at most
`identity.codes_per_email_per_hour` codes, and a conversation session asks for at most
`identity.codes_per_session`."""
from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import timedelta
from functools import lru_cache
from typing import Optional

from actions.conversation import Turn
from actions.notify import Notifier, NotSent, is_phone, notifier_from_env

CODE_DIGITS = 6
CODE_SENT = "code_sent"  # the contact log's issue for codes sent to an email or phone

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def shared_notifier() -> Notifier:
    return notifier_from_env()


def code_hash(conversation_id: str, code: str) -> str:
    return hashlib.sha256(f"{conversation_id}:{code}".encode()).hexdigest()


def send_code(turn: Turn, contact: str, notifier: Optional[Notifier] = None) -> bool:
    """Send a code to the email or phone number if it has orders, and say so as if it
    had. False when no more codes may be sent (then a person is the way on)."""
    notifier = notifier or shared_notifier()
    identity = turn.policy.identity
    if not notifier.reaches(contact):
        turn.say("utter_code_email_only")
        return True
    sent = (turn.slot("codes_sent") or 0) + 1
    turn.set("codes_sent", sent)
    hour_ago = turn.now - timedelta(hours=1)
    recent = turn.store.contacts.count_since(contact, CODE_SENT, hour_ago, "")
    if sent > identity.codes_per_session or recent >= identity.codes_per_email_per_hour:
        turn.say("utter_code_limit")
        return False
    turn.store.contacts.record(contact, CODE_SENT, turn.conversation_id)
    turn.set("code_sent_to", contact)
    minutes = f"{identity.code_valid_minutes:g}"
    turn.say("utter_code_texted" if is_phone(contact) else "utter_code_sent", minutes=minutes)
    if turn.store.orders.orders_for_contact(contact):
        code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
        turn.store.codes.issue(turn.conversation_id, contact,
                               code_hash(turn.conversation_id, code))
        try:
            notifier.send(contact, identity.code_subject,
                          identity.code_text.format(code=code, minutes=minutes))
        except NotSent as error:
            # Answered alike: after the wrong tries, a person is offered as for any code.
            log.warning("a one-time code was not sent (%s)", error)
    return True


def redeem_code(turn: Turn, typed: str) -> Optional[str]:
    """The email a typed code proves, or None (the customer is told why)."""
    identity = turn.policy.identity
    digits = "".join(ch for ch in typed if ch.isdigit())
    since = turn.now - timedelta(minutes=identity.code_valid_minutes)
    check = turn.store.codes.redeem(turn.conversation_id, code_hash(turn.conversation_id, digits),
                                    since, identity.code_wrong_tries)
    if check.contact is None:
        turn.say("utter_code_wrong" if check.live else "utter_code_used_up")
    if not check.live:
        turn.set("code_sent_to", None)
    return check.contact
