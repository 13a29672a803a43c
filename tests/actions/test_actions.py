"""The custom actions against the real store, one conversation step at a time."""
from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from typing import Any, Dict, Optional

import pytest
import sqlalchemy as sa

from actions.actions import (
    ActionChooseRemedy,
    ActionConfirmOffer,
    ActionEscalate,
    ActionFallback,
    ActionHandleComplaint,
    ActionResolveRequest,
)
from actions.address import PROBLEMS, describe, read_address
from actions.conversation import Question
from actions.order_form import ADDRESS_PROBLEM_RESPONSES, ActionAskOrderId, ValidateOrderForm
from actions.policy import current_policy
from actions.store.sql import Store
from actions.store.types import OrderStatus, StoreUnavailable

from .conftest import DOMAIN, Outcome, make_tracker, run_action

EMAILS = {
    "A1001": "buyer1@example.com", "A1002": "buyer1@example.com", "A1003": "buyer2@example.com",
    "A1004": "buyer3@example.com", "A1005": "buyer3@example.com", "A1006": "buyer4@example.com",
    "A1007": "buyer4@example.com", "A1008": "buyer5@example.com", "A1009": "buyer5@example.com",
    "A1010": "buyer2@example.com", "A1011": "buyer6@example.com", "A1012": "buyer7@example.com",
    "A1013": "buyer7@example.com", "A1014": "buyer7@example.com", "A1015": "buyer8@example.com",
    "A1016": "buyer8@example.com",
}


def proven(order_id: str, contact: Optional[str] = None, ago: float = 0) -> Dict[str, Any]:
    """The slots of a conversation that proved `contact` (the order's email) `ago`
    seconds ago and asks about `order_id` (slots injected: the proof itself is tested
    through the form below and end to end in tests/bot/test_identity.py)."""
    contact = contact or EMAILS[order_id]
    return {"order_id": order_id, "contact": contact, "verified_contact": contact,
            "verified_at": time.time() - ago}


async def resolve(request: str, order_id: str, sender: str = "customer-1",
                  **slots: Any) -> Outcome:
    tracker = make_tracker({**proven(order_id), "request": request, **slots}, sender=sender)
    return await run_action(ActionResolveRequest(), tracker)


def user_turns(count: int) -> list:
    return [{"event": "user", "text": "", "parse_data": {}} for _ in range(count)]


async def answer(asked: Outcome, order_id: str, action: Any = None, intent: str = "affirm",
                 later: int = 0, **slots: Any) -> Outcome:
    """The customer's answer to the question `asked` ended with, as their next message
    (or `later` messages after that)."""
    question = Question.decode(asked.slot("pending_offer"))
    assert question is not None, "no question was asked"
    tracker = make_tracker({**proven(order_id), "pending_offer": question.encode(), **slots},
                           intent=intent, events=user_turns(question.turn + 1 + later))
    return await run_action(action or ActionConfirmOffer(), tracker)


def asked(outcome: Outcome) -> Question:
    question = Question.decode(outcome.slot("pending_offer"))
    assert question is not None
    return question


def escalation(outcome: Outcome) -> Dict[str, Any]:
    """The handoff payload, checked to be the last message, sent once, as JSON, with no
    handoff reference told to the customer (the gateway tells it)."""
    payload = outcome.handoff
    assert payload is not None
    assert outcome.messages[-1]["custom"] == {"handoff": payload}
    assert len(outcome.messages) == len(outcome.customer_messages) + 1
    assert json.loads(json.dumps(payload)) == payload
    escalated = [text for message, text in zip(outcome.customer_messages, outcome.texts,
                                               strict=True)
                 if (message["response"] or "").startswith("utter_escalated")]
    assert escalated and not any("reference" in text.lower() for text in escalated)
    assert not any(re.search(r"\bH-\d|handoff", text, re.IGNORECASE) for text in outcome.texts)
    assert not any("handoff_id" in message for message in outcome.messages)
    return payload


# --- identity -------------------------------------------------------------------------------


async def validate(slots: Dict[str, Any], new: Dict[str, Any]) -> Outcome:
    events = [{"event": "user", "text": "", "parse_data": {}}] + [
        {"event": "slot", "name": name, "value": value} for name, value in new.items()
    ]
    tracker = make_tracker({**slots, **new}, intent="inform", events=events)
    return await run_action(ValidateOrderForm(), tracker)


async def test_matching_contact_verifies_and_asks_nothing_more(actions_store):
    outcome = await validate({"order_id": "A1001", "request": "order_status"},
                             {"contact": "  BUYER1@example.com "})
    assert outcome.slot("verified_contact") == "buyer1@example.com"
    assert time.time() - outcome.slot("verified_at") < 5
    assert outcome.slot("requested_slot") is None
    assert outcome.messages == []


@pytest.mark.parametrize("phone", ["+1 (415) 555-0101", "415 555 0101", "+14155550101"])
async def test_the_whole_phone_number_on_the_order_verifies(actions_store, phone):
    outcome = await validate({"order_id": "a 1001"}, {"contact": phone})
    assert outcome.slot("verified_contact") == "+14155550101"


@pytest.mark.parametrize("phone", ["5550101", "555-0101", "0101"])
async def test_the_last_digits_of_a_phone_number_are_no_proof(actions_store, phone):
    outcome = await validate({"order_id": "A1001"}, {"contact": phone})
    assert outcome.slot("verified_contact") is None
    assert outcome.responses == ["utter_invalid_contact"]


