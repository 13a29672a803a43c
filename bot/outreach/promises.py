"""Promises the bot made (carrier traces, not-received claims) that fall due."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import (
    Dict,
    List,
    Optional,
    Tuple,
)

from actions.policy import PROMISE_WINDOWS, EscalationPolicy
from actions.store.types import (
    REMEDY_WRITES,
    CarrierClaim,
    Hold,
    Order,
    Shipment,
    StoreSystems,
)
from bot.outreach.policy import NOTHING_DUE, PROMISE_KIND, PROMISE_RULE, PromiseSettings
from bot.outreach.report import Target
from bot.outreach.shipments import day, first_name


@dataclass(frozen=True)
class DuePromise:
    claim: CarrierClaim
    order: Order
    shipment: Shipment
    due: date
    hold: Optional[Hold]

    @property
    def last_scan(self) -> datetime:
        latest = self.shipment.latest_event
        return latest.time if latest else self.shipment.shipped_at


def moved_since(shipment: Shipment, since: datetime) -> bool:
    latest = shipment.latest_event
    return shipment.delivered_at is not None or (latest is not None and latest.time > since)


def remedied(shop: StoreSystems, order_id: str) -> bool:
    """The order has a replacement or a refund, or the bot's write of one is under way or
    unconfirmed (then a person already checks it: write_unconfirmed)."""
    if shop.orders.replacement_of(order_id) is not None or shop.returns.refunds(order_id):
        return True
    return any(w.kind in REMEDY_WRITES and w.status != "refused"
               for w in shop.writes.for_order(order_id))


def find_promises(shop: StoreSystems, escalation: EscalationPolicy, settings: PromiseSettings,
                  now: datetime) -> Tuple[List[DuePromise], Dict[str, List[str]]]:
    """The promises due today, oldest first, from fresh store state; and the claim ids
    of the others by why nothing is due (NOTHING_DUE)."""
    since = now - timedelta(days=settings.look_back_days)
    due: List[DuePromise] = []
    nothing: Dict[str, List[str]] = {reason: [] for reason in NOTHING_DUE}
    for claim in shop.delivery.claims_opened(since, tuple(PROMISE_WINDOWS)):
        order = shop.orders.get_order(claim.order_id)
        shipment = shop.delivery.get_shipment(claim.order_id)
        if order is None or shipment is None:  # the store opens claims on shipments only
            continue
        falls_due = escalation.promised_by(claim.kind, claim.created_at)
        if now.date() < falls_due:
            nothing["not_yet"].append(claim.claim_id)
        elif claim.kind == "trace" and moved_since(shipment, claim.created_at):
            nothing["moved"].append(claim.claim_id)
        elif remedied(shop, order.order_id):
            nothing["kept"].append(claim.claim_id)
        else:
            due.append(DuePromise(claim, order, shipment, falls_due,
                                  shop.writes.hold_on(order.order_id)))
    return due, nothing


def promise_facts(promise: DuePromise) -> Dict[str, str]:
    order, shipment, claim = promise.order, promise.shipment, promise.claim
    return {
        "first_name": first_name(order.customer), "order_id": order.order_id,
        "claim_id": claim.claim_id, "carrier": shipment.carrier,
        "tracking_number": shipment.tracking_number, "tracking_url": shipment.tracking_url,
        "opened_on": day(claim.created_at.date()), "due": day(promise.due),
        "last_scan": day(promise.last_scan.date()),
    }


def promise_target(promise: DuePromise, settings: PromiseSettings,
                   escalation: EscalationPolicy) -> Target:
    """The customer to tell, with the handoff to open first. An order on hold goes to
    the team of its hold's rule, and the customer hears no promise."""
    facts = promise_facts(promise)
    hold = promise.hold
    which = "on_hold" if hold else promise.claim.kind
    reason = escalation.rule(PROMISE_RULE)
    team = escalation.rules.get(hold.rule, reason) if hold else reason
    what = (f"Promise due {facts['due']}: {promise.claim.kind.replace('_', '-')} claim "
            f"{facts['claim_id']} opened {facts['opened_on']}; last carrier scan "
            f"{facts['last_scan']}; no replacement or refund yet"
            + (f"; order on hold ({hold.rule}) since {day(hold.created_at.date())}" if hold
               else ""))
    handoff = {
        "reason_code": reason.reason, "rule": PROMISE_RULE, "tier": team.tier,
        "queue": team.team, "customer_name": promise.order.customer.name,
        # linked by the phone on the order, or by a verified handoff (read_directory)
        "customer_verified": True, "customer_contact": "",
        "order_id": promise.order.order_id, "slots": {}, "actions_attempted": [],
        "summary": {"what_happened": what,
                    "next": getattr(settings.next_steps, which).format(
                        **facts, hold_rule=hold.rule if hold else ""),
                    "eta": escalation.tiers[team.tier].team_reply},
    }
    return Target(subject=promise.claim.claim_id, kinds=(PROMISE_KIND,),
                  texts={PROMISE_KIND: getattr(settings.texts, which).format(**facts)},
                  customer=promise.order.customer, order_id=promise.order.order_id,
                  handoff=handoff)
