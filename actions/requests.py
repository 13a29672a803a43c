"""What the bot does for each request about a verified order, one function each, and
the writes those requests may lead to.

Every function reads the store, acts within the escalation policy and replies with
responses from domain.yml; anything outside the policy goes to a person. Reading never
writes: a write is proposed, and made only through actions/guarded.py.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from actions.address import describe, read_address
from actions.conversation import Turn, day, money
from actions.guarded import MADE_BY_HAND, Change, Explain, Found, offer_people, propose
from actions.policy import add_business_days
from actions.store.types import (
    REMEDY_WRITES,
    Address,
    CarrierClaim,
    DeliveryException,
    Holdup,
    Order,
    OrderItem,
    OrderStatus,
    RefundStatus,
    ReturnStatus,
    Shipment,
    WriteRecord,
)
from actions.store.types import Refund as RefundRecord  # Refund here is the change

REMEDY_TITLES = {
    "replacement": "A replacement",
    "refund": "A refund",
    "store_credit": "Store credit",
}
# What the customer reports, as the claim kind the store records (the fraud rule counts
# these claims), unlike a carrier trace.
CLAIM_OF_PROBLEM = {"not_received": "not_received", "damaged_item": "damaged",
                    "wrong_item": "wrong_item", "lost": "lost"}
CUSTOMER_CLAIMS = ("not_received", "damaged", "wrong_item")
# returns whose parcel is not on its way back yet
NOT_SENT_BACK = (ReturnStatus.REQUESTED, ReturnStatus.APPROVED, ReturnStatus.LABEL_ISSUED)
PAYMENT_METHODS = {"store_credit": "store credit"}
RETURN_STATE_RESPONSES = {
    ReturnStatus.REQUESTED: "utter_return_requested",
    ReturnStatus.APPROVED: "utter_return_approved",
    ReturnStatus.LABEL_ISSUED: "utter_return_label_issued",
    ReturnStatus.IN_TRANSIT: "utter_return_in_transit",
    ReturnStatus.RECEIVED: "utter_return_received",
    ReturnStatus.REFUNDED: "utter_return_refunded",
}


def shipment_facts(shipment: Shipment) -> Dict[str, str]:
    latest = shipment.latest_event
    return {
        "carrier": shipment.carrier,
        "tracking_number": shipment.tracking_number,
        "tracking_url": shipment.tracking_url,
        "eta": day(shipment.eta),
        "latest_event": f"{latest.description}, {latest.location} ({day(latest.time)})"
        if latest else "label created" if shipment.scans_known
        else "the carrier's scans show on its tracking page only",
    }


def items_text(items: Sequence[OrderItem]) -> str:
    return ", ".join(f"{i.quantity} x {i.name}" for i in items)


def last_scan(shipment: Shipment) -> datetime:
    return shipment.latest_event.time if shipment.latest_event else shipment.shipped_at


def delivered(order: Order, shipment: Shipment) -> bool:
    """Delivered, as the store or the carrier (TRACKING_BACKEND) says: a carrier may
    deliver before the shop marks the order delivered."""
    return shipment.delivered_at is not None and order.status in (OrderStatus.DELIVERED,
                                                                  OrderStatus.SHIPPED)


def delivery_exception(turn: Turn, order: Order, shipment: Shipment) -> DeliveryException:
    """The carrier's exception, or 'stuck' when the parcel has not been scanned for
    longer than the policy allows (where scans are known), or 'delayed' when the
    promised date passed."""
    if shipment.exception is not DeliveryException.NONE or order.status is not OrderStatus.SHIPPED:
        return shipment.exception
    if shipment.scans_known and turn.now - last_scan(shipment) > timedelta(
            days=turn.policy.windows.stuck_after_days_without_scan):
        return DeliveryException.STUCK
    if turn.now.date() > order.promised_date:
        return DeliveryException.DELAYED
    return DeliveryException.NONE


def fraud_rule(turn: Turn, order: Order) -> Optional[str]:
    """The fraud rule a claim on this order fires, if any. Earlier claims count on every
    order of the customer, this one included."""
    high_value = order.total >= turn.policy.thresholds.high_value_order
    if high_value and order.shipping_address != order.billing_address:
        return "fraud_address_mismatch"
    accounts = turn.store.orders.customers_shipping_to(order.shipping_address)
    if accounts >= turn.policy.limits.accounts_per_address_for_review:
        return "stop_the_line_shared_address"
    since = turn.now - timedelta(days=turn.policy.windows.repeat_claims_days)
    if turn.store.returns.swapped_returns(order.customer.customer_id, since):
        return "stop_the_line_serial_swap"
    if earlier_claims(turn, order, since) >= turn.policy.limits.prior_claims_for_review:
        return "fraud_repeat_claims"
    return None


def earlier_claims(turn: Turn, order: Order, since: datetime) -> int:
    """The customer's claims since then: the carrier claims the store keeps or, on a
    platform that keeps none, the remedies the bot made for such a problem on any of
    the customer's orders (its own write log)."""
    if "claim" not in turn.store.left_to_people:
        return sum(1 for claim in
                   turn.store.delivery.claims_by_customer(order.customer.customer_id, since)
                   if claim.kind in CUSTOMER_CLAIMS)
    orders = {o.order_id for o in turn.store.orders.orders_for_contact(order.customer.email)}
    return sum(1 for order_id in orders | {order.order_id}
               for write in turn.store.writes.for_order(order_id)
               if write.kind in REMEDY_WRITES and write.status == "done"
               and write.created_at >= since
               and CLAIM_OF_PROBLEM.get(write.params.get("problem", "")) in CUSTOMER_CLAIMS)


