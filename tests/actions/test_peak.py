"""Peak mode in the bot: a first request for a person about one of the templated
reasons (policy/peak.yml) gets the bot's own flow and a button to a person; asking
again, any other reason, tier 2 and 3, and no peak mode reach a person at once."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest

from actions.actions import ActionEscalate
from actions.policy import current_knowledge, current_peak_policy, current_policy

from .conftest import Outcome, make_tracker, run_action
from .test_actions import escalation

PEAK = {"peak": True}
PERSON = {"title": current_peak_policy().texts.still_need_person, "payload": "/human_handoff"}


def user(intent: str, text: str = "", metadata: Optional[Dict[str, Any]] = None) -> dict:
    return {"event": "user", "text": text, "metadata": metadata or {},
            "parse_data": {"intent": {"name": intent}, "text": text}}


def session(*steps: Any, carried: Optional[Dict[str, Any]] = None) -> List[dict]:
    """A conversation session as Rasa records it: carried-over slots are set before the
    first message; a step is an intent (a customer message) or an event."""
    slots = [{"event": "slot", "name": name, "value": value}
             for name, value in (carried or {}).items()]
    return [{"event": "action", "name": "action_session_start"}, {"event": "session_started"},
            *slots, {"event": "action", "name": "action_listen"},
            *(user(step) if isinstance(step, str) else step for step in steps)]


async def ask_for_person(history: List[dict], metadata: Optional[Dict[str, Any]] = None,
                         intent: str = "human_handoff", text: str = "I want a person",
                         slots: Optional[Dict[str, Any]] = None) -> Outcome:
    """Run action_escalate on the customer's `text` after `history`."""
    events = [*history, user(intent, text, metadata)]
    tracker = make_tracker(slots, intent=intent, text=text, events=events, metadata=metadata)
    return await run_action(ActionEscalate(), tracker)


DEFLECTED = {"event": "slot", "name": "peak_deflected", "value": True}


async def test_order_status_at_peak_offers_self_service_and_a_person(actions_store):
    outcome = await ask_for_person(session("order_status", "inform"), metadata=PEAK)
    peak = current_peak_policy()
    assert outcome.handoff is None
    assert not any(m.get("custom") for m in outcome.messages)
    assert outcome.texts == [peak.texts.busy, peak.texts.self_service]
    assert outcome.messages[-1]["buttons"] == [
        {"title": peak.self_service_buttons["order_status"], "payload": "/order_status"},
        PERSON,
    ]
    assert outcome.slot("peak_deflected") is True


async def test_asking_again_in_the_same_session_reaches_a_person(actions_store):
    first = await ask_for_person(session("order_status"), metadata=PEAK)
    assert first.handoff is None
    earlier = session("order_status", user("human_handoff", metadata=PEAK), DEFLECTED)
    again = await ask_for_person(earlier, metadata=PEAK, slots={"peak_deflected": True})
    assert again.responses == ["utter_escalated"]
    handoff = escalation(again)
    assert (handoff["rule"], handoff["tier"]) == ("customer_request", 1)


async def test_a_new_session_is_deflected_again(actions_store):
    """The slot carries over to the next session, but the deflection was in the last one."""
    earlier = [*session("order_status", user("human_handoff", metadata=PEAK), DEFLECTED),
               *session("refund_status", carried={"peak_deflected": True})]
    outcome = await ask_for_person(earlier, metadata=PEAK, slots={"peak_deflected": True})
    assert outcome.handoff is None
    assert outcome.messages[-1]["buttons"][0]["payload"] == "/refund_status"


async def test_faq_topic_at_peak_answers_it_with_a_person_button(actions_store):
    outcome = await ask_for_person(session("greet", "delivery_time", "thank_you"), metadata=PEAK)
    answer = current_knowledge().answer("delivery_time", current_policy())
    assert outcome.handoff is None
    assert outcome.texts == [current_peak_policy().texts.busy, answer]
    assert outcome.messages[-1]["buttons"] == [PERSON]
    assert outcome.slot("peak_deflected") is True


async def test_deflection_closes_an_open_question(actions_store):
    outcome = await ask_for_person(session("return_status"), metadata=PEAK,
                                   slots={"pending_offer": "cancel"})
    assert outcome.handoff is None and outcome.slot("pending_offer") is None


@pytest.mark.parametrize("earlier,metadata", [
    (["order_status"], {}),                       # peak mode off
    (["order_status"], {"peak": False}),
    ([], PEAK),                                   # nothing asked before
    (["greet", "inform"], PEAK),                  # no topic named
    (["order_status", "damaged_item"], PEAK),     # the topic now is not templated
    (["delivery_time", "invoice"], PEAK),         # an FAQ topic that is not templated
])
async def test_person_at_once_without_peak_or_a_templated_topic(actions_store, earlier,
                                                                metadata):
    outcome = await ask_for_person(session(*earlier), metadata=metadata)
    assert outcome.responses == ["utter_escalated"]
    assert escalation(outcome)["rule"] == "customer_request"
    assert outcome.slot("peak_deflected") is None


async def test_topic_from_an_earlier_session_does_not_count(actions_store):
    outcome = await ask_for_person([*session("order_status"), *session()], metadata=PEAK)
    assert escalation(outcome)["rule"] == "customer_request"


@pytest.mark.parametrize("intent,text,rule,tier", [
    ("escalation_trigger", "I will file a chargeback", "chargeback", 3),
    ("escalation_trigger", "my lawyer will call", "legal_threat", 3),
    ("payment_issue", "I was charged twice", "payment_problem", 2),
])
async def test_tier_2_and_3_reach_a_person_at_once_at_peak(actions_store, intent, text, rule,
                                                           tier):
    outcome = await ask_for_person(session("order_status"), intent=intent, text=text,
                                   metadata=PEAK)
    handoff = escalation(outcome)
    assert (handoff["rule"], handoff["tier"]) == (rule, tier)
    assert outcome.slot("peak_deflected") is None
