"""The store systems on a Shopify shop: Shopify's orders, fulfilments and refunds read
into the project's types (actions/store/types.py), and the bot's writes made with
Shopify's mutations.

Order numbers: the bot names orders by a letter and digits ('A1001'); a Shopify order
named '#1001' is the bot's order 'A1001', the letter being the policy's
`identity.order_number_letter`.
"""
from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from actions.store.cache import OrderCache, TurnReads, forgets_the_turn
from actions.store.shopify import documents as doc
from actions.store.shopify.client import ShopifyClient
from actions.store.types import (
    Address,
    CarrierClaim,
    Customer,
    DeliveryException,
    Holdup,
    Order,
    OrderItem,
    OrderStatus,
    PlatformPolicy,
    Refund,
    RefundStatus,
    ReturnRecord,
    ReturnStatus,
    Shipment,
    StoreError,
    StoreUnavailable,
    TrackingEvent,
    find_shipped_as,
    normalize_order_id,
)

log = logging.getLogger("actions.store.shopify")

CENT = Decimal("0.01")
# an undelivered parcel without a carrier scan for this long is stuck
STUCK_AFTER_DAYS = 5
# how long an orderCancel job may take before the bot stops waiting and a person checks
# (inside the gateway's wait for the turn: client.py)
JOB_PATIENCE_SECONDS = 5.0
JOB_POLL_SECONDS = 0.5
MAX_PAGES = 100

Node = Mapping[str, Any]