def escalate_if_fraud(turn: Turn, order: Order, claim: str) -> bool:
    rule = fraud_rule(turn, order)
    if rule:
        turn.escalate(rule, order, f"Customer claims {claim} on order {order.order_id} "
                                   f"({money(order.total)} {order.currency}).")
    return rule is not None


def paid_less_refunded(turn: Turn, order: Order) -> Decimal:
    refunded = sum((r.amount for r in turn.store.returns.refunds(order.order_id)), Decimal("0"))
    return max(order.total - refunded, Decimal("0"))


def payment_method_name(order: Order, method: str = "original_payment") -> str:
    return PAYMENT_METHODS.get(method, order.payment_method)


# --- the writes ----------------------------------------------------------------------------


class CancelOrder(Change):
    kind = "cancel"

    def refusal(self, turn: Turn, order: Order) -> Optional[Explain]:
        if order.status is OrderStatus.PAID:
            return None
        return lambda: _not_cancellable(turn, order)

    def ask(self, turn: Turn, order: Order) -> None:
        # an order whose payment is not confirmed may have had nothing taken yet
        unpaid = order.holdup is Holdup.PAYMENT
        turn.ask("write", "utter_confirm_cancel_unpaid" if unpaid else "utter_confirm_cancel",
                 {"items": items_text(order.items), "total": money(order.total),
                  "payment_method": order.payment_method}, **self.question_fields())

    def apply(self, turn: Turn, order: Order, key: str) -> None:
        turn.store.orders.cancel_order(order.order_id, reason=f"customer request [{key}]")

    def find(self, turn: Turn, key: str) -> Optional[Found]:
        order = turn.store.orders.get_order(self.order_id)
        if order is None or order.status is not OrderStatus.CANCELLED:
            return None
        refund = turn.store.returns.get_refund(self.order_id)
        if refund is None:
            return {"reference": "", "amount": "", "payment_method": ""}
        return {"reference": refund.refund_id, "amount": money(refund.amount),
                "payment_method": payment_method_name(order, refund.method)}

    def tell(self, turn: Turn, order: Order, found: Mapping[str, str]) -> None:
        if found.get("amount"):
            turn.say("utter_cancelled", order_id=order.order_id, amount=found["amount"],
                     payment_method=found["payment_method"], refund_id=found["reference"])
        else:
            turn.say("utter_cancelled_nothing_paid", order_id=order.order_id)


