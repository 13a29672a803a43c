"""The NLU component that forces escalation_trigger on the policy's phrases."""
from __future__ import annotations

from rasa.shared.nlu.training_data.message import Message

from actions.policy import load_policy
from components.escalation_triggers import EscalationTriggerClassifier


def classify(text: str, intent: str = "refund_status") -> Message:
    message = Message(data={"text": text, "intent": {"name": intent, "confidence": 0.9},
                            "intent_ranking": [{"name": intent, "confidence": 0.9}],
                            "entities": []})
    EscalationTriggerClassifier(load_policy()).process([message])
    return message


def test_trigger_phrase_overrides_the_intent_and_names_the_rule():
    message = classify("where is my refund? otherwise I do a chargeback")
    assert message.get("intent") == {"name": "escalation_trigger", "confidence": 1.0}
    assert message.get("intent_ranking")[1]["name"] == "refund_status"
    [entity] = message.get("entities")
    assert (entity["entity"], entity["value"]) == ("trigger_rule", "chargeback")


def test_ordinary_message_is_left_alone():
    message = classify("where is my refund?")
    assert message.get("intent")["name"] == "refund_status"
    assert message.get("entities") == []