class ShopifyOrders:
    """OrderSystem."""

    def __init__(self, client: ShopifyClient, platform: PlatformPolicy,
                 sleep: Callable[[float], None] = time.sleep,
                 cache: Optional[OrderCache] = None) -> None:
        self._client = client
        self._letter = platform.order_letter.upper()
        self.delivery_days = platform.delivery_days
        self._sleep = sleep
        # the orders read in the current turn, per worker thread (begin_turn), and kept
        # across turns in the order cache; outside a turn (the gateway, the tests of the
        # store) every read asks Shopify
        self.reads = TurnReads("shopify", cache)

    def begin_turn(self) -> None:
        self.reads.begin_turn()

    def end_turn(self) -> None:
        self.reads.end_turn()

    def get_order(self, order_id: str) -> Optional[Order]:
        node = self.order_node(order_id)
        return None if node is None else self.from_node(node)

    def order_node(self, order_id: str) -> Optional[Node]:
        """The order's node as Shopify answers it, found by its number (once a turn)."""
        canonical = normalize_order_id(order_id)
        if canonical is None or canonical[0] != self._letter:
            return None
        number = canonical[1:]

        def read() -> Optional[Node]:
            page = self._client.execute(doc.ORDERS, {"query": f"name:{number}", "first": 1})
            nodes = page["orders"]["nodes"]
            return dict(nodes[0]) if nodes and _digits(nodes[0]["name"]) == number else None

        node: Optional[Node] = self.reads.read(number, "order", read,
                                               lambda n: str(_numeric_id(n["id"])))
        return node

    def forget_turn(self) -> None:
        """A write changes the order: what this turn read of it is no longer true."""
        self.reads.forget_turn()

    def forget(self, order_id: str) -> None:
        """A write changed the order (or may have): what this turn read and what the
        order cache kept of it are no longer true."""
        self.reads.forget_order(order_id, self._letter)

    def orders_for_contact(self, contact: str) -> list[Order]:
        """Orders by the customer's email; by phone through the customer (Shopify's
        order search has no phone filter)."""
        contact = (contact or "").strip()
        if "@" in contact:
            return self._search(f'email:"{_quoted(contact.lower())}"')
        if not contact.startswith("+") or not _digits(contact):
            return []
        wanted = _digits(contact)
        found = self._client.execute(doc.CUSTOMERS_BY_PHONE,
                                     {"query": f'phone:"{_quoted(contact)}"'})
        ids = [_numeric_id(c["id"]) for c in found["customers"]["nodes"]
               if _digits(c.get("phone") or "") == wanted]  # compared whole
        return [order for cid in ids for order in self._search(f"customer_id:{cid}")]

    def orders_since(self, since: datetime,
                     status: Optional[OrderStatus] = None) -> list[Order]:
        """In a given status: the orders' states read lightly first, then only those
        orders whole (a monitor's scan of weeks of orders, most of them delivered, would
        otherwise spend the shop's rate limit on orders it leaves)."""
        query = f"created_at:>='{since.isoformat()}'"
        if status is None:
            found = self._search(query)
        else:
            wanted = [_digits(node["name"]) for node in self._pages(
                doc.ORDER_STATES, query, doc.STATES_PER_PAGE)
                if _status(node, _fulfillments(node)) is status]
            found = [order for start in range(0, len(wanted), doc.ORDERS_PER_PAGE)
                     for order in self._search(" OR ".join(
                         f"name:{number}" for number in
                         wanted[start:start + doc.ORDERS_PER_PAGE]))]
        return [o for o in found if o.placed_at >= since
                and (status is None or o.status is status)]

    @forgets_the_turn
    def cancel_order(self, order_id: str, reason: str) -> Order:
        """Cancel an unshipped order, refunding what was paid to its payment methods and
        restocking; Shopify cancels in a job, waited for before reading the order again."""
        node = self._changeable(order_id, "cancelled")
        answer = self._client.execute(doc.ORDER_CANCEL, {
            "orderId": node["id"], "reason": "CUSTOMER", "staffNote": reason[:255]})
        result = answer["orderCancel"]
        _refuse_on(result.get("orderCancelUserErrors"))
        job = result.get("job") or {}
        self._wait_for(job)
        return self._reread(order_id)

    @forgets_the_turn
    def change_shipping_address(self, order_id: str, address: Address) -> Order:
        """Set the shipping address of an unshipped order. Shopify has been seen to
        accept this and not apply it: the caller reads back (actions/guarded.py)."""
        node = self._changeable(order_id, "redirected")
        first, _, last = address.name.strip().rpartition(" ")
        answer = self._client.execute(doc.ORDER_UPDATE, {"input": {
            "id": node["id"],
            "shippingAddress": {"firstName": first, "lastName": last or address.name,
                                "address1": address.line1, "address2": address.line2,
                                "city": address.city, "zip": address.postal_code,
                                "countryCode": address.country}}})
        _refuse_on(answer["orderUpdate"].get("userErrors"))
        return self._reread(order_id)

    def create_replacement(self, order_id: str, reason: str) -> Order:
        raise StoreError("free replacements are not made through Shopify by the bot: "
                         "a person creates the order")

    def replacement_of(self, order_id: str) -> Optional[Order]:
        return None

    def customers_shipping_to(self, address: Address) -> int:
        """Shopify's order search cannot count customers by delivery address: not
        checked with this backend (see docs/stores.md)."""
        return 0

    # -- helpers --

    def _changeable(self, order_id: str, change: str) -> Node:
        node = self.order_node(order_id)
        if node is None:
            raise StoreError(f"unknown order {order_id!r}")
        order = self.from_node(node)
        if not order.can_be_changed:
            raise StoreError(f"order {order.order_id} is {order.status.value}: it cannot be "
                             f"{change} any more")
        return node

    def _wait_for(self, job: Node) -> None:
        waited = 0.0
        while not job.get("done"):
            if waited >= JOB_PATIENCE_SECONDS:
                raise StoreUnavailable(f"Shopify's job {job.get('id')} was not done after "
                                       f"{JOB_PATIENCE_SECONDS:.0f} s")
            self._sleep(JOB_POLL_SECONDS)
            waited += JOB_POLL_SECONDS
            job = self._client.execute(doc.JOB, {"id": job["id"]})["job"] or {}

    def _reread(self, order_id: str) -> Order:
        self.forget_turn()  # what the turn read before the write is no longer true
        order = self.get_order(order_id)
        if order is None:
            raise StoreUnavailable(f"order {order_id} not found on reading back")
        return order

    def _search(self, query: str) -> list[Order]:
        found: list[Order] = []
        for node in self._pages(doc.ORDERS, query, doc.ORDERS_PER_PAGE):
            self.reads.keep(_digits(node["name"]), "order", dict(node))  # for the turn
            found.append(self.from_node(node))
        return found

    def _pages(self, document: str, query: str, first: int) -> Iterator[Node]:
        """The nodes of every page the search finds, newest first."""
        after: Optional[str] = None
        for _ in range(MAX_PAGES):
            page = self._client.execute(document, {"query": query, "after": after,
                                                   "first": first})["orders"]
            yield from page["nodes"]
            if not page["pageInfo"]["hasNextPage"]:
                return
            after = page["pageInfo"]["endCursor"]
        log.warning("stopped reading Shopify orders after %d pages", MAX_PAGES)

    def from_node(self, node: Node) -> Order:
        """The order as the bot sees it, from Shopify's answer."""
        fulfillments = _fulfillments(node)
        status = _status(node, fulfillments)
        shipped = [_time(f["createdAt"]) for f in fulfillments]
        delivered = [_time(f["deliveredAt"]) for f in fulfillments if f.get("deliveredAt")]
        placed = _time(node["createdAt"])
        customer = node.get("customer") or {}
        return Order(
            order_id=f"{self._letter}{_digits(node['name'])}",
            customer=Customer(customer_id=_numeric_id(customer.get("id", "0")),
                              name=customer.get("displayName") or "",
                              email=customer.get("email") or "",
                              phone=customer.get("phone") or ""),
            status=status,
            placed_at=placed,
            promised_date=(placed + timedelta(days=self.delivery_days)).date(),
            total=_money(node["totalPriceSet"]),
            currency=node["totalPriceSet"]["shopMoney"]["currencyCode"],
            payment_method=(node.get("paymentGatewayNames") or ["unknown"])[0],
            shipping_address=_address(node.get("shippingAddress")),
            billing_address=_address(node.get("billingAddress")),
            items=tuple(_item(i, int(i["quantity"])) for i in node["lineItems"]["nodes"]),
            shipped_at=min(shipped) if shipped else None,
            delivered_at=max(delivered) if delivered and status in (
                OrderStatus.DELIVERED, OrderStatus.RETURNED) else None,
            cancelled_at=_time(node["cancelledAt"]) if node.get("cancelledAt") else None,
            holdup=_holdup(node) if status is OrderStatus.PAID else Holdup.NONE,
            # what a partial fulfilment left to ship (nothing of an order not shipped)
            unshipped=tuple(_item(i, int(i["unfulfilledQuantity"]))
                            for i in node["lineItems"]["nodes"]
                            if int(i["unfulfilledQuantity"]) > 0)
            if status is OrderStatus.SHIPPED else (),
        )


