"""A message that asks for two things ("Cancel A1004. Also, what payment methods do you
take?") is handled one request at a time instead of losing one to the other.

Rasa gives a message one intent. Before the turn, the REST channel cuts the message at
sentence ends and joining words and parses each part with the loaded model. When two
parts are different requests the bot handles (HANDLERS, FAQ topics), each sure enough
(`several_requests.min_confidence` of policy/escalation.yml), the turn is the text up to
the second request, with an entity `next_request` holding the rest. The slot of that
name keeps it until the first request is done (Turn.pass_on_next_request); then the
gateway sends it to the bot as the customer's next words.

A message that, whole or in part, is an escalation trigger, a complaint or asks for a
person is left whole."""
from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

from actions.policy import FAQ_TOPICS, EscalationPolicy
from actions.requests import HANDLERS

NEXT_REQUEST = "next_request"
LATER_RESPONSE = "utter_next_request_later"
REQUESTS = frozenset([*HANDLERS, *FAQ_TOPICS])
# anywhere in the message, these leave it whole: the person who takes it reads all of it
FOR_A_PERSON = frozenset(["escalation_trigger", "human_handoff", "complaint", "payment_issue"])
# where one request may end and another begin
_BREAK = re.compile(r"(?<=[.?!;])\s+|,?\s+\b(?:and also|also|plus|and then|and)\b\s+", re.I)
_MIN_WORDS = 2

Parse = Callable[[str], Awaitable[Dict[str, Any]]]


def parts(text: str) -> List[Tuple[int, str]]:
    """The message's parts of two words or more, each with where it starts."""
    found, start = [], 0
    for match in [*_BREAK.finditer(text), None]:
        end = match.start() if match else len(text)
        part = text[start:end].strip().lstrip("/").strip()  # words, never intent syntax
        if len(part.split()) >= _MIN_WORDS:
            found.append((start + text[start:end].index(part), part))
        if match:
            start = match.end()
    return found


async def first_request(text: str, parse: Parse,
                        policy: EscalationPolicy) -> Optional[Dict[str, Any]]:
    """The parse of the message's first request, with the rest of the message as the
    `next_request` entity; None when the message asks for one thing (or is not text)."""
    pieces = parts(text)
    if len(pieces) < 2 or text.lstrip().startswith("/"):
        return None
    whole, *each = [await parse(piece) for piece in [text, *(piece for _, piece in pieces)]]
    if any(_intent(p) in FOR_A_PERSON for p in [whole, *each]):
        return None
    min_confidence = policy.several_requests.min_confidence
    found = [(start, request) for (start, _), p in zip(pieces, each, strict=True)
             if (request := _request(p, min_confidence)) is not None]
    second = next((start for start, request in found if request != found[0][1]), None)
    return None if second is None else await _up_to(text, second, parse)


def _intent(parsed: Dict[str, Any]) -> Optional[str]:
    return (parsed.get("intent") or {}).get("name")


def _request(parsed: Dict[str, Any], min_confidence: float) -> Optional[str]:
    name = _intent(parsed)
    confidence = float((parsed.get("intent") or {}).get("confidence") or 0)
    return name if name in REQUESTS and confidence >= min_confidence else None


async def _up_to(text: str, start: int, parse: Parse) -> Dict[str, Any]:
    parsed = await parse(text[:start].strip())
    later = text[start:].strip()
    parsed["text"] = text
    parsed["entities"] = [*parsed.get("entities", []),
                          {"entity": NEXT_REQUEST, "value": later, "start": start,
                           "end": len(text), "extractor": "several_requests"}]
    return parsed


def told_later(parsed: Optional[Dict[str, Any]], replies: List[Dict[str, Any]],
               responses: Dict[str, Any], recipient: str) -> List[Dict[str, Any]]:
    """The turn's replies, ending with the promise to come to the other request when the
    turn neither came to it (the first was done at once) nor handed over to a person."""
    later = next((e["value"] for e in (parsed or {}).get("entities", [])
                  if e.get("entity") == NEXT_REQUEST), None)
    customs = [r.get("custom") or {} for r in replies]
    if later is None or any(NEXT_REQUEST in c or "handoff" in c for c in customs):
        return replies
    text = responses[LATER_RESPONSE][0]["text"].format(request=later)
    return [*replies, {"recipient_id": recipient, "text": text}]