async def test_another_number_with_the_same_last_digits_is_no_proof(actions_store):
    outcome = await validate({"order_id": "A1001"}, {"contact": "+44 20 4155 50101"})
    assert outcome.slot("verified_contact") is None


async def test_mismatch_reveals_nothing_about_the_order(actions_store):
    wrong_email = await validate({"order_id": "A1001"}, {"contact": "buyer2@example.com"})
    no_such_order = await validate({"order_id": "A9999"}, {"contact": "buyer2@example.com"})
    assert wrong_email.messages == no_such_order.messages
    assert wrong_email.responses == ["utter_verification_failed"]
    for outcome in (wrong_email, no_such_order):
        assert outcome.slot("order_id") is None and outcome.slot("contact") is None
        assert outcome.slot("verification_failures") == 1
        assert outcome.slot("verified_contact") is None


async def test_third_failure_ends_the_form_and_offers_a_person(actions_store):
    outcome = await validate({"order_id": "A1001", "verification_failures": 2},
                             {"contact": "someone@example.com"})
    assert outcome.slot("verification_failures") == 3
    assert outcome.slot("requested_slot") is None  # the form stops asking
    resolved = await run_action(ActionResolveRequest(), make_tracker(
        {"verification_failures": 3, "request": "order_status"}))
    assert resolved.responses == ["utter_verification_offer_human"]
    assert (asked(resolved).kind, asked(resolved).rule) == ("person", "identity_not_verified")
    assert resolved.slot("verification_failures") is None  # the session stays out of tries
    escalated = await run_action(ActionConfirmOffer(), make_tracker(
        {"pending_offer": resolved.slot("pending_offer")}, intent="affirm",
        events=user_turns(2)))
    assert escalated.responses == ["utter_escalated"]
    assert escalation(escalated)["reason_code"] == "identity_unverified"


async def validate_as(sender: str, slots: Dict[str, Any], new: Dict[str, Any]) -> Outcome:
    events = [{"event": "user", "text": "", "parse_data": {}}] + [
        {"event": "slot", "name": name, "value": value} for name, value in new.items()]
    return await run_action(ValidateOrderForm(), make_tracker(
        {**slots, **new}, intent="inform", events=events, sender=sender))


async def test_guesses_at_an_order_cost_guessers_their_tries_but_never_lock_out_its_buyer(
        actions_store):
    identity = current_policy().identity
    for guess in range(identity.attempts_per_order):
        wrong = await validate_as(f"guesser-{guess}", {"order_id": "A1001"},
                                  {"contact": f"guess{guess}@example.com"})
        assert wrong.slot("verification_failures") == 1
    # past the order's limit, one wrong guess ends a new conversation's tries at once,
    # and is answered only after the slowdown
    started = time.monotonic()
    guessed = await validate_as("guesser-late", {"order_id": "A1001"},
                                {"contact": "late@example.com"})
    assert time.monotonic() - started >= identity.slowdown_seconds
    assert guessed.slot("verification_failures") == identity.attempts_per_session
    assert guessed.messages == []  # no "try again": a person is offered next
    # the buyer, from a conversation of their own, still proves it at once
    started = time.monotonic()
    owner = await validate_as("owner", {"order_id": "A1001"}, {"contact": "buyer1@example.com"})
    assert owner.slot("verified_contact") == "buyer1@example.com"
    assert time.monotonic() - started < identity.slowdown_seconds


async def test_a_sender_past_its_limit_has_nothing_checked(actions_store):
    identity = current_policy().identity
    for guess in range(identity.attempts_per_sender):
        await validate_as("prober", {"order_id": f"A10{10 + guess}"},
                          {"contact": f"probe{guess}@example.com"})
    refused = await validate_as("prober", {"order_id": "A1001"},
                                {"contact": "buyer1@example.com"})
    assert refused.slot("verified_contact") is None
    assert refused.slot("verification_failures") == identity.attempts_per_session
    # the order is not locked for anyone else
    owner = await validate_as("owner", {"order_id": "A1001"}, {"contact": "buyer1@example.com"})
    assert owner.slot("verified_contact") == "buyer1@example.com"


async def test_another_customers_order_asks_for_its_own_contact(actions_store):
    outcome = await validate(proven("A1001"), {"order_id": "A1003"})
    assert outcome.slot("contact") is None
    assert outcome.slot("verification_failures") is None  # not a failed try
    assert outcome.messages == []


async def test_a_proof_expires_and_the_customer_is_asked_again(actions_store):
    ttl = current_policy().identity.verification_ttl_minutes * 60
    fresh = await run_action(ActionResolveRequest(), make_tracker(
        {**proven("A1001", ago=ttl - 60), "request": "order_status"}))
    assert fresh.responses == ["utter_status_in_transit"]
    stale = {**proven("A1001", ago=ttl + 60), "request": "order_status"}
    shown = await run_action(ActionResolveRequest(), make_tracker(stale))
    assert "1Z999AA10123456784" not in str(shown.messages)
    asked = await validate(stale, {})
    assert asked.slot("verified_contact") is None and asked.slot("contact") is None
    assert asked.responses == ["utter_verification_expired"]
    assert asked.slot("requested_slot") == "contact"