class ShopifyDelivery:
    """DeliverySystem: shipments are Shopify's fulfilments. Carrier claims and traces
    are not made through Shopify (it has none): a person opens them."""

    def __init__(self, orders: ShopifyOrders, clock: Callable[[], datetime]) -> None:
        self._orders = orders
        self._clock = clock

    def get_shipment(self, order_id: str) -> Optional[Shipment]:
        found = self.shipments(order_id)
        return found[-1] if found else None

    def shipments(self, order_id: str) -> list[Shipment]:
        node = self._orders.order_node(order_id)
        if node is None:
            return []
        order_id = self._orders.from_node(node).order_id
        return [self._shipment(order_id, f) for f in _fulfillments(node)]

    def open_claim(self, order_id: str, kind: str) -> CarrierClaim:
        raise StoreError("carrier claims are not opened through Shopify: a person opens "
                         "them with the carrier")

    def claims_by_customer(self, customer_id: int, since: datetime) -> list[CarrierClaim]:
        return []

    def claims_for_order(self, order_id: str) -> list[CarrierClaim]:
        return []

    def claims_opened(self, since: datetime, kinds: Sequence[str]) -> list[CarrierClaim]:
        return []

    def order_shipped_as(self, tracking_number: str, since: datetime) -> Optional[str]:
        return find_shipped_as(self._orders, self, tracking_number, since)

    def _shipment(self, order_id: str, fulfillment: Node) -> Shipment:
        tracking = (fulfillment.get("trackingInfo") or [{}])[0]
        events = sorted((TrackingEvent(time=_time(e["happenedAt"]), location=e.get("city") or "",
                                       description=e.get("message") or e["status"])
                         for e in fulfillment["events"]["nodes"]), key=lambda e: e.time)
        shipped = _time(fulfillment["createdAt"])
        estimate = fulfillment.get("estimatedDeliveryAt")
        delivered = fulfillment.get("deliveredAt")
        return Shipment(
            order_id=order_id, carrier=tracking.get("company") or "",
            tracking_number=tracking.get("number") or "", tracking_url=tracking.get("url") or "",
            shipped_at=shipped,
            # before the carrier's estimate: the shop's promise
            eta=_time(estimate).date() if estimate else
            (shipped + timedelta(days=self._orders.delivery_days)).date(),
            exception=self._exception(fulfillment, events),
            events=tuple(events), delivered_at=_time(delivered) if delivered else None)

    def _exception(self, fulfillment: Node, events: list[TrackingEvent]) -> DeliveryException:
        """From the carrier's last event (FulfillmentEventStatus), or the lack of one."""
        if fulfillment.get("deliveredAt"):
            return DeliveryException.NONE
        statuses = sorted(fulfillment["events"]["nodes"], key=lambda e: e["happenedAt"])
        last = statuses[-1]["status"] if statuses else ""
        if last == "FAILURE":
            return DeliveryException.LOST
        if last in ("DELAYED", "ATTEMPTED_DELIVERY"):
            return DeliveryException.DELAYED
        last_scan = events[-1].time if events else _time(fulfillment["createdAt"])
        if self._clock() - last_scan >= timedelta(days=STUCK_AFTER_DAYS):
            return DeliveryException.STUCK
        return DeliveryException.NONE


