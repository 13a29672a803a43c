"""The runs: find who to reach, claim them once, message them through the gateway's own path."""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
)

import sqlalchemy as sa

from actions.store.types import (
    Order,
    StoreSystems,
    Tracking,
)
from bot.handoff.desk import HandoffDesk, Place, Send
from bot.handoff.events import EventBus, EventType
from bot.handoff.policy import BusinessHours, describe_opening
from bot.handoff.store import HandoffStore
from bot.messaging.records import GatewayRecords, insert_if_absent
from bot.outreach.directory import Conversation, Directory, read_directory
from bot.outreach.policy import (
    BUYER_STATUSES,
    CARRIER_KIND,
    PRODUCT_KIND,
    PROMISE_KIND,
    STALE_PROMISE_CLAIM_SECONDS,
    MonitorName,
    MonitorPolicy,
)
from bot.outreach.products import contacts_by_sku, recent_alerts, record_alert
from bot.outreach.promises import find_promises, promise_target
from bot.outreach.report import Attempt, Result, RunReport, Target, outcome
from bot.outreach.shipments import (
    Lost,
    as_one_turn,
    carrier_exception,
    find_shipment_exceptions,
    first_name,
    shipment_facts,
)
from bot.outreach.tables import metadata, outreach
from bot.router import Router
from common.sql import create_tables
from connectors.message import Delivery, Reply
from connectors.whatsapp import SERVICE_WINDOW_SECONDS

log = logging.getLogger("bot.outreach")