class ChangeAddress(Change):
    kind = "change_address"

    @property
    def address(self) -> Address:
        return Address(**{name: self.params.get(name, "") for name in
                          ("name", "line1", "line2", "city", "postal_code", "country")})

    def refusal(self, turn: Turn, order: Order) -> Optional[Explain]:
        if order.can_be_changed:
            return None
        return lambda: _address_not_changeable(turn, order)

    def ask(self, turn: Turn, order: Order) -> None:
        turn.ask("write", "utter_confirm_address", {"address": describe(self.address)},
                 **self.question_fields())

    def apply(self, turn: Turn, order: Order, key: str) -> None:
        turn.store.orders.change_shipping_address(order.order_id, self.address)

    def find(self, turn: Turn, key: str) -> Optional[Found]:
        order = turn.store.orders.get_order(self.order_id)
        if order is None or order.shipping_address != self.address:
            return None
        return {"reference": "", "address": describe(order.shipping_address)}

    def tell(self, turn: Turn, order: Order, found: Mapping[str, str]) -> None:
        turn.say("utter_address_changed", order_id=order.order_id, address=found["address"])


class CreateReturn(Change):
    kind = "return"

    def refusal(self, turn: Turn, order: Order) -> Optional[Explain]:
        if turn.store.returns.get_return(order.order_id):
            return lambda: return_status(turn, order)
        facts = {"order_id": order.order_id}
        if order.status is OrderStatus.CANCELLED:
            return lambda: turn.say("utter_nothing_to_return", **facts)
        if order.status is not OrderStatus.DELIVERED:
            return lambda: turn.say("utter_return_not_delivered", **facts)
        if not _within_return_window(turn, order):
            return lambda: _not_eligible(turn, "utter_return_not_eligible_window",
                                         delivered_on=day(order.delivered_at or order.placed_at),
                                         **facts)
        if not any(item.returnable for item in order.items):
            return lambda: _not_eligible(turn, "utter_return_not_eligible_items", **facts)
        return None

    def ask(self, turn: Turn, order: Order) -> None:
        items = ", ".join(f"{i.quantity} x {i.name}" for i in order.items if i.returnable)
        turn.ask("write", "utter_confirm_return",
                 {"items": items, "amount": money(_returnable_amount(order)),
                  "payment_method": order.payment_method}, **self.question_fields())

    def apply(self, turn: Turn, order: Order, key: str) -> None:
        turn.store.returns.create_return(order.order_id, reason=self.params.get("reason", ""))

    def find(self, turn: Turn, key: str) -> Optional[Found]:
        record = turn.store.returns.get_return(self.order_id)
        if record is None:
            return None
        return {"reference": record.rma_id, "label_url": record.label_url,
                "status": record.status.value}

    def tell(self, turn: Turn, order: Order, found: Mapping[str, str]) -> None:
        if found.get("status") == ReturnStatus.REQUESTED.value:  # the shop sends the label
            turn.say("utter_return_requested", rma_id=found["reference"],
                     order_id=order.order_id)
            return
        shipment = turn.store.delivery.get_shipment(order.order_id)
        turn.say("utter_return_created", order_id=order.order_id, rma_id=found["reference"],
                 label_url=found["label_url"], carrier=shipment.carrier if shipment else "UPS",
                 amount=money(_returnable_amount(order)), payment_method=order.payment_method)


class Remedy(Change):
    """A refund, store credit or replacement that puts a problem right: one per order
    and problem. The customer's claim is recorded with it (the fraud rule counts it)."""

    @property
    def problem(self) -> str:
        return self.params.get("problem", "")

    def refusal(self, turn: Turn, order: Order) -> Optional[Explain]:
        earlier = remedy_given(turn, order.order_id, self.problem)
        if earlier is not None:
            return lambda: _remedy_already_given(turn, order, earlier)
        return None

    def record_claim(self, turn: Turn, order: Order) -> None:
        """Where the platform keeps no carrier claims, none is recorded (the fraud rule
        then counts none for this remedy)."""
        claim = CLAIM_OF_PROBLEM.get(self.problem)
        if claim and "claim" not in turn.store.left_to_people \
                and not _claim_of(turn, order.order_id, claim):
            turn.store.delivery.open_claim(order.order_id, claim)


