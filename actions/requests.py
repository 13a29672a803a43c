"""What the bot does for each request about a verified order, one function each.

Every function reads the store, acts within the escalation policy and replies with
responses from domain.yml; anything outside the policy goes to a person.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable, Dict, Optional

from actions.conversation import Turn, day, money
from actions.order_form import parse_address
from actions.store.types import (
    DeliveryException,
    Order,
    OrderStatus,
    RefundStatus,
    ReturnStatus,
    Shipment,
)

REMEDY_TITLES = {
    "replacement": "A replacement",
    "refund": "A refund",
    "store_credit": "Store credit",
}
# Claims a customer makes (the fraud rule counts these), unlike a carrier trace or a
# parcel the carrier itself declared lost.
CUSTOMER_CLAIMS = ("not_received", "damaged", "wrong_item")
RETURN_STATE_RESPONSES = {
    ReturnStatus.LABEL_ISSUED: "utter_return_label_issued",
    ReturnStatus.IN_TRANSIT: "utter_return_in_transit",
    ReturnStatus.RECEIVED: "utter_return_received",
    ReturnStatus.REFUNDED: "utter_return_refunded",
}


def add_business_days(start: datetime, days: int) -> datetime:
    current = start
    while days > 0:
        current += timedelta(days=1)
        if current.weekday() < 5:
            days -= 1
    return current


def shipment_facts(shipment: Shipment) -> Dict[str, str]:
    latest = shipment.latest_event
    return {
        "carrier": shipment.carrier,
        "tracking_number": shipment.tracking_number,
        "tracking_url": shipment.tracking_url,
        "eta": day(shipment.eta),
        "latest_event": f"{latest.description}, {latest.location} ({day(latest.time)})"
        if latest
        else "label created",
    }


def delivery_exception(turn: Turn, order: Order, shipment: Shipment) -> DeliveryException:
    """The carrier's exception, or 'stuck' when the parcel has not been scanned for
    longer than the policy allows, or 'delayed' when the promised date passed."""
    if shipment.exception is not DeliveryException.NONE or order.status is not OrderStatus.SHIPPED:
        return shipment.exception
    last_scan = shipment.latest_event.time if shipment.latest_event else shipment.shipped_at
    if turn.now - last_scan > timedelta(days=turn.policy.windows.stuck_after_days_without_scan):
        return DeliveryException.STUCK
    if turn.now.date() > order.promised_date:
        return DeliveryException.DELAYED
    return DeliveryException.NONE


def fraud_rule(turn: Turn, order: Order) -> Optional[str]:
    """The fraud rule a claim on this order fires, if any."""
    high_value = order.total >= turn.policy.thresholds.high_value_order
    if high_value and order.shipping_address != order.billing_address:
        return "fraud_address_mismatch"
    since = turn.now - timedelta(days=turn.policy.windows.repeat_claims_days)
    earlier = [
        claim
        for claim in turn.store.delivery.claims_by_customer(order.customer.customer_id, since)
        if claim.order_id != order.order_id and claim.kind in CUSTOMER_CLAIMS
    ]
    if len(earlier) >= turn.policy.limits.prior_claims_for_review:
        return "fraud_repeat_claims"
    return None


def escalate_if_fraud(turn: Turn, order: Order, claim: str) -> bool:
    rule = fraud_rule(turn, order)
    if rule:
        turn.escalate(rule, order, f"Customer claims {claim} on order {order.order_id} "
                                   f"({money(order.total)} {order.currency}).")
    return rule is not None


def offer_remedies(turn: Turn, order: Order, problem: str) -> None:
    choices = getattr(turn.policy.remedies, problem)
    turn.set("pending_offer", f"remedy:{problem}")
    turn.dispatcher.utter_message(
        response="utter_offer_remedy",
        buttons=[
            {"title": REMEDY_TITLES[remedy], "payload": f'/choose_remedy{{"remedy":"{remedy}"}}'}
            for remedy in choices
        ],
        order_id=order.order_id,
    )


# --- where is my order, delivery problems ---------------------------------------------------


def order_status(turn: Turn, order: Order) -> None:
    shipment = turn.store.delivery.get_shipment(order.order_id)
    if order.status is OrderStatus.PAID or shipment is None:
        _status_without_shipment(turn, order)
    elif order.status is OrderStatus.DELIVERED and shipment.delivered_at:
        turn.say("utter_status_delivered", order_id=order.order_id,
                 delivered_on=day(shipment.delivered_at), **shipment_facts(shipment))
    elif delivery_exception(turn, order, shipment) is DeliveryException.NONE:
        turn.say("utter_status_in_transit", order_id=order.order_id, **shipment_facts(shipment))
    else:
        delivery_problem(turn, order)


def _status_without_shipment(turn: Turn, order: Order) -> None:
    if order.status is OrderStatus.CANCELLED:
        turn.say("utter_status_cancelled", order_id=order.order_id,
                 cancelled_on=day(order.cancelled_at or order.placed_at))
    elif order.status is OrderStatus.RETURNED:
        turn.say("utter_status_returned", order_id=order.order_id)
    else:
        turn.say("utter_status_paid", order_id=order.order_id,
                 ship_by=day(add_business_days(max(turn.now, order.placed_at), 1)),
                 promised_date=day(order.promised_date))


def delivery_problem(turn: Turn, order: Order) -> None:
    shipment = turn.store.delivery.get_shipment(order.order_id)
    if shipment is None or order.status is not OrderStatus.SHIPPED:
        order_status(turn, order)
        return
    exception = delivery_exception(turn, order, shipment)
    facts = {"order_id": order.order_id, **shipment_facts(shipment)}
    if exception is DeliveryException.NONE:
        turn.say("utter_not_late", **facts)
    elif exception is DeliveryException.LOST:
        claim = turn.store.delivery.open_claim(order.order_id, "lost")
        turn.say("utter_parcel_lost", claim_id=claim.claim_id, **facts)
        if not escalate_if_fraud(turn, order, "a lost parcel"):
            _remedy_or_escalate(turn, order, "lost")
    else:
        turn.say("utter_status_late", promised_date=day(order.promised_date), **facts)
        if exception is DeliveryException.STUCK:
            _trace(turn, order, shipment)
        else:
            turn.say("utter_next_step_wait", eta=day(shipment.eta))


def _trace(turn: Turn, order: Order, shipment: Shipment) -> None:
    claim = turn.store.delivery.open_claim(order.order_id, "trace")
    last_scan = shipment.latest_event.time if shipment.latest_event else shipment.shipped_at
    turn.say("utter_next_step_trace", carrier=shipment.carrier, claim_id=claim.claim_id,
             last_scan=day(last_scan),
             trace_until=day(add_business_days(turn.now, turn.policy.windows.trace_wait_days)))


def not_received(turn: Turn, order: Order) -> None:
    shipment = turn.store.delivery.get_shipment(order.order_id)
    if shipment is None or order.status is not OrderStatus.DELIVERED:
        order_status(turn, order)
        return
    if escalate_if_fraud(turn, order, "a parcel not received"):
        return
    if order.total >= turn.policy.thresholds.high_value_order:
        turn.escalate("not_received_high_value", order,
                      f"Order {order.order_id} ({money(order.total)} {order.currency}) shows "
                      f"delivered on {day(shipment.delivered_at or turn.now)} but the customer "
                      "says it never arrived.")
        return
    claim = turn.store.delivery.open_claim(order.order_id, "not_received")
    turn.say("utter_claim_opened", order_id=order.order_id, claim_id=claim.claim_id,
             delivered_on=day(shipment.delivered_at or turn.now), carrier=shipment.carrier)


# --- damaged or wrong items and remedies ----------------------------------------------------


def item_problem(turn: Turn, order: Order) -> None:
    problem = turn.slot("request")
    if order.status is not OrderStatus.DELIVERED:
        shipment = turn.store.delivery.get_shipment(order.order_id)
        eta = day(shipment.eta) if shipment else day(order.promised_date)
        turn.say("utter_item_not_delivered", order_id=order.order_id, eta=eta)
        return
    label = "a damaged item" if problem == "damaged_item" else "a wrong item"
    if not escalate_if_fraud(turn, order, label):
        turn.store.delivery.open_claim(order.order_id,
                                       "damaged" if problem == "damaged_item" else "wrong_item")
        _remedy_or_escalate(turn, order, problem)


def _remedy_or_escalate(turn: Turn, order: Order, problem: str) -> None:
    if order.total > turn.policy.thresholds.remedy_auto_max:
        turn.escalate("remedy_above_threshold", order,
                      f"Customer reports {problem.replace('_', ' ')} on order {order.order_id} "
                      f"({money(order.total)} {order.currency}); photo: "
                      f"{turn.slot('photo') or 'not asked'}.")
        return
    offer_remedies(turn, order, problem)


def grant_remedy(turn: Turn, order: Order, problem: str, remedy: Optional[str]) -> None:
    choices = getattr(turn.policy.remedies, problem)
    if remedy not in choices:
        offer_remedies(turn, order, problem)
        return
    reason = f"{problem}: {remedy}"
    if remedy == "replacement":
        replacement = turn.store.orders.create_replacement(order.order_id, reason)
        turn.say("utter_remedy_replacement", replacement_id=replacement.order_id)
    elif remedy == "store_credit":
        credit = turn.store.returns.create_refund(order.order_id, order.total, reason,
                                                  method="store_credit")
        turn.say("utter_remedy_store_credit", amount=money(credit.amount),
                 refund_id=credit.refund_id)
    else:
        _create_refund(turn, order, order.total, reason)
    turn.set("pending_offer", None)


# --- returns and refunds --------------------------------------------------------------------


def return_item(turn: Turn, order: Order) -> None:
    if turn.store.returns.get_return(order.order_id):
        return_status(turn, order)
        return
    facts = {"order_id": order.order_id}
    if order.status is OrderStatus.CANCELLED:
        turn.say("utter_nothing_to_return", **facts)
    elif order.status is not OrderStatus.DELIVERED:
        turn.say("utter_return_not_delivered", **facts)
    elif not _within_return_window(turn, order):
        turn.say("utter_return_not_eligible_window",
                 delivered_on=day(order.delivered_at or order.placed_at), **facts)
        turn.offer("human:not_eligible", "utter_offer_human")
    elif not any(item.returnable for item in order.items):
        turn.say("utter_return_not_eligible_items", **facts)
        turn.offer("human:not_eligible", "utter_offer_human")
    else:
        shipment = turn.store.delivery.get_shipment(order.order_id)
        record = turn.store.returns.create_return(order.order_id, reason=turn.slot("request") or "")
        turn.say("utter_return_created", rma_id=record.rma_id, label_url=record.label_url,
                 carrier=shipment.carrier if shipment else "UPS",
                 amount=money(_returnable_amount(order)), **facts)


def _within_return_window(turn: Turn, order: Order) -> bool:
    delivered = order.delivered_at or order.placed_at
    return turn.now - delivered <= timedelta(days=turn.policy.windows.return_days)


def _returnable_amount(order: Order) -> Decimal:
    return sum((i.unit_price * i.quantity for i in order.items if i.returnable), Decimal("0"))


def return_status(turn: Turn, order: Order) -> None:
    record = turn.store.returns.get_return(order.order_id)
    if record is None:
        if order.status is OrderStatus.DELIVERED:
            turn.offer("return", "utter_no_return", order_id=order.order_id)
        else:
            turn.say("utter_no_return_plain", order_id=order.order_id)
        return
    since = record.received_at or record.shipped_at or record.created_at
    turn.say(RETURN_STATE_RESPONSES[record.status], rma_id=record.rma_id,
             order_id=order.order_id, since=day(since), label_url=record.label_url)
    if turn.store.returns.get_refund(order.order_id):
        refund_status(turn, order)


def refund_status(turn: Turn, order: Order) -> None:
    refund = turn.store.returns.get_refund(order.order_id)
    facts = {"order_id": order.order_id}
    if refund is None:
        if order.status is OrderStatus.CANCELLED:
            _status_without_shipment(turn, order)
        elif turn.store.returns.get_return(order.order_id):
            turn.say("utter_refund_after_return", **facts)
        else:
            turn.say("utter_no_refund", **facts)
    elif refund.status is RefundStatus.ISSUED:
        issued = refund.issued_at or refund.created_at
        turn.say("utter_refund_issued", amount=money(refund.amount), issued_on=day(issued),
                 visible_by=day(add_business_days(issued, turn.policy.refunds.days_to_show)),
                 **facts)
    else:
        turn.say("utter_refund_pending", amount=money(refund.amount), **facts)


def refund_request(turn: Turn, order: Order) -> None:
    if turn.store.returns.get_refund(order.order_id) or order.status is OrderStatus.CANCELLED:
        refund_status(turn, order)
    elif order.status is OrderStatus.PAID:
        turn.offer("cancel", "utter_refund_cancel_instead", order_id=order.order_id)
    elif order.status is OrderStatus.SHIPPED:
        _refund_in_transit(turn, order)
    else:
        _refund_delivered(turn, order)


def _refund_in_transit(turn: Turn, order: Order) -> None:
    shipment = turn.store.delivery.get_shipment(order.order_id)
    if shipment and shipment.exception is DeliveryException.LOST:
        delivery_problem(turn, order)
    else:
        turn.say("utter_refund_not_yet", order_id=order.order_id)


def _refund_delivered(turn: Turn, order: Order) -> None:
    record = turn.store.returns.get_return(order.order_id)
    if record is None:
        if _within_return_window(turn, order) and any(i.returnable for i in order.items):
            turn.offer("return", "utter_refund_needs_return", order_id=order.order_id)
        else:
            return_item(turn, order)  # explains why it can't be returned, offers a person
    elif record.status is ReturnStatus.LABEL_ISSUED:
        turn.escalate("stop_the_line_refund_before_return", order,
                      f"Customer asks for a refund on {order.order_id} but return "
                      f"{record.rma_id} has not been shipped yet; no refund was made.")
    elif not escalate_if_fraud(turn, order, "a refund"):
        _create_refund(turn, order, _returnable_amount(order), "refund_request")


def _create_refund(turn: Turn, order: Order, amount: Decimal, reason: str) -> None:
    if amount > turn.policy.thresholds.refund_auto_approve_max:
        turn.escalate("refund_above_threshold", order,
                      f"Refund of {money(amount)} {order.currency} asked on order "
                      f"{order.order_id} ({reason}); above the auto-approve limit.")
        return
    refund = turn.store.returns.create_refund(order.order_id, amount, reason)
    turn.say("utter_refund_created", order_id=order.order_id, amount=money(refund.amount),
             refund_id=refund.refund_id)


# --- cancellations and changes --------------------------------------------------------------


def cancel_order(turn: Turn, order: Order) -> None:
    facts = {"order_id": order.order_id}
    if order.status is OrderStatus.PAID:
        items = ", ".join(f"{i.quantity} x {i.name}" for i in order.items)
        turn.offer("cancel", "utter_confirm_cancel", items=items, total=money(order.total), **facts)
    elif order.status is OrderStatus.SHIPPED:
        turn.say("utter_cannot_cancel_shipped", **facts)
    elif order.status is OrderStatus.DELIVERED:
        turn.offer("return", "utter_cannot_cancel_delivered", **facts)
    elif order.status is OrderStatus.CANCELLED:
        turn.say("utter_already_cancelled", **facts)
    else:
        turn.say("utter_status_returned", **facts)


def confirm_cancel(turn: Turn, order: Order) -> None:
    cancelled = turn.store.orders.cancel_order(order.order_id, reason="customer request")
    turn.say("utter_cancelled", order_id=cancelled.order_id, total=money(cancelled.total),
             payment_method=cancelled.payment_method)


def change_address(turn: Turn, order: Order) -> None:
    shipment = turn.store.delivery.get_shipment(order.order_id)
    if order.can_be_changed:
        address = parse_address(turn.slot("new_address") or "", order.shipping_address.name)
        if address is None:  # the form always validates it; this guards a direct call
            turn.say("utter_ask_new_address")
            return
        changed = turn.store.orders.change_shipping_address(order.order_id, address)
        turn.say("utter_address_changed", order_id=changed.order_id,
                 address=changed.shipping_address.one_line())
    elif shipment is not None and order.status is OrderStatus.SHIPPED:
        turn.say("utter_cannot_change_address", order_id=order.order_id,
                 **shipment_facts(shipment))
    else:
        turn.say("utter_cannot_change_closed", order_id=order.order_id,
                 status=order.status.value)


def change_order(turn: Turn, order: Order) -> None:
    if order.can_be_changed:
        turn.say("utter_change_order_human")
        turn.escalate("order_change_request", order,
                      f"Customer wants to change the items of unshipped order {order.order_id}.")
    else:
        turn.say("utter_cannot_change_order", order_id=order.order_id)


HANDLERS: Dict[str, Callable[[Turn, Order], None]] = {
    "order_status": order_status,
    "delivery_problem": delivery_problem,
    "not_received": not_received,
    "damaged_item": item_problem,
    "wrong_item": item_problem,
    "return_item": return_item,
    "return_status": return_status,
    "refund_request": refund_request,
    "refund_status": refund_status,
    "cancel_order": cancel_order,
    "change_address": change_address,
    "change_order": change_order,
}