async def test_whatsapps_proven_number_verifies_without_asking(actions_store):
    events = [{"event": "user", "text": "", "parse_data": {}},
              {"event": "slot", "name": "order_id", "value": "A1001"}]
    tracker = make_tracker({"order_id": "A1001", "request": "order_status"}, intent="inform",
                           events=events, metadata={"proven_phone": "+14155550101"})
    outcome = await run_action(ValidateOrderForm(), tracker)
    assert outcome.slot("verified_contact") == "+14155550101"
    assert outcome.slot("requested_slot") is None and outcome.messages == []
    # someone else's order: that number proves nothing, the order's contact is asked
    other = make_tracker({"order_id": "A1003"}, intent="inform", events=[
        {"event": "user", "text": "", "parse_data": {}},
        {"event": "slot", "name": "order_id", "value": "A1003"}],
        metadata={"proven_phone": "+14155550101"})
    asked = await run_action(ValidateOrderForm(), other)
    assert asked.slot("verified_contact") is None
    assert asked.slot("requested_slot") == "contact"


async def test_whatsapp_customers_pick_from_their_recent_orders(actions_store):
    listed = await run_action(ActionAskOrderId(), make_tracker(
        metadata={"proven_phone": "+14155550107"}))
    buttons = listed.facts("utter_which_order")["buttons"]
    assert [b["title"] for b in buttons] == ["#A1012 Electric kettle", "#A1013 Ceramic mug set",
                                             "#A1014 Everyday cookbook"]
    assert buttons[0]["payload"] == '/inform{"order_id":"A1012"}'
    plain = await run_action(ActionAskOrderId(), make_tracker())
    assert plain.responses == ["utter_ask_order_id"]


async def test_resolve_never_shows_an_unverified_order(actions_store):
    tracker = make_tracker({"order_id": "A1001", "contact": "buyer1@example.com",
                            "request": "order_status"})
    outcome = await run_action(ActionResolveRequest(), tracker)
    assert "1Z999AA10123456784" not in str(outcome.messages)
    assert outcome.responses == ["utter_verification_offer_human"]


async def test_form_asks_for_a_new_address_only_when_the_order_can_change(actions_store):
    paid = await validate({"order_id": "A1004", "request": "change_address"},
                          {"contact": "buyer3@example.com"})
    shipped = await validate({"order_id": "A1001", "request": "change_address"},
                             {"contact": "buyer1@example.com"})
    assert paid.slot("requested_slot") == "new_address"
    assert shipped.slot("requested_slot") is None


async def test_photo_from_an_attachment_a_link_or_none(actions_store):
    slots = {**proven("A1002"), "request": "damaged_item", "requested_slot": "photo"}

    def events() -> list:  # rasa_sdk appends to the list it is given
        return [{"event": "user", "text": "", "parse_data": {}},
                {"event": "slot", "name": "photo", "value": "here"}]

    attached = make_tracker({**slots, "photo": "here"}, intent="inform", events=events(),
                            metadata={"attachments": [{"type": "image",
                                                       "url": "https://cdn.test/p.jpg"}]})
    photo = (await run_action(ValidateOrderForm(), attached)).slot("photo")
    assert photo == "https://cdn.test/p.jpg"
    nothing = make_tracker({**slots, "photo": "here"}, intent="inform", events=events())
    outcome = await run_action(ValidateOrderForm(), nothing)
    assert outcome.slot("photo") is None and outcome.responses == ["utter_invalid_photo"]
    declined = await validate(slots, {"photo": "sorry I don't have one"})
    assert declined.slot("photo") == "none"


@pytest.mark.parametrize("text,read_back", [
    # the three the issue found written wrongly: "IL" as the country, the flat
    # number in the street, Berlin in the US
    ("12 Oak Street, Springfield, IL 62704",
     "12 Oak Street, Springfield, IL 62704, United States"),
    ("Flat 3, 7 King Road, Leeds LS1 4AB, UK",
     "7 King Road, Flat 3, Leeds LS1 4AB, United Kingdom"),
    ("Hauptstrasse 5, 10115 Berlin, Germany", "Hauptstrasse 5, 10115 Berlin, Germany"),
    ("500 Market St Apt 4, San Francisco, CA 94105",
     "500 Market St, Apt 4, San Francisco, CA 94105, United States"),
    ("1 Main St, Toronto, ON M5V 2T6, Canada", "1 Main St, Toronto, ON M5V 2T6, Canada"),
])
def test_addresses_are_read_into_their_parts_and_read_back_as_the_country_writes_them(
        text, read_back):
    reading = read_address(text, "Ann")
    assert reading.address is not None, reading.problem
    assert describe(reading.address) == read_back


@pytest.mark.parametrize("text,problem", [
    ("Hauptstrasse 5, 10115 Berlin", "country"),      # a 5-digit code, but no US state
    ("Flat 3, 7 King Road, Leeds LS1 4AB", "country"),
    ("12 Oak Street, Springfield, 62704", "country"),  # a US address needs its state
    ("Oak Street, Springfield, IL 62704", "street"),
    ("12 Oak Street, Springfield, IL 6270", "postal_code"),
    ("Hauptstrasse 5, 1011 Berlin, Germany", "postal_code"),
    ("", "street"),
])
def test_an_address_that_is_not_whole_says_which_part_to_fix(text, problem):
    reading = read_address(text, "Ann")
    assert (reading.address, reading.problem) == (None, problem)


def test_every_address_problem_has_a_response():
    assert set(ADDRESS_PROBLEM_RESPONSES) == PROBLEMS
    assert set(ADDRESS_PROBLEM_RESPONSES.values()) <= set(DOMAIN["responses"])