class Refund(Remedy):
    """A refund to the payment method, or store credit (`method`)."""

    kind = "refund"

    @property
    def write_kind(self) -> str:
        return "store_credit" if self.params.get("method") == "store_credit" else "refund"

    @property
    def amount(self) -> Decimal:
        return Decimal(self.params["amount"])

    def refusal(self, turn: Turn, order: Order) -> Optional[Explain]:
        if self.amount > paid_less_refunded(turn, order):
            return lambda: refund_status(turn, order)
        return super().refusal(turn, order)

    def ask(self, turn: Turn, order: Order) -> None:
        method = self.params.get("method", "original_payment")
        response = "utter_confirm_store_credit" if method == "store_credit" else \
            "utter_confirm_refund"
        turn.ask("write", response, {"amount": money(self.amount),
                                     "payment_method": payment_method_name(order, method)},
                 **self.question_fields())

    def apply(self, turn: Turn, order: Order, key: str) -> None:
        self.record_claim(turn, order)
        turn.store.returns.create_refund(order.order_id, self.amount,
                                         f"{self.params.get('reason', '')} [{key}]",
                                         method=self.params.get("method", "original_payment"))

    def find(self, turn: Turn, key: str) -> Optional[Found]:
        refund = next((r for r in turn.store.returns.refunds(self.order_id)
                       if f"[{key}]" in r.reason), None)
        if refund is None:
            return None
        return {"reference": refund.refund_id, "amount": money(refund.amount),
                "method": refund.method, "status": refund.status.value}

    def tell(self, turn: Turn, order: Order, found: Mapping[str, str]) -> None:
        facts = {"order_id": order.order_id, "amount": found["amount"],
                 "refund_id": found["reference"],
                 "payment_method": payment_method_name(order, found["method"])}
        if found["method"] == "store_credit":
            turn.say("utter_remedy_store_credit", **facts)
        elif found["status"] == RefundStatus.ISSUED.value:  # the payment gateway paid it
            turn.say("utter_refund_made_issued", visible_by=day(add_business_days(
                turn.now, turn.policy.refunds.days_to_show)), **facts)
        else:
            turn.say("utter_refund_created", **facts)


class Replacement(Remedy):
    kind = "replacement"

    def refusal(self, turn: Turn, order: Order) -> Optional[Explain]:
        sent = turn.store.orders.replacement_of(order.order_id)
        if sent is not None:
            return lambda: turn.say("utter_replacement_already", order_id=order.order_id,
                                    replacement_id=sent.order_id,
                                    sent_on=day(sent.placed_at))
        return super().refusal(turn, order)

    def ask(self, turn: Turn, order: Order) -> None:
        items = ", ".join(f"{i.quantity} x {i.name}" for i in order.items)
        turn.ask("write", "utter_confirm_replacement", {"items": items},
                 **self.question_fields())

    def apply(self, turn: Turn, order: Order, key: str) -> None:
        self.record_claim(turn, order)
        turn.store.orders.create_replacement(order.order_id, f"{self.problem} [{key}]")

    def find(self, turn: Turn, key: str) -> Optional[Found]:
        sent = turn.store.orders.replacement_of(self.order_id)
        return {"reference": sent.order_id} if sent else None

    def tell(self, turn: Turn, order: Order, found: Mapping[str, str]) -> None:
        turn.say("utter_remedy_replacement", replacement_id=found["reference"])