class Outreach:
    """One run of a monitor. Database work runs on the records' threads; sends go
    through `send`, the router's delivery."""

    def __init__(self, policy: MonitorPolicy, records: GatewayRecords, shop: StoreSystems,
                 desk: HandoffDesk, send: Send, bus: EventBus,
                 hours: Optional[BusinessHours] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.escalation = desk.escalation
        # customers' phone numbers are read as the bot reads them (escalation.yml)
        self.phone_region = self.escalation.identity.default_phone_region
        self.records = records
        self.shop = shop
        self.desk = desk
        self.handoffs: HandoffStore = desk.store
        self.send = send
        self.bus = bus
        self.hours = hours
        self.clock = clock
        create_tables(metadata, records.engine)

    @classmethod
    def for_router(cls, router: Router, shop: StoreSystems,
                   policy: MonitorPolicy) -> Outreach:
        """Through the gateway's router: its delivery, records, handoffs, event bus and
        business hours."""
        desk = router.desk
        return cls(policy, router.records, shop, desk, router.deliver, desk.bus,
                   desk.policy.business_hours, desk.clock)

    async def run(self, monitor: MonitorName) -> RunReport:
        runs = {"shipments": self.shipments, "products": self.products,
                "promises": self.promises}
        return await runs[monitor]()

    def _report(self, monitor: MonitorName, now: float) -> RunReport:
        """An empty report, which says whether this is outside business hours."""
        report = RunReport(monitor, now)
        if self.policy.only_in_business_hours and self.hours is not None:
            moment = datetime.fromtimestamp(now, timezone.utc)
            opens = self.hours.next_open(moment)
            if opens > moment:
                report.outside_hours = True
                report.opens = describe_opening(opens, moment, self.hours.timezone)
        return report

    # shipments

    async def shipments(self) -> RunReport:
        now = self.clock()
        moment = datetime.fromtimestamp(now, timezone.utc)
        settings = self.policy.shipments
        report = self._report("shipments", now)
        found, report.lost = await self.records.read(
            as_one_turn, self.shop, find_shipment_exceptions, self.shop, settings, moment)
        targets = [Target(subject=f.order.order_id, kinds=f.kinds,
                          texts={kind: getattr(settings.texts, kind).format(
                              **shipment_facts(f, moment)) for kind in f.kinds},
                          customer=f.order.customer, order_id=f.order.order_id)
                   for f in found]
        report.attempts = await self._reach_all(targets, report.outside_hours)
        log.info("%s", report.summary())
        return report

    async def carrier_reported(self, order_id: str, tracking: Tracking) -> RunReport:
        """What the carrier reported of the order's parcel (a tracking webhook, or a
        store platform's fulfilment event): a delivery exception is told to the customer
        at once, under the shipments' policy and their once-per-order-and-exception
        guard; a parcel lost or sent back is listed for people, as the scan lists it."""
        now = self.clock()
        moment = datetime.fromtimestamp(now, timezone.utc)
        settings = self.policy.shipments
        report = self._report("shipments", now)
        found = await self.records.read(carrier_exception, self.shop, order_id,
                                        tracking, settings, moment)
        if isinstance(found, Lost):
            report.lost = [order_id]
            log.warning("monitor: the carrier reports order %s's parcel %s: for people",
                        order_id, tracking.status.value.replace("_", " "))
        elif found is not None:
            facts = shipment_facts(found, moment)
            texts = {kind: (settings.texts.carrier_exception if kind == CARRIER_KIND
                            else getattr(settings.texts, kind)).format(**facts)
                     for kind in found.kinds}
            report.attempts = await self._reach_all(
                [Target(subject=order_id, kinds=found.kinds, texts=texts,
                        customer=found.order.customer, order_id=order_id)],
                report.outside_hours)
        log.info("%s", report.summary())
        return report

    # products

    async def products(self) -> RunReport:
        now = self.clock()
        settings = self.policy.products
        report = self._report("products", now)
        window = settings.window_hours * 3600
        by_sku = await self.records.read(contacts_by_sku, self.records.engine, self.shop,
                                         now - window, now)
        report.contacts = {sku: len(c.conversations) for sku, c in sorted(by_sku.items())}
        for found in sorted(by_sku.values(), key=lambda c: c.sku):
            if len(found.conversations) < settings.threshold:
                continue
            alert = await self.records.write(record_alert, self.records.engine, found,
                                             settings, now)
            if alert is not None:
                report.alerts.append(alert)
                await self._announce(alert)
        if settings.message_buyers:
            report.attempts = await self._reach_all(await self._buyer_targets(now),
                                                    report.outside_hours)
        log.info("%s", report.summary())
        return report

    async def _announce(self, alert: Dict[str, Any]) -> None:
        """Consoles hear it on the handoff event bus (through Redis, every gateway's);
        operators in the log."""
        log.warning("monitor alert: %s (%s): %d conversations in %d h, threshold %d",
                    alert["sku"], alert["product"], alert["contacts"], alert["window_hours"],
                    alert["threshold"])
        public = {k: v for k, v in alert.items() if k != "fired_at_epoch"}
        await self.bus.publish({"type": EventType.MONITOR_ALERT, "alert": {
            **public, "message_buyers": self.policy.products.message_buyers}})

    async def _buyer_targets(self, now: float) -> List[Target]:
        """The buyers of every SKU alerted within the window, one message per alert and
        customer (about their newest order with it); an alert whose buyers were not all
        reachable on its first run is taken up again on the next ones."""
        settings = self.policy.products
        fired = await self.records.read(recent_alerts, self.records.engine,
                                        now - settings.window_hours * 3600)
        if not fired:
            return []
        since = datetime.fromtimestamp(now, timezone.utc) - timedelta(
            days=settings.buyers_within_days)
        recent = await self.records.read(self.shop.orders.orders_since, since)
        targets: List[Target] = []
        for alert in sorted(fired, key=lambda a: a["id"]):
            newest: Dict[int, Tuple[Order, str]] = {}
            for order in recent:  # newest first
                if order.status not in BUYER_STATUSES:
                    continue
                for item in order.items:
                    if item.sku == alert["sku"]:
                        newest.setdefault(order.customer.customer_id, (order, item.name))
            for customer_id, (order, product) in sorted(newest.items()):
                text = settings.texts.buyers.format(
                    first_name=first_name(order.customer), order_id=order.order_id,
                    product=product, sku=alert["sku"])
                targets.append(Target(subject=f"{alert['id']}:{customer_id}",
                                      kinds=(PRODUCT_KIND,), texts={PRODUCT_KIND: text},
                                      customer=order.customer, order_id=order.order_id,
                                      sku=alert["sku"]))
        return targets

    # promises

    async def promises(self) -> RunReport:
        now = self.clock()
        settings = self.policy.promises
        report = self._report("promises", now)
        due, report.nothing_due = await self.records.read(
            find_promises, self.shop, self.escalation, settings,
            datetime.fromtimestamp(now, timezone.utc))
        targets = [promise_target(promise, settings, self.escalation) for promise in due]
        report.attempts = await self._reach_all(targets, report.outside_hours)
        for attempt in report.attempts:
            if attempt.result == "no_conversation":  # nobody has it: say so every run
                log.warning("monitor: promise %s is due and no conversation of the customer "
                            "is known; a person must take it up", attempt.label)
        log.info("%s", report.summary())
        return report

    # reaching customers

    async def _reach_all(self, targets: Sequence[Target], outside_hours: bool) -> List[Attempt]:
        if outside_hours:
            return [Attempt(t.label, t.kinds[0], "outside_hours") for t in targets]
        directory = await self.records.read(read_directory, self.records.engine,
                                            self.phone_region)
        # one at a time: the channels' rate limits pace them anyway
        return [await (self._hand_over(target, directory) if target.handoff is not None
                       else self._reach(target, directory)) for target in targets]

    async def _reach(self, target: Target, directory: Directory) -> Attempt:
        claimed = await self.records.read(self._claimed_kinds, target)
        unclaimed = [kind for kind in target.kinds if kind not in claimed]
        if not unclaimed:
            return Attempt(target.label, target.kinds[0], "already_messaged")
        where = await self._where_to_send(unclaimed[0], target,
                                          directory.last_used(target.customer))
        if isinstance(where, Attempt):
            return where
        conversation = where
        kinds = await self.records.write(self._claim, target, conversation)
        if not kinds:  # another gateway (or run) got there first
            return Attempt(target.label, unclaimed[0], "already_messaged")
        result = await self._send_claimed(target, kinds, conversation)
        log.info("monitor: %s %s to %s: %s", kinds[0], target.label, conversation.masked,
                 result)
        return Attempt(target.label, kinds[0], result)

    async def _hand_over(self, target: Target, directory: Directory) -> Attempt:
        """A due promise: claimed like a message (once across runs and gateways), then
        handed to a person in the customer's last conversation, then the customer is
        told. Nothing is claimed while no conversation is known or a person has it, so
        a later run hands it over. Once the handoff is open the promise is handled,
        whether or not the message reaches the customer: the person writes to them."""
        kind = target.kinds[0]
        assert target.handoff is not None

        def attempt(result: Result, handoff: str = "") -> Attempt:
            return Attempt(target.label, kind, result, handoff)

        await self.records.write(self._drop_stale_claim, target)
        if await self.records.read(self._claimed_kinds, target):
            return attempt("already_handled")
        conversation = directory.last_used(target.customer)
        if conversation is None:
            return attempt("no_conversation")
        if await self._with_agent(conversation):
            return attempt("with_agent")
        if not await self.records.write(self._claim, target, conversation):
            return attempt("already_handled")
        place = Place(conversation.connector, conversation.channel, conversation.sender)
        opened = await self.desk.follow_up(place, dict(target.handoff))
        if opened is None:  # the customer reached a person meanwhile: theirs for now
            await self.records.write(self._release, target, [kind])
            return attempt("with_agent")
        handoff = f"H-{opened['id']}"
        await self.records.write(self._settle, target, kind, "handed_over", [], handoff)
        unsendable = await self._unsendable(conversation)
        if unsendable is not None:
            await self.records.write(self._settle, target, kind, unsendable, [], handoff)
            result = unsendable
        else:
            result = await self._send_claimed(target, [kind], conversation, handoff)
        log.info("monitor: promise %s handed over as %s in %s; customer: %s", target.label,
                 handoff, conversation.masked, result)
        return attempt(result, handoff)

    async def _send_claimed(self, target: Target, kinds: Sequence[str],
                            conversation: Conversation, handoff: str = "") -> Result:
        """Send the claimed message and record what became of it."""
        deliveries = await self.send(conversation.connector, conversation.sender,
                                     [Reply(text=target.texts[kinds[0]])], "bot")
        result = outcome(deliveries)
        if result == "not_attempted" and target.handoff is None:
            await self.records.write(self._release, target, kinds)
        else:  # a promise's handoff is open: it is not handed over again
            await self.records.write(self._settle, target, kinds[0], result, deliveries,
                                     handoff)
        return result

    async def _where_to_send(self, kind: str, target: Target,
                    conversation: Optional[Conversation]) -> Conversation | Attempt:
        """The conversation to send on, or why not (nothing is claimed then, so a later
        run sends once the reason is gone)."""
        if conversation is None:
            return Attempt(target.label, kind, "no_conversation")
        if await self._with_agent(conversation):
            return Attempt(target.label, kind, "with_agent")
        unsendable = await self._unsendable(conversation)
        return conversation if unsendable is None else Attempt(target.label, kind, unsendable)

    async def _with_agent(self, conversation: Conversation) -> bool:
        return await self.records.read(self.handoffs.open_for,
                                       conversation.conversation_id) is not None

    async def _unsendable(self, conversation: Conversation) -> Optional[Result]:
        """Why the monitor may not write on the conversation now, if it may not."""
        if await self.records.read(self._opted_out, conversation):
            return "opted_out"
        if conversation.connector == "twilio" and conversation.channel == "whatsapp" and \
                self.clock() - conversation.last_inbound_at >= SERVICE_WINDOW_SECONDS:
            # the Twilio connector has no template to send instead of free text
            return "window_closed"
        return None

    def _opted_out(self, conversation: Conversation) -> bool:
        since = self.records.opted_out_since(conversation.connector, conversation.sender)
        if since is None:
            return False
        # a Telegram chat that blocked the bot receives again once it writes
        # (connectors/telegram.py); other opt-outs last until the customer opts in
        return not (conversation.connector == "telegram"
                    and conversation.last_inbound_at > since)

    def _claimed_kinds(self, target: Target) -> Set[str]:
        with self.records.engine.connect() as db:
            return set(db.execute(sa.select(outreach.c.kind).where(
                outreach.c.subject == target.subject,
                outreach.c.kind.in_(target.kinds))).scalars())

    def _claim(self, target: Target, conversation: Conversation) -> List[str]:
        """Claim the target's unclaimed kinds in one transaction: the first one claimed
        is the message ("sending"), the rest are covered by it. [] when none was left."""
        now = self.clock()
        claimed: List[str] = []
        with self.records.engine.begin() as db:
            for kind in target.kinds:
                if insert_if_absent(db, outreach, {
                    "kind": kind, "subject": target.subject, "order_id": target.order_id,
                    "sku": target.sku, "customer_id": target.customer.customer_id,
                    "conversation_id": conversation.conversation_id,
                    "status": "covered" if claimed else "sending",
                    "detail": json.dumps({"by": claimed[0]} if claimed else {}),
                    "created_at": now, "updated_at": now,
                }):
                    claimed.append(kind)
        return claimed

    def _settle(self, target: Target, kind: str, result: str,
                deliveries: Sequence[Delivery], handoff: str = "") -> None:
        detail: Dict[str, Any] = {"deliveries": [{"status": d.status, "error": d.error[:200],
                                                  "template": d.template} for d in deliveries]}
        if handoff:
            detail["handoff"] = handoff
        with self.records.engine.begin() as db:
            db.execute(outreach.update().where(
                outreach.c.kind == kind, outreach.c.subject == target.subject).values(
                status=result, detail=json.dumps(detail), updated_at=self.clock()))

    def _drop_stale_claim(self, target: Target) -> None:
        """Forget the promise's claim if it is still "sending" long after it was made:
        its handoff never opened. Only that row, so of two gateways finding it stale,
        the one that claims it afresh first keeps it."""
        with self.records.engine.begin() as db:
            db.execute(outreach.delete().where(
                outreach.c.kind == PROMISE_KIND, outreach.c.subject == target.subject,
                outreach.c.status == "sending",
                outreach.c.updated_at < self.clock() - STALE_PROMISE_CLAIM_SECONDS))

    def _release(self, target: Target, kinds: Sequence[str]) -> None:
        """Nothing was done (the channel is off here, or a person took the conversation
        before the promise's handoff opened): the next run may do it."""
        with self.records.engine.begin() as db:
            db.execute(outreach.delete().where(outreach.c.subject == target.subject,
                                               outreach.c.kind.in_(list(kinds))))

    async def alerts(self, days: int = 7) -> List[Dict[str, Any]]:
        return await self.records.read(recent_alerts, self.records.engine,
                                       self.clock() - days * 86400)