# --- where is my order and delivery problems ---------------------------------------------


async def test_order_in_transit_gives_carrier_tracking_latest_event_and_eta(actions_store):
    outcome = await resolve("order_status", "A1001")
    facts = outcome.facts("utter_status_in_transit")
    assert facts["carrier"] == "UPS" and facts["tracking_number"] == "1Z999AA10123456784"
    assert facts["latest_event"] and facts["eta"]
    assert outcome.slot("request") is None


async def test_a_returned_order_is_told_returned_not_on_its_way(actions_store):
    """A1008 was delivered, sent back and refunded: its shipment is no parcel on its way,
    and its items are no parcel still to come."""
    outcome = await resolve("order_status", "A1008")
    assert outcome.responses == ["utter_status_returned"]
    damaged = await resolve("damaged_item", "A1008", photo="none")
    assert damaged.responses == ["utter_status_returned"]
    assert actions_store.writes.for_order("A1008") == []


async def test_a_stuck_parcel_is_traced_on_a_yes_and_asking_again_shows_the_trace(
        actions_store):
    outcome = await resolve("order_status", "A1003")
    assert outcome.responses == ["utter_status_late", "utter_offer_trace"]
    assert actions_store.delivery.claims_for_order("A1003") == []  # a question writes nothing
    traced = await answer(outcome, "A1003")
    assert traced.responses == ["utter_trace_opened"]
    [claim] = actions_store.delivery.claims_for_order("A1003")
    assert (claim.kind, traced.facts("utter_trace_opened")["claim_id"]) == ("trace",
                                                                            claim.claim_id)
    # the day the monitor hands the promise over if the parcel has not moved
    # (bot/outreach/promises.py)
    promised = current_policy().promised_by("trace", claim.created_at)
    assert traced.facts("utter_trace_opened")["trace_until"] == f"{promised:%a %d %b}"
    again = await resolve("order_status", "A1003")
    assert again.responses == ["utter_status_late", "utter_trace_open"]
    assert again.facts("utter_trace_open")["claim_id"] == claim.claim_id
    assert len(actions_store.delivery.claims_for_order("A1003")) == 1


async def test_delayed_parcel_gives_the_revised_eta(actions_store):
    outcome = await resolve("delivery_problem", "A1016")
    assert outcome.responses == ["utter_status_late", "utter_next_step_wait"]
    shipment = actions_store.delivery.get_shipment("A1016")
    assert outcome.facts("utter_next_step_wait")["eta"] == f"{shipment.eta:%a %d %b}"


async def test_lost_parcel_above_the_remedy_limit_escalates(actions_store):
    assert actions_store.orders.get_order("A1010").total > Decimal("150")
    outcome = await resolve("delivery_problem", "A1010")
    assert outcome.responses == ["utter_parcel_lost", "utter_escalated"]
    assert escalation(outcome)["rule"] == "remedy_above_threshold"
    assert actions_store.delivery.claims_for_order("A1010") == []


async def test_lost_parcel_within_the_remedy_limit_offers_replacement_or_refund(actions_store):
    with actions_store.engine.begin() as connection:
        connection.execute(sa.text("UPDATE orders SET total = 99 WHERE order_id = 'A1010'"))
    outcome = await resolve("delivery_problem", "A1010")
    assert (asked(outcome).kind, asked(outcome).problem) == ("remedy", "lost")
    titles = [b["title"] for b in outcome.facts("utter_offer_remedy")["buttons"]]
    assert titles == ["A replacement", "A refund"]
    assert outcome.handoff is None


async def test_not_received_below_the_high_value_threshold_opens_a_carrier_claim(actions_store):
    outcome = await resolve("not_received", "A1002")
    assert outcome.responses == ["utter_offer_claim"] and outcome.handoff is None
    opened = await answer(outcome, "A1002")
    assert opened.responses == ["utter_claim_opened"]
    [claim] = actions_store.delivery.claims_for_order("A1002")
    assert claim.kind == "not_received"
    promised = f"{current_policy().promised_by('not_received', claim.created_at):%a %d %b}"
    assert opened.facts("utter_claim_opened")["update_by"] == promised
    again = await resolve("not_received", "A1002")
    assert again.responses == ["utter_claim_open"]
    assert again.facts("utter_claim_open")["claim_id"] == claim.claim_id
    assert again.facts("utter_claim_open")["update_by"] == promised


async def test_not_received_high_value_escalates_tier_2(actions_store):
    outcome = await resolve("not_received", "A1006")
    assert outcome.responses == ["utter_escalated"]
    handoff = escalation(outcome)
    assert (handoff["rule"], handoff["tier"], handoff["order_id"]) == (
        "not_received_high_value", 2, "A1006")
    assert handoff["reason_code"] == "high_value_not_received"
    assert "A1006" in handoff["summary"]["what_happened"]
    assert handoff["summary"]["next"] == current_policy().rule("not_received_high_value").next_step


async def test_shipping_and_billing_differ_on_high_value_order_is_fraud_review(actions_store):
    handoff = escalation(await resolve("not_received", "A1011"))
    assert (handoff["rule"], handoff["tier"], handoff["reason_code"]) == (
        "fraud_address_mismatch", 3, "fraud_review")