class OpenClaim(Change):
    """A trace of a stuck parcel, or a claim for one shown delivered but not received."""

    kind = "claim"
    ASKED = {"trace": "utter_offer_trace", "not_received": "utter_offer_claim"}
    OPENED = {"trace": "utter_trace_opened", "not_received": "utter_claim_opened"}
    OPEN = {"trace": "utter_trace_open", "not_received": "utter_claim_open"}
    # the placeholder of the day the customer is promised a replacement or an answer
    PROMISED_BY = {"trace": "trace_until", "not_received": "update_by"}

    @property
    def claim(self) -> str:
        return self.params["claim"]

    @property
    def made_by_hand(self) -> str:
        return ("asking the carrier to trace a parcel" if self.claim == "trace"
                else super().made_by_hand)

    def refusal(self, turn: Turn, order: Order) -> Optional[Explain]:
        existing = _claim_of(turn, order.order_id, self.claim)
        if existing is None:
            return None
        return lambda: self._say(turn, order, self.OPEN[self.claim], existing.claim_id,
                                 existing.created_at)

    def ask(self, turn: Turn, order: Order) -> None:
        turn.ask("write", self.ASKED[self.claim], self._facts(turn, order, turn.now),
                 **self.question_fields())

    def apply(self, turn: Turn, order: Order, key: str) -> None:
        turn.store.delivery.open_claim(order.order_id, self.claim)

    def find(self, turn: Turn, key: str) -> Optional[Found]:
        claim = _claim_of(turn, self.order_id, self.claim)
        if claim is None:
            return None
        return {"reference": claim.claim_id, "opened_at": claim.created_at.isoformat()}

    def tell(self, turn: Turn, order: Order, found: Mapping[str, str]) -> None:
        self._say(turn, order, self.OPENED[self.claim], found["reference"],
                  datetime.fromisoformat(found["opened_at"]))

    def _say(self, turn: Turn, order: Order, response: str, claim_id: str,
             opened: datetime) -> None:
        turn.say(response, claim_id=claim_id, opened_on=day(opened),
                 **self._facts(turn, order, opened))

    def _facts(self, turn: Turn, order: Order, opened: datetime) -> Dict[str, str]:
        shipment = turn.store.delivery.get_shipment(order.order_id)
        facts = {"order_id": order.order_id,
                 self.PROMISED_BY[self.claim]: day(turn.policy.promised_by(self.claim, opened))}
        if shipment is not None:
            facts.update(carrier=shipment.carrier, last_scan=day(last_scan(shipment)),
                         delivered_on=day(shipment.delivered_at or order.placed_at))
        return facts


def _claim_of(turn: Turn, order_id: str, kind: str) -> Optional[CarrierClaim]:
    return next((c for c in turn.store.delivery.claims_for_order(order_id) if c.kind == kind),
                None)


def remedy_given(turn: Turn, order_id: str, problem: str) -> Optional[WriteRecord]:
    """The remedy the bot already gave for this order and problem, if any."""
    return next((w for w in turn.store.writes.for_order(order_id)
                 if w.status == "done" and w.kind in REMEDY_WRITES
                 and w.params.get("problem") == problem), None)


def _remedy_already_given(turn: Turn, order: Order, earlier: WriteRecord) -> None:
    what = (f"replacement order {earlier.reference}" if earlier.kind == "replacement" else
            f"{earlier.after.get('amount', '')} {order.currency} "
            f"{'store credit' if earlier.params.get('method') == 'store_credit' else 'refund'}"
            f" ({earlier.reference})")
    turn.say("utter_remedy_already", order_id=order.order_id, what=what,
             given_on=day(earlier.finished_at or earlier.created_at))
    turn.offer_person("not_eligible", "utter_offer_human")


def _not_eligible(turn: Turn, response: str, **facts: str) -> None:
    turn.say(response, **facts)
    turn.offer_person("not_eligible", "utter_offer_human")


# --- where is my order, delivery problems ---------------------------------------------------


