"""The Rasa custom actions. Each is thin: it builds a `Turn` and hands over to the
request handlers (actions/requests.py) or the escalation policy."""
from __future__ import annotations

from datetime import timedelta
from typing import Optional

from actions.conversation import Question, Turn, TurnAction, session_events, user_intent
from actions.guarded import Change, carry_out, propose
from actions.order_form import gave_no_order_number
from actions.policy import FAQ_TOPICS, current_knowledge, current_peak_policy, current_policy
from actions.requests import HANDLERS, choose_remedy, offer_remedies
from actions.store.types import Order

# Validate the policy files when the action server starts, not at the first customer.
current_policy()
current_knowledge()
current_peak_policy()


def latest_intent(turn: Turn) -> str:
    return str(turn.tracker.latest_message.get("intent", {}).get("name") or "")


class ActionResolveRequest(TurnAction):
    """Runs when the order form is done: the customer is verified, or used up this
    session's tries (which stay used up: the session offers a person from then on)."""

    completes_request = True

    def name(self) -> str:
        return "action_resolve_request"

    def act(self, turn: Turn) -> None:
        order = turn.verified_order()
        if order is None and gave_no_order_number(turn):
            turn.offer_person("identity_not_verified", "utter_no_order_number")
        elif order is None:
            turn.offer_person("identity_not_verified", "utter_verification_offer_human")
        else:
            request = turn.slot("request") or corrected_request(turn, order) or "order_status"
            turn.set("pending_offer", None)
            if not self._repeat_contact(turn, request, order):
                HANDLERS[request](turn, order)
        # the next request starts afresh; order, contact and verification carry over
        for slot in ("request", "new_address", "photo", "order_id_misses", "code_sent_to"):
            turn.set(slot, None)

    @staticmethod
    def _repeat_contact(turn: Turn, request: str, order: Order) -> bool:
        """Escalate when this customer wrote about the same issue within the window."""
        if request not in turn.policy.repeat_contact_issues:
            return False
        order_id = order.order_id
        customer, issue = turn.slot("verified_contact"), f"{request}:{order_id}"
        since = turn.now - timedelta(days=turn.policy.windows.repeat_contact_days)
        earlier = turn.store.contacts.count_since(customer, issue, since, turn.conversation_id)
        turn.store.contacts.record(customer, issue, turn.conversation_id)
        if earlier:
            turn.escalate("repeat_contact", order,
                          f"Customer wrote again about {request.replace('_', ' ')} on order "
                          f"{order_id}; {earlier} earlier conversation(s) in the last "
                          f"{turn.policy.windows.repeat_contact_days} days.")
        return earlier > 0


def corrected_request(turn: Turn, order: Order) -> str:
    """'Sorry, I meant A1005', in answer to a question about a change to another order:
    the request that led to the question, now for this order ('' if not a correction)."""
    question = turn.question()
    if (question is None or question.kind != "write" or question.order_id == order.order_id
            or not turn.answers(question)):
        return ""
    return question.request


class ActionConfirmOffer(TurnAction):
    """The customer said yes to the question the bot asked last. Only a yes given as the
    very next message counts (Turn.answers); a later one gets the question again."""

    completes_request = True

    def name(self) -> str:
        return "action_confirm_offer"

    def act(self, turn: Turn) -> None:
        question = turn.question()
        turn.set("pending_offer", None)
        if question is None:
            turn.say("utter_ok")
        elif not turn.answers(question) or question.kind == "remedy":
            ask_again(turn, question)  # a yes to a choice of remedies chooses none
        elif question.kind == "person":
            turn.escalate(question.rule, turn.verified_order(),
                          "Customer accepted the offer of a person.")
        else:
            carry_out(turn, question)


def ask_again(turn: Turn, question: Question) -> None:
    """A question the customer answered too late, or not with what it asks for: nothing
    is done; it is asked again, on the order's state now."""
    if question.kind == "person":
        turn.offer_person(question.rule, "utter_offer_person")
        return
    turn.say("utter_question_expired")
    order = turn.verified_order()
    change = Change.from_question(question)
    if order is None or order.order_id != question.order_id:
        return
    if question.kind == "remedy":
        offer_remedies(turn, order, question.problem)
    elif change is not None:
        propose(turn, change, order)


class ActionDeclineOffer(TurnAction):
    completes_request = True

    def name(self) -> str:
        return "action_decline_offer"

    def act(self, turn: Turn) -> None:
        question = turn.question()
        turn.set("pending_offer", None)
        if question is not None and question.change.get("kind") == "cancel":
            turn.say("utter_cancel_kept", order_id=question.order_id)
        elif question is not None and question.kind == "write":
            turn.say("utter_nothing_changed")
        else:
            turn.say("utter_anything_else")


class ActionChooseRemedy(TurnAction):
    completes_request = True

    def name(self) -> str:
        return "action_choose_remedy"

    def act(self, turn: Turn) -> None:
        question = turn.question()
        turn.set("pending_offer", None)
        order = turn.verified_order()
        if question is None or question.kind != "remedy" or order is None:
            turn.say("utter_ok")
        elif not turn.answers(question):
            ask_again(turn, question)
        else:
            choose_remedy(turn, order, question.problem, turn.slot("remedy"))