async def test_repeat_claims_by_the_same_customer_are_fraud_review(actions_store):
    outcome = await resolve("not_received", "A1012")
    assert outcome.responses == ["utter_escalated"]
    assert escalation(outcome)["rule"] == "fraud_repeat_claims"


# --- returns and refunds -----------------------------------------------------------------


async def test_return_inside_the_window_creates_an_rma_with_a_label(actions_store):
    question = await resolve("return_item", "A1002")
    assert question.responses == ["utter_confirm_return"]
    assert question.facts("utter_confirm_return")["amount"] == "89.00"
    assert actions_store.returns.get_return("A1002") is None
    outcome = await answer(question, "A1002")
    facts = outcome.facts("utter_return_created")
    assert facts["rma_id"].startswith("RMA-") and facts["label_url"].endswith(".pdf")
    assert facts["amount"] == "89.00"
    assert actions_store.returns.get_return("A1002").rma_id == facts["rma_id"]


async def test_return_outside_the_window_says_why_and_offers_a_person(actions_store):
    outcome = await resolve("return_item", "A1005")
    assert outcome.responses == ["utter_return_not_eligible_window", "utter_offer_human"]
    assert actions_store.returns.get_return("A1005") is None
    assert (asked(outcome).kind, asked(outcome).rule) == ("person", "not_eligible")


async def test_final_sale_items_cannot_be_returned(actions_store):
    outcome = await resolve("return_item", "A1015")
    assert outcome.responses == ["utter_return_not_eligible_items", "utter_offer_human"]


async def test_return_status_in_transit_then_the_pending_refund(actions_store):
    outcome = await resolve("return_status", "A1007")
    assert outcome.responses == ["utter_return_in_transit", "utter_refund_pending"]


async def test_refund_status_gives_amount_date_and_when_it_shows(actions_store):
    outcome = await resolve("refund_status", "A1008")
    facts = outcome.facts("utter_refund_issued")
    assert facts["amount"] == "45.00" and facts["issued_on"] and facts["visible_by"]


async def test_refund_before_any_return_offers_a_return_first(actions_store):
    outcome = await resolve("refund_request", "A1002")
    assert outcome.responses == ["utter_refund_needs_return", "utter_confirm_return"]
    assert actions_store.returns.get_refund("A1002") is None


async def create_return(order_id: str) -> None:
    created = await answer(await resolve("return_item", order_id), order_id)
    assert created.responses == ["utter_return_created"]


async def test_refund_before_the_return_is_in_transit_stops_the_line(actions_store):
    await create_return("A1002")
    outcome = await resolve("refund_request", "A1002")
    assert outcome.responses == ["utter_escalated"]
    assert escalation(outcome)["rule"] == "stop_the_line_refund_before_return"
    assert actions_store.returns.get_refund("A1002") is None


def ship_return(store: Store, order_id: str) -> None:
    """The customer dropped the parcel at the carrier (the warehouse system's update)."""
    with store.engine.begin() as connection:
        connection.execute(sa.text("UPDATE returns SET status = 'in_transit' "
                                   "WHERE order_id = :order_id"), {"order_id": order_id})


async def test_refund_within_the_auto_approve_limit_is_created_on_a_yes(actions_store):
    await create_return("A1002")
    ship_return(actions_store, "A1002")
    question = await resolve("refund_request", "A1002")
    assert question.responses == ["utter_confirm_refund"]
    assert question.facts("utter_confirm_refund")["payment_method"] == "paypal"
    assert actions_store.returns.get_refund("A1002") is None
    outcome = await answer(question, "A1002")
    assert outcome.responses == ["utter_refund_created"]
    refund = actions_store.returns.get_refund("A1002")
    assert refund.amount == Decimal("89.00") and refund.status.value == "pending"
    assert outcome.facts("utter_refund_created")["refund_id"] == refund.refund_id


async def test_refund_above_the_auto_approve_limit_goes_for_approval(actions_store):
    await create_return("A1006")
    ship_return(actions_store, "A1006")
    outcome = await resolve("refund_request", "A1006")
    assert outcome.responses == ["utter_escalated"]
    assert escalation(outcome)["rule"] == "refund_above_threshold"
    assert actions_store.returns.get_refund("A1006") is None


# --- cancellations and changes -----------------------------------------------------------


async def test_cancel_asks_first_then_cancels_and_refunds(actions_store):
    question = await resolve("cancel_order", "A1004")
    assert question.responses == ["utter_confirm_cancel"]
    assert question.facts("utter_confirm_cancel")["total"] == "149.00"
    assert actions_store.orders.get_order("A1004").status is OrderStatus.PAID
    done = await answer(question, "A1004")
    assert done.responses == ["utter_cancelled"]
    assert actions_store.orders.get_order("A1004").status is OrderStatus.CANCELLED
    refund = actions_store.returns.get_refund("A1004")
    assert (refund.amount, refund.status.value) == (Decimal("149.00"), "pending")
    assert done.facts("utter_cancelled")["refund_id"] == refund.refund_id
    # later the status says what the store shows: cancelled, refund pending
    status = await resolve("order_status", "A1004")
    assert status.responses == ["utter_status_cancelled", "utter_refund_pending"]


async def test_shipped_order_cannot_be_cancelled(actions_store):
    outcome = await resolve("cancel_order", "A1001")
    assert outcome.responses == ["utter_cannot_cancel_shipped"]
    assert actions_store.orders.get_order("A1001").status is OrderStatus.SHIPPED


