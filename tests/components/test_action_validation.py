"""Rasa's check of custom action answers, with the validator built once: the same
answers pass and fail, with the same error, as with Rasa's own check."""
from __future__ import annotations

from typing import Any, Dict

import pytest
from jsonschema import ValidationError
from rasa.core.actions.action import RemoteAction

import components  # noqa: F401  (installs the check, as Rasa's model loading does)
from components.action_validation import validate_action_result

ANSWERS = [
    {"events": [{"event": "slot", "name": "order_id", "value": "A1001"}],
     "responses": [{"response": "utter_greet"}, {"text": "hi", "buttons": []}]},
    {"events": [], "responses": []},
    {},
    {"events": "not a list", "responses": []},
    {"events": [{"no_event_key": 1}], "responses": []},
    {"events": [], "responses": "nope"},
    {"events": [{"event": 3}]},
]


def rasa_original(result: Dict[str, Any]) -> Any:
    from jsonschema import validate

    try:
        validate(result, RemoteAction.action_response_format_spec())
        return True
    except ValidationError as error:
        return (error.message, list(error.path))


def ours(result: Dict[str, Any]) -> Any:
    action = RemoteAction("action_anything", None)
    try:
        return action._validate_action_result(result)
    except ValidationError as error:
        message = error.message.split(". Failed to validate Action server response")[0]
        assert "custom-actions" in error.message
        return (message, list(error.path))


@pytest.mark.parametrize("answer", ANSWERS)
def test_the_same_answers_pass_and_fail_with_the_same_error(answer: Dict[str, Any]) -> None:
    assert ours(answer) == rasa_original(answer)


def test_rasa_uses_the_validator_built_once() -> None:
    assert RemoteAction._validate_action_result is validate_action_result
    assert sum(isinstance(ours(a), tuple) for a in ANSWERS) >= 3  # some do fail