def order_status(turn: Turn, order: Order) -> None:
    shipment = turn.store.delivery.get_shipment(order.order_id)
    # a returned order's parcel is not on its way any more, though it has a shipment
    if order.status in (OrderStatus.PAID, OrderStatus.RETURNED) or shipment is None:
        _status_without_shipment(turn, order)
    elif delivered(order, shipment):
        turn.say("utter_status_delivered", order_id=order.order_id,
                 delivered_on=day(shipment.delivered_at or order.placed_at),
                 **shipment_facts(shipment))
        _rest_to_follow(turn, order)
    elif delivery_exception(turn, order, shipment) is DeliveryException.NONE:
        turn.say("utter_status_in_transit", order_id=order.order_id, **shipment_facts(shipment))
        _rest_to_follow(turn, order)
    else:
        delivery_problem(turn, order)


def _rest_to_follow(turn: Turn, order: Order) -> None:
    """Of an order shipped in part, what the parcel told about does not hold."""
    if order.unshipped:
        turn.say("utter_status_rest_to_follow", items=items_text(order.unshipped))


def _status_without_shipment(turn: Turn, order: Order) -> None:
    facts = {"order_id": order.order_id}
    if order.status is OrderStatus.CANCELLED:
        refund = turn.store.returns.get_refund(order.order_id)
        cancelled_on = day(order.cancelled_at or order.placed_at)
        turn.say("utter_status_cancelled", cancelled_on=cancelled_on, **facts)
        if refund is not None:
            tell_refund(turn, order, refund)
    elif order.status is OrderStatus.RETURNED:
        turn.say("utter_status_returned", **facts)
    elif order.holdup is Holdup.PAYMENT:
        turn.say("utter_status_awaiting_payment", **facts)
    elif order.holdup is Holdup.ON_HOLD:
        turn.say("utter_status_on_hold", **facts)
        turn.offer_person("order_on_hold", "utter_offer_person")
    else:
        turn.say("utter_status_paid", promised_date=day(order.promised_date), **facts)


def delivery_problem(turn: Turn, order: Order) -> None:
    shipment = turn.store.delivery.get_shipment(order.order_id)
    if shipment is None or order.status is not OrderStatus.SHIPPED or \
            delivered(order, shipment):
        order_status(turn, order)
        return
    exception = delivery_exception(turn, order, shipment)
    facts = {"order_id": order.order_id, **shipment_facts(shipment)}
    if exception is DeliveryException.NONE:
        turn.say("utter_not_late", **facts)
    elif exception is DeliveryException.LOST:
        turn.say("utter_parcel_lost", **facts)
        if not escalate_if_fraud(turn, order, "a lost parcel"):
            _remedy_or_escalate(turn, order, "lost")
    else:
        turn.say("utter_status_late", promised_date=day(order.promised_date), **facts)
        _rest_to_follow(turn, order)
        if exception is DeliveryException.STUCK:
            propose(turn, OpenClaim(order.order_id, claim="trace"), order)
        elif shipment.eta >= turn.now.date():
            turn.say("utter_next_step_wait", eta=day(shipment.eta))
        else:  # an estimate already past is no estimate
            turn.say("utter_next_step_no_estimate")


def not_received(turn: Turn, order: Order) -> None:
    shipment = turn.store.delivery.get_shipment(order.order_id)
    if shipment is None or not delivered(order, shipment):
        order_status(turn, order)
        return
    claim = OpenClaim(order.order_id, claim="not_received")
    existing = claim.refusal(turn, order)
    if existing is not None:  # asked again: the open claim, no new one
        existing()
        return
    if escalate_if_fraud(turn, order, "a parcel not received"):
        return
    if order.total >= turn.policy.thresholds.high_value_order:
        turn.escalate("not_received_high_value", order,
                      f"Order {order.order_id} ({money(order.total)} {order.currency}) shows "
                      f"delivered on {day(shipment.delivered_at or turn.now)} but the customer "
                      "says it never arrived.")
        return
    propose(turn, claim, order)


# --- damaged or wrong items and remedies ----------------------------------------------------