async def test_delivered_order_offers_a_return_instead_of_cancelling(actions_store):
    outcome = await resolve("cancel_order", "A1002")
    assert outcome.responses == ["utter_cannot_cancel_delivered", "utter_confirm_return"]
    accepted = await answer(outcome, "A1002")
    assert accepted.responses == ["utter_return_created"]


async def test_address_change_before_shipping(actions_store):
    question = await resolve("change_address", "A1004",
                             new_address="12 Oak Street, Springfield, IL 62704")
    assert question.responses == ["utter_confirm_address"]
    assert "12 Oak Street" in question.facts("utter_confirm_address")["address"]
    assert question.slot("new_address") is None
    assert actions_store.orders.get_order("A1004").shipping_address.line1 == "88 Pine St"
    outcome = await answer(question, "A1004")
    assert outcome.responses == ["utter_address_changed"]
    changed = actions_store.orders.get_order("A1004").shipping_address
    assert (changed.line1, changed.city, changed.postal_code, changed.country) == (
        "12 Oak Street", "Springfield, IL", "62704", "US")


async def test_address_cannot_change_once_shipped(actions_store):
    before = actions_store.orders.get_order("A1001").shipping_address
    outcome = await resolve("change_address", "A1001")
    assert outcome.responses == ["utter_cannot_change_address"]
    assert actions_store.orders.get_order("A1001").shipping_address == before


# --- damaged or wrong items --------------------------------------------------------------


async def test_damaged_item_offers_the_policy_remedies_and_grants_one_once(actions_store):
    outcome = await resolve("damaged_item", "A1002", photo="https://cdn.test/p.jpg")
    offer = outcome.facts("utter_offer_remedy")
    assert [b["title"] for b in offer["buttons"]] == ["A replacement", "A refund", "Store credit"]
    chosen = await answer(outcome, "A1002", ActionChooseRemedy(), intent="choose_remedy",
                          remedy="replacement")
    assert chosen.responses == ["utter_confirm_replacement"]
    assert actions_store.orders.replacement_of("A1002") is None
    sent = await answer(chosen, "A1002")
    replacement_id = sent.facts("utter_remedy_replacement")["replacement_id"]
    replacement = actions_store.orders.get_order(replacement_id)
    assert replacement.status is OrderStatus.PAID and replacement.total == Decimal("0")
    assert [c.kind for c in actions_store.delivery.claims_for_order("A1002")] == ["damaged"]
    # asked again: no refund on top (another conversation would be a repeat contact)
    again = await resolve("damaged_item", "A1002", photo="none")
    assert again.responses == ["utter_remedy_already", "utter_offer_human"]
    assert replacement_id in again.facts("utter_remedy_already")["what"]
    assert actions_store.returns.get_refund("A1002") is None


async def test_a_remedy_given_is_told_though_the_order_changed_status_since(actions_store):
    """A refund in full for a damaged item: WooCommerce then marks the order refunded
    (returned, to the bot). Asked again, the customer hears it was put right, not that
    the order has not been delivered."""
    question = await resolve("damaged_item", "A1002", photo="none")
    chosen = await answer(question, "A1002", ActionChooseRemedy(), intent="choose_remedy",
                          remedy="refund")
    refunded = await answer(chosen, "A1002")
    assert refunded.responses == ["utter_refund_created"]
    with actions_store.engine.begin() as connection:
        connection.execute(sa.text("UPDATE orders SET status = 'returned' "
                                   "WHERE order_id = 'A1002'"))
    again = await resolve("damaged_item", "A1002", photo="none")
    assert again.responses == ["utter_remedy_already", "utter_offer_human"]
    assert refunded.facts("utter_refund_created")["refund_id"] in \
        again.facts("utter_remedy_already")["what"]
    assert len(actions_store.returns.refunds("A1002")) == 1


async def test_a_retried_yes_writes_once_and_says_the_same(actions_store):
    question = await resolve("cancel_order", "A1004")
    first = await answer(question, "A1004")
    retried = await answer(question, "A1004")  # Rasa runs the same turn again
    assert first.responses == retried.responses == ["utter_cancelled"]
    assert first.facts("utter_cancelled")["refund_id"] == \
        retried.facts("utter_cancelled")["refund_id"]
    assert len(actions_store.returns.refunds("A1004")) == 1
    [write] = actions_store.writes.for_order("A1004")
    assert (write.kind, write.status, write.before["status"]) == ("cancel", "done", "paid")
    assert write.reference == first.facts("utter_cancelled")["refund_id"]


async def test_a_correction_before_the_yes_moves_the_request_to_the_other_order(actions_store):
    question = asked(await resolve("cancel_order", "A1004"))
    assert question.request == "cancel_order"
    # "sorry, I meant A1005": the form verified it; the request slot was cleared
    corrected = await run_action(ActionResolveRequest(), make_tracker(
        {**proven("A1005"), "pending_offer": question.encode()}, intent="inform",
        events=user_turns(question.turn + 1)))
    # A1005 was delivered long ago: it can't be cancelled, nor returned any more
    assert corrected.responses == ["utter_return_not_eligible_window", "utter_offer_human"]
    assert actions_store.orders.get_order("A1004").status is OrderStatus.PAID
    assert actions_store.orders.get_order("A1005").status is OrderStatus.DELIVERED