class ShopifyReturns:
    """ReturnsSystem: Shopify's returns and refunds. Refunds go back to the payment
    methods the order was paid with (store credit is not offered through Shopify)."""

    def __init__(self, client: ShopifyClient, orders: ShopifyOrders) -> None:
        self._client = client
        self._orders = orders

    def get_return(self, order_id: str) -> Optional[ReturnRecord]:
        node = self._orders.order_node(order_id)
        if node is None or not node["returns"]["nodes"]:
            return None
        order = self._orders.from_node(node)
        ret = node["returns"]["nodes"][-1]  # the latest
        # Shopify's label is the shop's to send; the reason and the return's own date are
        # not read (created_at is the order's date)
        return ReturnRecord(rma_id=f"RMA-{_numeric_id(ret['id'])}", order_id=order.order_id,
                            status=_RETURN_STATUSES.get(ret["status"], ReturnStatus.REQUESTED),
                            label_url="", reason="", created_at=order.placed_at)

    @forgets_the_turn
    def create_return(self, order_id: str, reason: str) -> ReturnRecord:
        """Ask for the return of everything delivered that may still be returned; the
        shop approves it and sends the label (Shopify's returnRequest: REQUESTED)."""
        node = self._orders.order_node(order_id)
        if node is None:
            raise StoreError(f"unknown order {order_id!r}")
        order = self._orders.from_node(node)
        if node["returns"]["nodes"]:
            raise StoreError(f"order {order.order_id} already has a return")
        if order.status is not OrderStatus.DELIVERED:
            raise StoreError(f"order {order.order_id} is {order.status.value}, not delivered")
        found = self._client.execute(doc.RETURNABLE_FULFILLMENTS, {"orderId": node["id"]})
        items = [{"fulfillmentLineItemId": item["fulfillmentLineItem"]["id"],
                  "quantity": item["quantity"], "returnReason": "OTHER",
                  "customerNote": reason[:300]}
                 for returnable in found["returnableFulfillments"]["nodes"]
                 for item in returnable["returnableFulfillmentLineItems"]["nodes"]
                 if item["quantity"] > 0]
        if not items:
            raise StoreError(f"nothing of order {order.order_id} may be returned any more")
        answer = self._client.execute(doc.RETURN_REQUEST, {"input": {
            "orderId": node["id"], "returnLineItems": items}})
        _refuse_on(answer["returnRequest"].get("userErrors"))
        self._orders.forget_turn()  # read the order again, with its new return
        made = self.get_return(order_id)
        if made is None:
            raise StoreUnavailable(f"the return of order {order_id} not found on reading back")
        return made

    def swapped_returns(self, customer_id: int, since: datetime) -> list[str]:
        """Shopify keeps no serial numbers of units shipped and returned."""
        return []

    def get_refund(self, order_id: str) -> Optional[Refund]:
        found = self.refunds(order_id)
        return found[0] if found else None

    def refunds(self, order_id: str) -> list[Refund]:
        node = self._orders.order_node(order_id)
        if node is None:
            return []
        canonical = self._orders.from_node(node).order_id
        newest_first = sorted(node["refunds"], reverse=True,
                              key=lambda r: (r["createdAt"], _numeric_id(r["id"])))
        return [_refund(canonical, r) for r in newest_first]

    @forgets_the_turn
    def create_refund(self, order_id: str, amount: Decimal, reason: str,
                      method: str = "original_payment") -> Refund:
        """A refund of `amount` to the payment the order was paid with, within what
        Shopify's suggested refund says may still be refunded."""
        if method != "original_payment":
            raise StoreError(f"refunds as {method} are not made through Shopify by the bot")
        node = self._orders.order_node(order_id)
        if node is None:
            raise StoreError(f"unknown order {order_id!r}")
        amount = Decimal(amount).quantize(CENT)
        suggested = self._client.execute(doc.SUGGESTED_REFUND, {"id": node["id"]})
        transactions = suggested["order"]["suggestedRefund"]["suggestedTransactions"]
        refundable = sum((_money(t["maximumRefundableSet"]) for t in transactions), Decimal(0))
        if not transactions or not Decimal(0) < amount <= refundable:
            raise StoreError(f"refund of {amount} refused: at most {refundable} of order "
                             f"{order_id} may still be refunded")
        parent = transactions[0]
        answer = self._client.execute(doc.REFUND_CREATE, {"input": {
            "orderId": node["id"], "note": reason[:255], "notify": True,
            "transactions": [{"orderId": node["id"], "gateway": parent["gateway"],
                              "kind": "REFUND", "amount": str(amount),
                              "parentId": parent["parentTransaction"]["id"]}]}})
        result = answer["refundCreate"]
        _refuse_on(result.get("userErrors"))
        refund_id = (result.get("refund") or {}).get("id", "")
        self._orders.forget_turn()  # read the order again, with its new refund
        made = next((r for r in self.refunds(order_id) if r.refund_id == _refund_id(refund_id)),
                    None)
        if made is None:
            raise StoreUnavailable(f"refund {refund_id} not found on reading back")
        return made