def item_problem(turn: Turn, order: Order) -> None:
    problem = turn.slot("request")
    # put right already: a refund in full may have changed the order's status since
    # (WooCommerce marks the order refunded)
    earlier = remedy_given(turn, order.order_id, problem)
    if earlier is not None:
        _remedy_already_given(turn, order, earlier)
        return
    if order.status is OrderStatus.RETURNED:  # delivered, then sent back
        turn.say("utter_status_returned", order_id=order.order_id)
        return
    if order.status is not OrderStatus.DELIVERED:
        shipment = turn.store.delivery.get_shipment(order.order_id)
        eta = day(shipment.eta) if shipment else day(order.promised_date)
        turn.say("utter_item_not_delivered", order_id=order.order_id, eta=eta)
        return
    label = "a damaged item" if problem == "damaged_item" else "a wrong item"
    if not escalate_if_fraud(turn, order, label):
        _remedy_or_escalate(turn, order, problem)


def _remedy_or_escalate(turn: Turn, order: Order, problem: str) -> None:
    earlier = remedy_given(turn, order.order_id, problem)
    if earlier is not None:
        _remedy_already_given(turn, order, earlier)
    elif order.total > turn.policy.thresholds.remedy_auto_max:
        turn.escalate("remedy_above_threshold", order,
                      f"Customer reports {problem.replace('_', ' ')} on order {order.order_id} "
                      f"({money(order.total)} {order.currency}); photo: "
                      f"{turn.slot('photo') or 'not asked'}.")
    else:
        offer_remedies(turn, order, problem)


def remedies_here(turn: Turn, problem: str) -> List[str]:
    """The policy's remedies for the problem that the store's platform takes from the
    bot (on Shopify no replacement or store credit, say)."""
    return [remedy for remedy in getattr(turn.policy.remedies, problem)
            if remedy not in turn.store.left_to_people]


def offer_remedies(turn: Turn, order: Order, problem: str) -> None:
    choices = remedies_here(turn, problem)
    if not choices:
        offer_people(turn, [MADE_BY_HAND[remedy]
                            for remedy in getattr(turn.policy.remedies, problem)])
        return
    turn.ask("remedy", "utter_offer_remedy", order_id=order.order_id, problem=problem,
             buttons=[{"title": REMEDY_TITLES[remedy],
                       "payload": f'/choose_remedy{{"remedy":"{remedy}"}}'}
                      for remedy in choices])


def choose_remedy(turn: Turn, order: Order, problem: str, remedy: Optional[str]) -> None:
    """The customer picked a remedy: ask for the yes to exactly that one."""
    if remedy not in remedies_here(turn, problem):
        offer_remedies(turn, order, problem)
        return
    if remedy == "replacement":
        propose(turn, Replacement(order.order_id, problem=problem), order)
        return
    method = "store_credit" if remedy == "store_credit" else "original_payment"
    _propose_refund(turn, order, paid_less_refunded(turn, order), problem, method)


# --- returns and refunds --------------------------------------------------------------------


def return_item(turn: Turn, order: Order, intro: str = "") -> None:
    propose(turn, CreateReturn(order.order_id, reason=turn.slot("request") or "return_item"),
            order, intro)


def _within_return_window(turn: Turn, order: Order) -> bool:
    delivered = order.delivered_at or order.placed_at
    return turn.now - delivered <= timedelta(days=turn.policy.windows.return_days)


def _returnable_amount(order: Order) -> Decimal:
    return sum((i.unit_price * i.quantity for i in order.items if i.returnable), Decimal("0"))


def return_status(turn: Turn, order: Order) -> None:
    record = turn.store.returns.get_return(order.order_id)
    if record is None:
        if order.status is OrderStatus.DELIVERED:
            return_item(turn, order, intro="utter_no_return")
        else:
            turn.say("utter_no_return_plain", order_id=order.order_id)
        return
    since = record.received_at or record.shipped_at or record.created_at
    turn.say(RETURN_STATE_RESPONSES[record.status], rma_id=record.rma_id,
             order_id=order.order_id, since=day(since), label_url=record.label_url)
    refund = turn.store.returns.get_refund(order.order_id)
    if refund is not None:
        tell_refund(turn, order, refund)


def refund_status(turn: Turn, order: Order) -> None:
    refund = turn.store.returns.get_refund(order.order_id)
    if refund is not None:
        tell_refund(turn, order, refund)
    else:
        _no_refund(turn, order)