async def test_a_late_yes_does_nothing_and_asks_again(actions_store):
    question = await resolve("cancel_order", "A1004")
    late = await answer(question, "A1004", later=1)  # "is there a fee?" came in between
    assert late.responses == ["utter_question_expired", "utter_confirm_cancel"]
    assert actions_store.orders.get_order("A1004").status is OrderStatus.PAID
    assert actions_store.writes.for_order("A1004") == []


async def test_a_store_that_refuses_gets_an_honest_answer(actions_store):
    question = await resolve("cancel_order", "A1004")
    with actions_store.engine.begin() as db:  # it shipped in the meantime
        db.execute(sa.text("UPDATE orders SET status = 'shipped' WHERE order_id = 'A1004'"))
    refused = await answer(question, "A1004")
    assert refused.responses == ["utter_cannot_cancel_shipped"]
    assert refused.handoff is None
    [write] = actions_store.writes.for_order("A1004")
    assert write.status == "refused"


async def test_a_store_that_does_not_answer_goes_to_a_person(actions_store, monkeypatch):
    question = await resolve("cancel_order", "A1004")

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailable("OperationalError")

    monkeypatch.setattr(type(actions_store.orders), "cancel_order", unreachable)
    outcome = await answer(question, "A1004")
    assert outcome.responses == ["utter_write_unconfirmed", "utter_escalated"]
    assert escalation(outcome)["rule"] == "write_unconfirmed"
    [write] = actions_store.writes.for_order("A1004")
    assert write.status == "unconfirmed"


async def test_wrong_item_offers_only_what_the_policy_allows(actions_store):
    outcome = await resolve("wrong_item", "A1012", photo="none")
    # A1012's customer has two earlier claims: fraud review comes first
    assert escalation(outcome)["rule"] == "fraud_repeat_claims"
    outcome = await resolve("wrong_item", "A1002", photo="none")
    titles = [b["title"] for b in outcome.facts("utter_offer_remedy")["buttons"]]
    assert titles == ["A replacement", "A refund"]


async def test_damaged_high_value_item_escalates(actions_store):
    outcome = await resolve("damaged_item", "A1006", photo="none")
    assert outcome.responses == ["utter_escalated"]
    assert escalation(outcome)["rule"] == "remedy_above_threshold"


# --- escalation ------------------------------------------------------------------------


@pytest.mark.parametrize("intent,text,rule,tier", [
    ("human_handoff", "I want a person", "customer_request", 1),
    ("escalation_trigger", "I will file a chargeback", "chargeback", 3),
    ("escalation_trigger", "my lawyer will call", "legal_threat", 3),
    ("payment_issue", "I was charged twice", "payment_problem", 2),
])
async def test_escalation_hands_over_reason_tier_rule(actions_store, intent, text, rule, tier):
    outcome = await run_action(ActionEscalate(), make_tracker(intent=intent, text=text))
    handoff = escalation(outcome)
    assert (handoff["rule"], handoff["tier"]) == (rule, tier)


async def test_a_trigger_the_language_model_found_without_a_phrase_is_not_a_chargeback(
        actions_store):
    outcome = await run_action(ActionEscalate(), make_tracker(
        intent="escalation_trigger", text="my child got really hurt by the blender blade"))
    handoff = escalation(outcome)
    assert (handoff["rule"], handoff["queue"]) == ("unclassified_trigger", "general")


async def test_an_empty_box_stops_the_line_until_a_person_resolves_it(actions_store):
    outcome = await run_action(ActionEscalate(), make_tracker(
        {**proven("A1002")}, intent="escalation_trigger",
        text="the box was empty when it arrived"))
    assert escalation(outcome)["rule"] == "stop_the_line_empty_box"
    hold = actions_store.writes.hold_on("A1002")
    assert hold is not None and hold.rule == "stop_the_line_empty_box"
    # no write on the order, whatever is asked, until the hold is released
    paused = await resolve("return_item", "A1002")
    assert paused.responses == ["utter_order_on_hold"]
    assert (await resolve("not_received", "A1002")).responses == ["utter_order_on_hold"]
    assert actions_store.writes.release("A1002") == 1
    assert (await resolve("return_item", "A1002")).responses == ["utter_confirm_return"]


async def test_three_accounts_at_one_address_stop_the_line_on_a_claim(actions_store):
    for order_id, email in (("A1017", "buyer9@example.com"), ("A1019", "buyer11@example.com")):
        EMAILS[order_id] = email
    outcome = await resolve("damaged_item", "A1019", photo="none")
    assert escalation(outcome)["rule"] == "stop_the_line_shared_address"
    assert actions_store.writes.hold_on("A1019") is not None
    assert actions_store.writes.hold_on("A1017") is None


async def test_a_swapped_unit_in_an_earlier_return_stops_the_line_on_any_claim(actions_store):
    """A1020's return held another serial number than the one shipped: a claim on the
    same customer's A1021 (a different order) goes to a person, and the order waits."""
    EMAILS["A1021"] = "buyer12@example.com"
    outcome = await resolve("damaged_item", "A1021", photo="none")
    assert escalation(outcome)["rule"] == "stop_the_line_serial_swap"
    assert actions_store.writes.hold_on("A1021") is not None
    assert actions_store.orders.replacement_of("A1021") is None


async def test_escalation_keeps_the_verified_order(actions_store):
    tracker = make_tracker(proven("A1003"), intent="human_handoff")
    assert escalation(await run_action(ActionEscalate(), tracker))["order_id"] == "A1003"
    unverified = make_tracker({"order_id": "A1003", "contact": "buyer1@example.com"},
                              intent="human_handoff", sender="other")
    assert escalation(await run_action(ActionEscalate(), unverified))["order_id"] is None