class ActionAnswerFaq(TurnAction):
    completes_request = True

    def name(self) -> str:
        return "action_answer_faq"

    def act(self, turn: Turn) -> None:
        topic = latest_intent(turn)
        if topic not in FAQ_TOPICS:
            turn.say("utter_rephrase")
            return
        turn.dispatcher.utter_message(text=faq_answer(turn, topic))


def faq_answer(turn: Turn, topic: str) -> str:
    return current_knowledge().answer(topic, turn.policy)


ESCALATION_CONTEXT = {
    "chargeback": "Customer mentioned a chargeback or payment dispute.",
    "safety_incident": "Customer reports that someone was hurt or a product is unsafe.",
    "legal_threat": "Customer mentioned legal steps.",
    "unclassified_trigger": "The bot read a dispute, legal or safety matter in the "
                            "customer's words, matching no phrase of the policy.",
    "stop_the_line_empty_box": "Customer says the parcel arrived empty.",
    "payment_problem": "Customer reports a payment problem.",
}


class ActionEscalate(TurnAction):
    """The customer asked for a person, or wrote a trigger phrase of the policy. In peak
    mode a first plain request about a templated reason gets the bot's own flow first."""

    def name(self) -> str:
        return "action_escalate"

    def act(self, turn: Turn) -> None:
        intent = latest_intent(turn)
        if intent == "human_handoff" and deflected_at_peak(turn):
            return
        rule = "customer_request"
        if intent == "escalation_trigger":
            # NLU alone recognised the matter: no phrase says which queue it is for
            rule = trigger_rule(turn) or "unclassified_trigger"
        elif intent == "payment_issue":
            rule = "payment_problem"
            turn.say("utter_payment_issue")
        context = ESCALATION_CONTEXT.get(rule, "Customer asked for a person.")
        turn.escalate(rule, turn.verified_order(), context)


# Intents that carry a conversation along without saying what it is about.
CONVERSATION_INTENTS = frozenset({
    "greet", "goodbye", "thank_you", "affirm", "deny", "bot_challenge", "inform",
    "choose_remedy", "nlu_fallback", "human_handoff",
})
PERSON_PAYLOAD = "/human_handoff"


def at_peak(turn: Turn) -> bool:
    """The gateway marks every message while peak mode is on."""
    return (turn.tracker.latest_message.get("metadata") or {}).get("peak") is True


def current_topic(turn: Turn) -> str:
    """What this session is about: the latest intent before this message that names a
    topic (greetings, yes/no, order details and the like don't)."""
    earlier = [e for e in session_events(turn.tracker) if e.get("event") == "user"][:-1]
    intents = (user_intent(event) for event in reversed(earlier))
    return next((intent for intent in intents if intent not in CONVERSATION_INTENTS), "")


def deflected_at_peak(turn: Turn) -> bool:
    """In peak mode, a first request for a person about one of the templated reasons
    gets the bot's own answer and a button to a person instead; True if it did."""
    peak, topic = current_peak_policy(), current_topic(turn)
    if (not at_peak(turn) or topic not in peak.templated_reasons
            or turn.session_slot("peak_deflected")):
        return False
    turn.set("peak_deflected", True)
    turn.set("pending_offer", None)  # the buttons are the open question now
    person = {"title": peak.texts.still_need_person, "payload": PERSON_PAYLOAD}
    turn.dispatcher.utter_message(text=peak.texts.busy)
    if topic in FAQ_TOPICS:
        turn.dispatcher.utter_message(text=faq_answer(turn, topic), buttons=[person])
    else:
        own = {"title": peak.self_service_buttons[topic], "payload": f"/{topic}"}
        turn.dispatcher.utter_message(text=peak.texts.self_service, buttons=[own, person])
    return True


def trigger_rule(turn: Turn) -> Optional[str]:
    for entity in turn.tracker.latest_message.get("entities") or []:
        if entity.get("entity") == "trigger_rule" and entity.get("value") in turn.policy.rules:
            return str(entity["value"])
    found = turn.policy.trigger(turn.tracker.latest_message.get("text") or "")
    return found.rule if found else None


class ActionHandleComplaint(TurnAction):
    def name(self) -> str:
        return "action_handle_complaint"

    def act(self, turn: Turn) -> None:
        rule = trigger_rule(turn)
        if rule is None:
            turn.say("utter_complaint_heard")
        turn.escalate(rule or "complaint", turn.verified_order(),
                      ESCALATION_CONTEXT.get(rule or "", "Customer made a complaint."))


class ActionFallback(TurnAction):
    """Ask to rephrase; after too many misunderstandings in a row, offer a person."""

    def name(self) -> str:
        return "action_fallback"

    def act(self, turn: Turn) -> None:
        misses = 0
        for event in reversed(turn.tracker.events):
            if event.get("event") != "user":
                continue
            if user_intent(event) != "nlu_fallback":
                break
            misses += 1
        if misses >= turn.policy.limits.fallbacks_before_human:
            turn.offer_person("bot_not_understanding", "utter_offer_human_after_fallback")
        else:
            turn.say("utter_rephrase")