def _no_refund(turn: Turn, order: Order) -> None:
    if turn.store.returns.get_return(order.order_id):
        turn.say("utter_refund_after_return", order_id=order.order_id)
    else:
        turn.say("utter_no_refund", order_id=order.order_id)


def tell_refund(turn: Turn, order: Order, refund: RefundRecord) -> None:
    """The refund as the store records it: issued (and when it shows) or pending."""
    facts = {"order_id": order.order_id}
    if refund.status is RefundStatus.ISSUED:
        issued = refund.issued_at or refund.created_at
        turn.say("utter_refund_issued", amount=money(refund.amount), issued_on=day(issued),
                 visible_by=day(add_business_days(issued, turn.policy.refunds.days_to_show)),
                 payment_method=payment_method_name(order, refund.method), **facts)
    else:
        turn.say("utter_refund_pending", amount=money(refund.amount),
                 payment_method=payment_method_name(order, refund.method), **facts)


def refund_request(turn: Turn, order: Order) -> None:
    refund = turn.store.returns.get_refund(order.order_id)
    if refund is not None:
        tell_refund(turn, order, refund)
    elif order.status is OrderStatus.CANCELLED:
        _no_refund(turn, order)
    elif order.status is OrderStatus.PAID:
        propose(turn, CancelOrder(order.order_id), order, intro="utter_refund_cancel_instead")
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
        return_item(turn, order, intro="utter_refund_needs_return")
    elif record.status in NOT_SENT_BACK:
        turn.escalate("stop_the_line_refund_before_return", order,
                      f"Customer asks for a refund on {order.order_id} but return "
                      f"{record.rma_id} has not been shipped yet; no refund was made.")
    elif not escalate_if_fraud(turn, order, "a refund"):
        _propose_refund(turn, order, _returnable_amount(order), "", "original_payment")


def _propose_refund(turn: Turn, order: Order, amount: Decimal, problem: str,
                    method: str) -> None:
    """Above the auto-approve limit a person decides; else the yes is asked for."""
    if amount > turn.policy.thresholds.refund_auto_approve_max:
        turn.escalate("refund_above_threshold", order,
                      f"Refund of {money(amount)} {order.currency} asked on order "
                      f"{order.order_id} ({problem or 'return'}); above the auto-approve "
                      "limit.")
        return
    propose(turn, Refund(order.order_id, amount=money(amount), method=method, problem=problem,
                         reason=problem or "refund_request"), order)


# --- cancellations and changes --------------------------------------------------------------


def cancel_order(turn: Turn, order: Order) -> None:
    propose(turn, CancelOrder(order.order_id), order)


def _not_cancellable(turn: Turn, order: Order) -> None:
    facts = {"order_id": order.order_id}
    if order.status is OrderStatus.SHIPPED:
        turn.say("utter_cannot_cancel_shipped", **facts)
    elif order.status is OrderStatus.DELIVERED:
        return_item(turn, order, intro="utter_cannot_cancel_delivered")
    elif order.status is OrderStatus.CANCELLED:
        turn.say("utter_already_cancelled", **facts)
    else:
        turn.say("utter_status_returned", **facts)


def change_address(turn: Turn, order: Order) -> None:
    if not order.can_be_changed:
        _address_not_changeable(turn, order)
        return
    address = read_address(turn.slot("new_address") or "", order.shipping_address.name).address
    if address is None:  # the form always validates it; this guards a direct call
        turn.say("utter_ask_new_address")
        return
    propose(turn, ChangeAddress(order.order_id, **_address_params(address)), order)


def _address_params(address: Address) -> Dict[str, str]:
    return {"name": address.name, "line1": address.line1, "line2": address.line2,
            "city": address.city, "postal_code": address.postal_code,
            "country": address.country}


def _address_not_changeable(turn: Turn, order: Order) -> None:
    shipment = turn.store.delivery.get_shipment(order.order_id)
    if shipment is not None and order.status is OrderStatus.SHIPPED:
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