# Shopify's return states; whether an approved return's parcel is on its way back is
# not read yet (its reverse deliveries): approved until the shop closes it
_RETURN_STATUSES = {"REQUESTED": ReturnStatus.REQUESTED, "OPEN": ReturnStatus.APPROVED,
                    "CLOSED": ReturnStatus.RECEIVED}


def _refuse_on(user_errors: Optional[Sequence[Node]]) -> None:
    """Shopify's userErrors: the shop refused the change, and says why."""
    if user_errors:
        raise StoreError("; ".join(str(e.get("message", "")) for e in user_errors))


def _fulfillments(node: Node) -> list[Node]:
    return sorted(node.get("fulfillments") or [], key=lambda f: f["createdAt"])


def _status(node: Node, fulfillments: list[Node]) -> OrderStatus:
    """Shopify's order state in the bot's terms. An order partly shipped is SHIPPED
    (nothing of it can be cancelled by the bot; Order.unshipped says what is left); one
    on hold, not yet shipped, PAID (Order.holdup says why it waits)."""
    if node.get("cancelledAt"):
        return OrderStatus.CANCELLED
    if any(r["status"] == "CLOSED" for r in node["returns"]["nodes"]):
        return OrderStatus.RETURNED
    if not fulfillments:
        return OrderStatus.PAID
    if (node.get("displayFulfillmentStatus") == "FULFILLED"
            and all(f.get("deliveredAt") for f in fulfillments)):
        return OrderStatus.DELIVERED
    return OrderStatus.SHIPPED


def _holdup(node: Node) -> Holdup:
    """What an unshipped order waits for: the shop's hold on its fulfilment, or a
    payment not confirmed yet (Shopify's displayFinancialStatus PENDING)."""
    if node.get("displayFulfillmentStatus") == "ON_HOLD":
        return Holdup.ON_HOLD
    if node.get("displayFinancialStatus") == "PENDING":
        return Holdup.PAYMENT
    return Holdup.NONE


def _item(node: Node, quantity: int) -> OrderItem:
    return OrderItem(sku=node.get("sku") or "", name=node["name"], quantity=quantity,
                     unit_price=_money(node["originalUnitPriceSet"]))


def _refund(order_id: str, node: Node) -> Refund:
    transactions = node["transactions"]["nodes"]
    pending = any(t["status"] == "PENDING" for t in transactions) or not transactions
    processed = [t["processedAt"] for t in transactions if t.get("processedAt")]
    money = node["totalRefundedSet"]["shopMoney"]
    return Refund(refund_id=_refund_id(node["id"]), order_id=order_id,
                  amount=_money(node["totalRefundedSet"]), currency=money["currencyCode"],
                  status=RefundStatus.PENDING if pending else RefundStatus.ISSUED,
                  created_at=_time(node["createdAt"]),
                  issued_at=None if pending or not processed else _time(max(processed)),
                  reason=node.get("note") or "")


def _refund_id(gid: str) -> str:
    return f"RF-{_numeric_id(gid)}"


def _address(node: Optional[Node]) -> Address:
    node = node or {}
    return Address(name=node.get("name") or "", line1=node.get("address1") or "",
                   line2=node.get("address2") or "", city=node.get("city") or "",
                   postal_code=node.get("zip") or "", country=node.get("countryCodeV2") or "")


def _money(value: Node) -> Decimal:
    return Decimal(str(value["shopMoney"]["amount"])).quantize(CENT)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text or "")


def _numeric_id(gid: str) -> int:
    """gid://shopify/Customer/123 -> 123."""
    tail = str(gid).rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _quoted(text: str) -> str:
    """A value inside double quotes in Shopify's search syntax."""
    return text.replace("\\", "\\\\").replace('"', '\\"')