def conversation_so_far(last_text: str) -> list:
    """A verified order-status conversation, then an FAQ, then `last_text`."""
    def user(text: str) -> dict:
        return {"event": "user", "text": text, "parse_data": {}}

    def action(name: str) -> dict:
        return {"event": "action", "name": name}

    return [action("action_session_start"), action("action_listen"), user("where is A1003"),
            action("order_form"), action("validate_order_form"), action("action_listen"),
            user("buyer2@example.com"), action("order_form"), action("action_resolve_request"),
            action("utter_anything_else"), action("action_listen"), user("return policy?"),
            action("action_answer_faq"), action("action_listen"), user("where is A1003"),
            action("action_resolve_request"), action("action_listen"), user(last_text)]


async def test_handoff_payload_of_a_verified_customer(actions_store):
    slots = proven("A1003")
    tracker = make_tracker({**slots, "request": "order_status",
                            "pending_offer": "cancel"}, intent="human_handoff",
                           text="I want a person", events=conversation_so_far("I want a person"))
    outcome = await run_action(ActionEscalate(), tracker)
    policy = current_policy()
    assert actions_store.orders.get_order("A1003").customer.name == "Priya Shah"
    assert escalation(outcome) == {
        "reason_code": "customer_request",
        "rule": "customer_request",
        "tier": 1,
        "queue": "general",
        "order_id": "A1003",
        "customer": {"name": "Priya Shah", "verified": True, "contact": "buyer2@example.com"},
        "summary": {"what_happened": "Customer asked for a person.",
                    "next": policy.rule("customer_request").next_step,
                    "eta": policy.tiers[1].team_reply},
        # pending_offer is gone: the escalation cleared it in this run
        "slots": {**slots, "request": "order_status", "verification_failures": 0.0},
        "actions_attempted": ["order_form", "action_resolve_request", "action_answer_faq"],
    }


async def test_handoff_payload_of_an_unverified_customer(actions_store):
    # A1003 is Priya Shah's order: a stranger's contact must not get her name handed over
    question = Question("person", 1, time.time(), rule="identity_not_verified")
    tracker = make_tracker({"order_id": "A1003", "contact": "buyer1@example.com",
                            "verification_failures": 3.0, "pending_offer": question.encode()},
                           intent="affirm", events=user_turns(2))
    outcome = await run_action(ActionConfirmOffer(), tracker)
    handoff = escalation(outcome)
    assert handoff["customer"] == {"name": "", "verified": False, "contact": "buyer1@example.com"}
    assert handoff["order_id"] is None and "Priya" not in json.dumps(handoff)
    assert (handoff["rule"], handoff["reason_code"], handoff["tier"], handoff["queue"]) == (
        "identity_not_verified", "identity_unverified", 1, "general")
    assert handoff["summary"]["what_happened"] == "Customer accepted the offer of a person."
    assert handoff["slots"] == {"order_id": "A1003", "contact": "buyer1@example.com",
                                "verification_failures": 3.0}
    assert handoff["actions_attempted"] == []


async def test_complaint_with_legal_language_is_tier_3(actions_store):
    legal = await run_action(ActionHandleComplaint(), make_tracker(
        intent="complaint", text="Terrible service, I'm calling my attorney"))
    assert legal.responses == ["utter_escalated"]
    assert (escalation(legal)["rule"], escalation(legal)["tier"]) == ("legal_threat", 3)
    hurt = await run_action(ActionHandleComplaint(), make_tracker(
        intent="complaint", text="the kettle you sold me burned my son"))
    assert hurt.responses == ["utter_escalated_safety"]
    assert (escalation(hurt)["rule"], escalation(hurt)["queue"]) == ("safety_incident",
                                                                     "general")
    awful = await run_action(ActionHandleComplaint(),
                             make_tracker(intent="complaint", text="awful"))
    assert escalation(awful)["rule"] == "complaint"


async def test_repeat_contact_within_the_window_escalates(actions_store):
    first = await resolve("delivery_problem", "A1003", sender="monday")
    assert "utter_escalated" not in first.responses and first.handoff is None
    again = await resolve("delivery_problem", "A1003", sender="thursday")
    assert again.responses == ["utter_escalated"]
    assert escalation(again)["rule"] == "repeat_contact"
    same_conversation = await resolve("delivery_problem", "A1003", sender="monday")
    assert "utter_escalated" in same_conversation.responses
    assert escalation(same_conversation)["rule"] == "repeat_contact"


def fallback_events(misses: int, before: Optional[str] = "greet") -> list:
    events = [{"event": "user", "parse_data": {"intent": {"name": before}}}]
    events += [{"event": "user", "parse_data": {"intent": {"name": "nlu_fallback"}}}] * misses
    return events


async def test_fallback_asks_to_rephrase_then_offers_a_person(actions_store):
    once = await run_action(ActionFallback(), make_tracker(events=fallback_events(1)))
    assert once.responses == ["utter_rephrase"]
    twice = await run_action(ActionFallback(), make_tracker(events=fallback_events(2)))
    assert twice.responses == ["utter_offer_human_after_fallback"]
    assert (asked(twice).kind, asked(twice).rule) == ("person", "bot_not_understanding")
