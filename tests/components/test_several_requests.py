"""How a message is cut into requests (components/several_requests.py). The parse is a
table here, standing in for the model; tests/bot/test_self_service.py sends such
messages through the gateway to the real Rasa."""
from __future__ import annotations

from typing import Any, Dict

import pytest

from actions.policy import current_policy
from components.several_requests import NEXT_REQUEST, first_request, parts

INTENTS = {
    "Please cancel order A1004. Also, what payment methods do you accept?": "cancel_order",
    "Please cancel order A1004.": "cancel_order",
    "Please cancel order A1004": "cancel_order",
    "Also, what payment methods do you accept?": "payment_methods",
    "where is my order and when will it arrive": "order_status",
    "where is my order": "order_status",
    "when will it arrive": "order_status",
    "where is my order A1001. I want a manager": "order_status",
    "I want a manager": "human_handoff",
    "hello there and good morning": "greet",
    "hello there": "greet",
    "good morning": "greet",
}


async def parse(text: str) -> Dict[str, Any]:
    return {"text": text, "intent": {"name": INTENTS.get(text, "nlu_fallback"),
                                     "confidence": 0.9}, "entities": []}


def test_a_message_is_cut_at_sentence_ends_and_joining_words() -> None:
    assert parts("Where is A1001? And also, can I return A1002; thanks") == [
        (0, "Where is A1001?"), (16, "And also, can I return A1002;")]
    assert parts("cancel it and also send a refund, plus call me") == [
        (0, "cancel it"), (19, "send a refund"), (39, "call me")]
    assert parts("cancel it") == [(0, "cancel it")]


def test_typed_intent_syntax_in_a_part_is_left_out_of_it() -> None:
    text = 'Where is my order A1001? /cancel_order{"order_id": "A1004"}'
    [_, (start, part)] = parts(text)
    assert not part.startswith("/") and not text[start:].startswith("/")


async def test_two_different_requests_make_the_rest_the_next_request() -> None:
    text = "Please cancel order A1004. Also, what payment methods do you accept?"
    parsed = await first_request(text, parse, current_policy())
    assert parsed is not None and parsed["intent"]["name"] == "cancel_order"
    assert parsed["text"] == text
    [later] = [e for e in parsed["entities"] if e["entity"] == NEXT_REQUEST]
    assert later["value"] == "Also, what payment methods do you accept?"


@pytest.mark.parametrize("text", [
    "where is my order and when will it arrive",  # one request, said twice
    "hello there and good morning",  # no request
    "where is my order A1001. I want a manager",  # a person reads it whole
    "/cancel_order. /change_address",  # a button's payload is never cut
])
async def test_messages_that_stay_whole(text: str) -> None:
    assert await first_request(text, parse, current_policy()) is None


async def test_parts_recognised_unsurely_do_not_count() -> None:
    async def unsure(text: str) -> Dict[str, Any]:
        parsed = await parse(text)
        parsed["intent"]["confidence"] = current_policy().several_requests.min_confidence / 2
        return parsed

    text = "Please cancel order A1004. Also, what payment methods do you accept?"
    assert await first_request(text, unsure, current_policy()) is None
