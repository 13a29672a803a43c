"""A local stand-in for Shopify's Admin GraphQL API, answering as shopify.dev documents:

- every document is parsed and validated against `shopify_schema.graphql` (Shopify's
  own type and field names); an unknown field is a 200 with `errors`, as Shopify answers;
- `X-Shopify-Access-Token` is checked (401 otherwise), and tokens are also granted by the
  client-credentials grant (`POST /admin/oauth/access_token`), expiring;
- a version it does not support falls forward to the oldest it does, and the
  `X-Shopify-API-Version` header says which was served;
- each query is costed (objects 1, connections 2 + first × node) against a leaky bucket:
  `extensions.cost` with `throttleStatus`, and `THROTTLED` when the bucket is short;
- orderCancel answers an unfinished Job, done after `cancel_job_polls` reads of `job`;
  refused mutations answer `userErrors`; only the last 60 days of orders are visible
  without `read_all_orders`.

The shop is seeded from the demo store (actions/store/seed.py), so the bot's flows run
against it. It serves from a thread of its own: `start()` gives its base URL.
"""
from __future__ import annotations

import asyncio
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from aiohttp import web
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    GraphQLResolveInfo,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    build_schema,
    execute,
    get_named_type,
    parse,
    validate,
)
from graphql.error import GraphQLError

from actions.store.seed import seed_demo_store
from actions.store.sql import Store, open_store
from actions.store.types import DeliveryException, RefundStatus, ReturnStatus
from tests.provider_api import free_port

SCHEMA = build_schema((Path(__file__).with_name("shopify_schema.graphql")).read_text())
MAX_QUERY_COST = 1000
MUTATION_COST = 10
VISIBLE_DAYS = 60  # without read_all_orders
INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"
Obj = Dict[str, Any]


def iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def money(amount: Decimal, currency: str = "USD") -> Obj:
    value = {"amount": str(Decimal(amount).quantize(Decimal("0.01"))), "currencyCode": currency}
    return {"shopMoney": value, "presentmentMoney": dict(value)}


def amount_of(bag: Obj) -> Decimal:
    return Decimal(bag["shopMoney"]["amount"])


def digits(text: str) -> str:
    return re.sub(r"\D", "", text or "")


@dataclass
class Bucket:
    maximum: float
    restore_rate: float
    available: float = 0.0
    at: float = field(default_factory=time.monotonic)

    def refill(self) -> None:
        now = time.monotonic()
        self.available = min(self.maximum, self.available + (now - self.at) * self.restore_rate)
        self.at = now

    def status(self) -> Obj:
        return {"maximumAvailable": self.maximum, "currentlyAvailable": int(self.available),
                "restoreRate": self.restore_rate}


@dataclass
class Received:
    """One GraphQL request as the shop received it."""

    version: str
    document: str
    variables: Mapping[str, Any]
    throttled: bool

    @property
    def operation(self) -> str:
        match = re.search(r"\b(query|mutation)\s+(\w+)", self.document)
        return match.group(2) if match else ""


class ShopifyStandIn:
    def __init__(self, *, access_token: str = "shpat_standin", client_id: str = "",
                 client_secret: str = "", supported_versions: tuple[str, ...] = (
                     "2025-07", "2025-10", "2026-01"),
                 bucket_size: float = 20000, restore_rate: float = 1000,
                 cancel_job_polls: int = 2, read_all_orders: bool = True,
                 token_lifetime: int = 86399, delay: float = 0.0) -> None:
        self.access_token = access_token
        self.client_id, self.client_secret = client_id, client_secret
        self.supported_versions = supported_versions
        self.bucket = Bucket(bucket_size, restore_rate, available=bucket_size)
        self.cancel_job_polls = cancel_job_polls
        self.read_all_orders = read_all_orders
        self.token_lifetime = token_lifetime
        self.delay = delay  # seconds before each GraphQL answer: a slow shop
        # set by tests: the shop takes address updates without applying them (seen in
        # the wild), or something happens in the shop just before the next mutation
        self.ignore_address_updates = False
        self.before_next_mutation: Optional[Callable[[], None]] = None
        self.orders: Dict[str, Obj] = {}  # by gid
        self.customers: Dict[str, Obj] = {}
        self.jobs: Dict[str, Obj] = {}
        self.granted: Dict[str, float] = {}  # client-credentials tokens and expiry
        self.received: List[Received] = []
        self.grants = 0
        self.url = ""
        self._lock = threading.RLock()  # test hooks run inside a request
        self._ids = iter(range(900000, 10**9))
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner: Optional[web.AppRunner] = None
        self._thread: Optional[threading.Thread] = None

    # -- seeding -------------------------------------------------------------------

    @classmethod
    def from_demo(cls, now: datetime, workdir: Path, **options: Any) -> ShopifyStandIn:
        """The shop holding the demo store's orders (seeded relative to `now`)."""
        demo = open_store(f"sqlite:///{workdir / 'shopify-demo-seed.db'}")
        try:
            seed_demo_store(demo, now)
            shop = cls(**options)
            shop.load(demo)
        finally:
            demo.close()
        return shop

    def load(self, demo: Store) -> None:
        for order in demo.orders.orders_since(datetime(1970, 1, 1, tzinfo=timezone.utc)):
            self._add(order, demo)

    def _add(self, order: Any, demo: Store) -> None:
        number = digits(order.order_id)
        cust = order.customer
        customer = self.customers.setdefault(f"gid://shopify/Customer/{cust.customer_id}", {
            "id": f"gid://shopify/Customer/{cust.customer_id}", "displayName": cust.name,
            "email": cust.email, "phone": cust.phone})
        gid = f"gid://shopify/Order/{number}"
        shipment = demo.delivery.get_shipment(order.order_id)
        returned = demo.returns.get_return(order.order_id)
        refunds = demo.returns.refunds(order.order_id)
        line_items = [{"id": f"gid://shopify/LineItem/{self._next()}", "sku": item.sku,
                       "name": item.name, "quantity": item.quantity,
                       "originalUnitPriceSet": money(item.unit_price)} for item in order.items]
        fulfillments = [self._fulfillment(shipment, line_items)] if shipment else []
        sale = {"id": f"gid://shopify/OrderTransaction/{number}", "kind": "SALE",
                "status": "SUCCESS", "gateway": order.payment_method,
                "processedAt": iso(order.placed_at), "amountSet": money(order.total)}
        self.orders[gid] = {
            "id": gid, "name": f"#{number}", "createdAt": iso(order.placed_at),
            "cancelledAt": iso(order.cancelled_at) if order.cancelled_at else None,
            "email": cust.email, "phone": cust.phone,
            "displayFinancialStatus": "REFUNDED" if refunds else "PAID",
            "displayFulfillmentStatus": "FULFILLED" if shipment else "UNFULFILLED",
            "paymentGatewayNames": [order.payment_method],
            "totalPriceSet": money(order.total, order.currency),
            "customer": customer,
            "shippingAddress": self._address(order.shipping_address),
            "billingAddress": self._address(order.billing_address),
            "lineItems": line_items,
            "fulfillments": fulfillments,
            "refunds": [self._refund(r.amount, r.created_at, r.reason,
                                     r.status is RefundStatus.PENDING, r.issued_at)
                        for r in refunds],
            "returns": [{"id": f"gid://shopify/Return/{self._next()}",
                         "name": f"#{number}-R1", "status": _RETURN_STATUS[returned.status],
                         "lineItems": [{"fulfillmentLineItemId": fli["id"],
                                        "quantity": fli["quantity"]}
                                       for f in fulfillments
                                       for fli in f["fulfillmentLineItems"]]}]
            if returned else [],
            "transactions": [sale],
        }
        for item in line_items:
            item["unfulfilledQuantity"] = partial(self._unfulfilled, self.orders[gid], item)

    def _fulfillment_line_items(self, line_items: List[Obj],
                                quantities: Optional[Mapping[str, int]] = None) -> List[Obj]:
        """Every line item whole, or the quantities given by SKU (a partial fulfilment)."""
        wanted = {item["sku"]: item["quantity"] for item in line_items}
        wanted.update(quantities or {})
        return [{"id": f"gid://shopify/FulfillmentLineItem/{self._next()}",
                 "quantity": wanted[item["sku"]], "lineItem": item}
                for item in line_items if wanted[item["sku"]] > 0]

    @staticmethod
    def _unfulfilled(order: Obj, item: Obj) -> int:
        shipped = sum(fli["quantity"] for f in order["fulfillments"]
                      for fli in f["fulfillmentLineItems"] if fli["lineItem"] is item)
        return max(item["quantity"] - shipped, 0)

    def _fulfillment(self, shipment: Any, line_items: List[Obj]) -> Obj:
        events = sorted(shipment.events, key=lambda e: e.time)
        last = ("DELIVERED" if shipment.delivered_at else
                {DeliveryException.LOST: "FAILURE",
                 DeliveryException.DELAYED: "DELAYED"}.get(shipment.exception, "IN_TRANSIT"))
        return {
            "id": f"gid://shopify/Fulfillment/{self._next()}", "name": "F1", "status": "SUCCESS",
            "fulfillmentLineItems": self._fulfillment_line_items(line_items),
            "displayStatus": {"FAILURE": "FAILURE"}.get(last, "DELIVERED"
                                                         if shipment.delivered_at
                                                         else "IN_TRANSIT"),
            "createdAt": iso(shipment.shipped_at), "inTransitAt": iso(shipment.shipped_at),
            "deliveredAt": iso(shipment.delivered_at) if shipment.delivered_at else None,
            "estimatedDeliveryAt": iso(datetime.combine(shipment.eta, datetime.min.time(),
                                                        timezone.utc) + timedelta(hours=12)),
            "trackingInfo": [{"company": shipment.carrier, "number": shipment.tracking_number,
                              "url": shipment.tracking_url}],
            "events": [{"id": f"gid://shopify/FulfillmentEvent/{self._next()}",
                        "status": last if i == len(events) - 1 else "IN_TRANSIT",
                        "happenedAt": iso(e.time), "message": e.description,
                        "city": e.location} for i, e in enumerate(events)],
        }

    def _refund(self, amount: Decimal, created: datetime, note: str, pending: bool,
                issued: Optional[datetime] = None) -> Obj:
        return {"id": f"gid://shopify/Refund/{self._next()}", "createdAt": iso(created),
                "note": note, "totalRefundedSet": money(amount),
                "transactions": [{"id": f"gid://shopify/OrderTransaction/{self._next()}",
                                  "kind": "REFUND", "status": "PENDING" if pending else "SUCCESS",
                                  "gateway": "", "amountSet": money(amount),
                                  "processedAt": None if pending or issued is None
                                  else iso(issued)}]}

    @staticmethod
    def _address(address: Any) -> Obj:
        first, _, last = address.name.rpartition(" ")
        return {"id": "gid://shopify/MailingAddress/1", "name": address.name,
                "firstName": first, "lastName": last, "address1": address.line1,
                "address2": address.line2, "city": address.city, "zip": address.postal_code,
                "province": "", "countryCodeV2": address.country, "phone": ""}

    def _next(self) -> int:
        return next(self._ids)

    # -- what tests do in the shop meanwhile -------------------------------------------

    def order_named(self, name: str) -> Obj:
        return next(o for o in self.orders.values() if digits(o["name"]) == digits(name))

    def fulfill(self, name: str, quantities: Optional[Mapping[str, int]] = None) -> None:
        """The warehouse ships the order (outside the bot): all of what is left, or the
        `quantities` given by SKU (the rest of the order waits)."""
        with self._lock:
            order = self.order_named(name)
            now = datetime.now(timezone.utc)
            order["fulfillments"].append({
                "id": f"gid://shopify/Fulfillment/{self._next()}", "name": "F1",
                "status": "SUCCESS", "displayStatus": "IN_TRANSIT", "createdAt": iso(now),
                "fulfillmentLineItems": self._fulfillment_line_items(
                    order["lineItems"], quantities or {i["sku"]: i["unfulfilledQuantity"]()
                                                       for i in order["lineItems"]}),
                "inTransitAt": iso(now), "deliveredAt": None, "estimatedDeliveryAt": None,
                "trackingInfo": [{"company": "UPS", "number": "1Z999AA10000000001",
                                  "url": "https://www.ups.com/track?tracknum=1Z999AA10000000001"}],
                "events": []})
            left = any(i["unfulfilledQuantity"]() for i in order["lineItems"])
            order["displayFulfillmentStatus"] = "PARTIALLY_FULFILLED" if left else "FULFILLED"

    def drain(self, to: float = 0.0) -> None:
        """Another app of the shop used the bucket: `to` points are left, now."""
        with self._lock:
            self.bucket.available, self.bucket.at = to, time.monotonic()

    def calls(self, operation: str) -> List[Received]:
        return [r for r in self.received if r.operation == operation]

    # -- the API -------------------------------------------------------------------------

    async def _graphql(self, request: web.Request) -> web.Response:
        asked = request.match_info["version"]
        served = asked if asked in self.supported_versions else self.supported_versions[0]
        headers = {"X-Shopify-API-Version": served}
        if not self._token_valid(request.headers.get("X-Shopify-Access-Token", "")):
            return web.json_response({"errors": INVALID_TOKEN}, status=401, headers=headers)
        try:
            body = await request.json()
            document = str(body["query"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"errors": {"query": "Required parameter missing or "
                                                          "invalid"}}, status=400)
        variables = body.get("variables") or {}
        await asyncio.sleep(self.delay)
        with self._lock:
            answer = self._answer(served, document, variables)
        return web.json_response(answer, headers=headers)

    def _answer(self, version: str, document: str, variables: Mapping[str, Any]) -> Obj:
        try:
            ast = parse(document)
        except GraphQLError as error:
            self.received.append(Received(version, document, variables, False))
            return {"errors": [error.formatted]}
        problems = validate(SCHEMA, ast)
        if problems:
            self.received.append(Received(version, document, variables, False))
            return {"errors": [p.formatted for p in problems]}
        cost = requested_cost(ast, variables)
        self.bucket.refill()
        if cost > MAX_QUERY_COST:
            self.received.append(Received(version, document, variables, False))
            return {"errors": [{"message": f"Query cost is {cost}, which exceeds the single "
                                           f"query max cost limit ({MAX_QUERY_COST}).",
                                "extensions": {"code": "MAX_COST_EXCEEDED", "cost": cost,
                                               "maxCost": MAX_QUERY_COST}}]}
        extensions = {"cost": {"requestedQueryCost": cost, "actualQueryCost": None,
                               "throttleStatus": self.bucket.status()}}
        if cost > self.bucket.available:
            self.received.append(Received(version, document, variables, True))
            return {"errors": [{"message": "Throttled", "extensions": {
                "code": "THROTTLED",
                "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": extensions}
        self.received.append(Received(version, document, variables, False))
        self.bucket.available -= cost
        if is_mutation(ast) and self.before_next_mutation is not None:
            happening, self.before_next_mutation = self.before_next_mutation, None
            happening()
        result = execute(SCHEMA, ast, root_value=self._root(), variable_values=dict(variables),
                         field_resolver=resolve)
        assert not asyncio.iscoroutine(result)
        extensions["cost"]["actualQueryCost"] = cost
        extensions["cost"]["throttleStatus"] = self.bucket.status()
        answer: Obj = {"data": result.data, "extensions": extensions}  # type: ignore[union-attr]
        if result.errors:  # type: ignore[union-attr]
            answer["errors"] = [e.formatted for e in result.errors]  # type: ignore[union-attr]
        return answer

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (form.get("grant_type") != "client_credentials" or not self.client_id
                or form.get("client_id") != self.client_id
                or form.get("client_secret") != self.client_secret):
            return web.json_response({"error": "invalid_client",
                                      "error_description": "Client authentication failed"},
                                     status=401)
        token = f"shpat_{secrets.token_hex(8)}"
        with self._lock:
            self.granted[token] = time.monotonic() + self.token_lifetime
            self.grants += 1
        return web.json_response({"access_token": token, "scope": "read_orders,write_orders",
                                  "expires_in": self.token_lifetime})

    def _token_valid(self, token: str) -> bool:
        if token and token == self.access_token:
            return True
        return self.granted.get(token, 0) > time.monotonic()

    # -- the resolvers ---------------------------------------------------------------------

    def _root(self) -> Obj:
        return {"order": self._order, "orders": self._orders, "customers": self._customers,
                "job": self._job, "returnableFulfillments": self._returnable_fulfillments,
                "orderCancel": self._order_cancel, "orderUpdate": self._order_update,
                "refundCreate": self._refund_create, "returnRequest": self._return_request}

    def _visible(self, order: Optional[Obj]) -> Optional[Obj]:
        if order is None:
            return None
        cutoff = datetime.now(timezone.utc) - timedelta(days=VISIBLE_DAYS)
        if not self.read_all_orders and parse_time(order["createdAt"]) < cutoff:
            return None
        return {**order, "suggestedRefund": lambda **_: self._suggested_refund(order)}

    def _order(self, id: str) -> Optional[Obj]:  # noqa: A002 - GraphQL's argument name
        return self._visible(self.orders.get(id))

    def _orders(self, first: int = 10, after: Optional[str] = None, query: str = "",
                sortKey: str = "ID", reverse: bool = False) -> Obj:  # noqa: N803
        key = "createdAt" if sortKey == "CREATED_AT" else "id"
        found = [v for o in self.orders.values()
                 if (v := self._visible(o)) is not None and matches(o, query or "")]
        found.sort(key=lambda o: (parse_time(o["createdAt"]) if key == "createdAt" else 0,
                                  -int(digits(o["id"]))))
        if reverse:
            found.reverse()
        return page(found, first, after)

    def _customers(self, first: int = 10, after: Optional[str] = None, query: str = "",
                   sortKey: str = "ID") -> Obj:  # noqa: N803
        wanted = dict(terms(query or ""))
        phone = digits(wanted.get("phone", ("", ""))[1])
        found = [c for c in self.customers.values() if phone and digits(c["phone"]) == phone]
        return page(found, first, after)

    def _job(self, id: str) -> Optional[Obj]:  # noqa: A002
        job = self.jobs.get(id)
        if job is None:
            return None
        if not job["done"]:
            job["polls_left"] -= 1
            if job["polls_left"] <= 0:
                job["apply"]()
                job["done"] = True
        return {"id": id, "done": job["done"]}

    def _order_cancel(self, orderId: str, reason: str, restock: bool,  # noqa: N803
                      refundMethod: Optional[Obj] = None, **_: Any) -> Obj:  # noqa: N803
        order = self.orders.get(orderId)
        problem = ("Order does not exist" if order is None else
                   "Order has already been cancelled" if order["cancelledAt"] else
                   "Cannot cancel an order that has been fulfilled" if order["fulfillments"]
                   else "")
        if problem:
            code = "NOT_FOUND" if order is None else "INVALID"
            return {"job": None, "userErrors": [], "orderCancelUserErrors": [
                {"field": ["orderId"], "message": problem, "code": code}]}
        assert order is not None
        refund = bool((refundMethod or {}).get("originalPaymentMethodsRefund"))
        job_id = f"gid://shopify/Job/{secrets.token_hex(8)}"

        def cancel() -> None:
            order["cancelledAt"] = iso(datetime.now(timezone.utc))
            refundable = self._refundable(order)
            if refund and refundable > 0:
                order["refunds"].append(self._refund(refundable, datetime.now(timezone.utc),
                                                     f"cancelled: {reason}", pending=True))
                order["displayFinancialStatus"] = "REFUNDED"

        self.jobs[job_id] = {"polls_left": self.cancel_job_polls, "done": False, "apply": cancel}
        if self.cancel_job_polls <= 0:
            cancel()
            self.jobs[job_id]["done"] = True
        return {"job": {"id": job_id, "done": self.jobs[job_id]["done"]},
                "orderCancelUserErrors": [], "userErrors": []}

    def _order_update(self, input: Obj) -> Obj:  # noqa: A002
        order = self.orders.get(input["id"])
        if order is None:
            return {"order": None, "userErrors": [{"field": ["id"],
                                                   "message": "Order does not exist"}]}
        new = input.get("shippingAddress")
        if new is not None and not self.ignore_address_updates:
            name = f"{new.get('firstName') or ''} {new.get('lastName') or ''}".strip()
            order["shippingAddress"] = {
                **order["shippingAddress"], "name": name, "firstName": new.get("firstName"),
                "lastName": new.get("lastName"), "address1": new.get("address1"),
                "address2": new.get("address2") or "", "city": new.get("city"),
                "zip": new.get("zip"), "countryCodeV2": new.get("countryCode")}
        return {"order": self._visible(order), "userErrors": []}

    def _refund_create(self, input: Obj) -> Obj:  # noqa: A002
        order = self.orders.get(input["orderId"])
        if order is None:
            return {"refund": None, "order": None,
                    "userErrors": [{"field": ["orderId"], "message": "Order does not exist"}]}
        asked = sum((Decimal(str(t["amount"])) for t in input.get("transactions") or []),
                    Decimal(0))
        refundable = self._refundable(order)
        if asked > refundable:
            return {"refund": None, "order": self._visible(order), "userErrors": [{
                "field": ["transactions", "0", "amount"],
                "message": f"Refund amount ${asked:.2f} is greater than net payment "
                           f"received ${refundable:.2f}"}]}
        refund = self._refund(asked, datetime.now(timezone.utc), input.get("note") or "",
                              pending=True)
        order["refunds"].append(refund)
        order["displayFinancialStatus"] = ("REFUNDED" if asked == refundable
                                           else "PARTIALLY_REFUNDED")
        return {"refund": refund, "order": self._visible(order), "userErrors": []}

    def _returnable(self, order: Obj) -> Dict[str, int]:
        """What may still be returned: quantity by fulfilment line item id."""
        left = {fli["id"]: fli["quantity"] for f in order["fulfillments"]
                for fli in f["fulfillmentLineItems"]}
        for ret in order["returns"]:
            if ret["status"] not in ("CANCELED", "DECLINED"):
                for item in ret.get("lineItems", []):
                    left[item["fulfillmentLineItemId"]] -= item["quantity"]
        return left

    def _returnable_fulfillments(self, orderId: str, first: int = 10,  # noqa: N803
                                 after: Optional[str] = None) -> Obj:
        order = self.orders.get(orderId)
        left = self._returnable(order) if order else {}
        found = []
        for fulfillment in order["fulfillments"] if order else []:
            items = [{"quantity": left[fli["id"]], "fulfillmentLineItem": fli}
                     for fli in fulfillment["fulfillmentLineItems"] if left[fli["id"]] > 0]
            if items:
                found.append({"id": f"gid://shopify/ReturnableFulfillment/"
                                    f"{digits(fulfillment['id'])}",
                              "fulfillment": fulfillment,
                              "returnableFulfillmentLineItems": items})
        return page(found, first, after)

    def _return_request(self, input: Obj) -> Obj:  # noqa: A002
        order = self.orders.get(input["orderId"])
        if order is None:
            return {"return": None, "userErrors": [{"field": ["input", "orderId"],
                                                    "message": "Order does not exist"}]}
        left = self._returnable(order)
        for n, item in enumerate(input["returnLineItems"]):
            if item["quantity"] > left.get(item["fulfillmentLineItemId"], 0):
                return {"return": None, "userErrors": [{
                    "field": ["input", "returnLineItems", str(n), "quantity"],
                    "message": "Quantity is not available for return"}]}
        new = {"id": f"gid://shopify/Return/{self._next()}",
               "name": f"{order['name']}-R{len(order['returns']) + 1}", "status": "REQUESTED",
               "lineItems": [{"fulfillmentLineItemId": item["fulfillmentLineItemId"],
                              "quantity": item["quantity"]}
                             for item in input["returnLineItems"]]}
        order["returns"].append(new)
        return {"return": new, "userErrors": []}

    def _refundable(self, order: Obj) -> Decimal:
        return amount_of(order["totalPriceSet"]) - sum(
            (amount_of(r["totalRefundedSet"]) for r in order["refunds"]), Decimal(0))

    def _suggested_refund(self, order: Obj) -> Obj:
        refundable = self._refundable(order)
        sale = order["transactions"][0]
        transactions = [{"kind": "SUGGESTED_REFUND", "gateway": sale["gateway"],
                         "parentTransaction": sale, "amountSet": money(refundable),
                         "maximumRefundableSet": money(refundable)}] if refundable > 0 else []
        return {"amountSet": money(refundable), "maximumRefundableSet": money(refundable),
                "suggestedTransactions": transactions}

    # -- serving ---------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on a free loopback port from a thread; returns the base URL."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="shopify-stand-in", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Shopify stand-in did not start")
        return self.url

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/admin/api/{version}/graphql.json", self._graphql)
        app.router.add_post("/admin/oauth/access_token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()


_RETURN_STATUS = {ReturnStatus.LABEL_ISSUED: "REQUESTED", ReturnStatus.IN_TRANSIT: "OPEN",
                  ReturnStatus.RECEIVED: "CLOSED", ReturnStatus.REFUNDED: "CLOSED"}


def resolve(source: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
    """Fields from dicts; callables are called with the field's arguments; lists are cut
    to `first` and wrapped as connections where the schema says Connection."""
    value = source.get(info.field_name) if isinstance(source, Mapping) else None
    if callable(value):
        return value(**args)
    if isinstance(value, list):
        if args.get("first") is not None:
            value = value[:args["first"]]
        if get_named_type(info.return_type).name.endswith("Connection"):
            return page(value, len(value) or 1, None)
    return value


def page(items: List[Obj], first: int, after: Optional[str]) -> Obj:
    start = int(after) if after else 0
    chosen = items[start:start + first]
    end = start + len(chosen)
    return {"nodes": chosen,
            "edges": [{"cursor": str(start + i + 1), "node": n} for i, n in enumerate(chosen)],
            "pageInfo": {"hasNextPage": end < len(items), "hasPreviousPage": start > 0,
                         "startCursor": str(start) if chosen else None,
                         "endCursor": str(end) if chosen else None}}


TERM = re.compile(r"""(\w+):(>=|<=|>|<)?(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+))""")


def terms(query: str) -> List[tuple[str, tuple[str, str]]]:
    """Shopify's search syntax, the filters used here: name:1001, email:"a@b",
    customer_id:7, created_at:>='2026-01-01T00:00:00+00:00', phone:"+1…"."""
    found = []
    for match in TERM.finditer(query):
        value = match.group(3) if match.group(3) is not None else (
            match.group(4) if match.group(4) is not None else match.group(5))
        found.append((match.group(1), (match.group(2) or "", value.replace('\\"', '"'))))
    return found


def matches(order: Obj, query: str) -> bool:
    """Shopify's search: terms joined by a space must all match; groups joined by OR,
    any of them."""
    return any(matches_all(order, group) for group in query.split(" OR "))


def matches_all(order: Obj, query: str) -> bool:
    for name, (op, value) in terms(query):
        if name == "name" and digits(order["name"]) != digits(value):
            return False
        if name == "email" and (order.get("email") or "").lower() != value.lower():
            return False
        if name == "customer_id" and digits(order["customer"]["id"]) != digits(value):
            return False
        if name == "created_at" and not compare(parse_time(order["createdAt"]), op,
                                                parse_time(value)):
            return False
    return True


def compare(left: datetime, op: str, right: datetime) -> bool:
    return {">=": left >= right, ">": left > right, "<=": left <= right,
            "<": left < right, "": left == right}[op]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def is_mutation(document: Any) -> bool:
    return any(isinstance(d, OperationDefinitionNode) and d.operation is OperationType.MUTATION
               for d in document.definitions)


def requested_cost(document: Any, variables: Mapping[str, Any]) -> int:
    """Shopify's requested cost, simplified: each object 1, scalars and enums 0, a
    connection or list with `first` 2 + first × its node; a mutation 10."""
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    mutation = operation.operation is OperationType.MUTATION
    root = SCHEMA.mutation_type if mutation else SCHEMA.query_type
    assert root is not None
    cost = _selection_cost(operation.selection_set, root, fragments, variables)
    return cost + (MUTATION_COST if mutation else 0)


def _selection_cost(selections: Optional[SelectionSetNode], parent: GraphQLObjectType,
                    fragments: Mapping[str, FragmentDefinitionNode],
                    variables: Mapping[str, Any]) -> int:
    total = 0
    for node in selections.selections if selections else ():
        if isinstance(node, FragmentSpreadNode):
            total += _selection_cost(fragments[node.name.value].selection_set, parent,
                                     fragments, variables)
        elif isinstance(node, InlineFragmentNode):
            total += _selection_cost(node.selection_set, parent, fragments, variables)
        elif isinstance(node, FieldNode) and node.name.value in parent.fields:
            named = get_named_type(parent.fields[node.name.value].type)
            if not isinstance(named, GraphQLObjectType):
                continue
            inner = _selection_cost(node.selection_set, named, fragments, variables)
            first = _first(node, variables)
            total += 1 + inner if first is None else 2 + first * max(inner, 1)
    return total


def _first(node: FieldNode, variables: Mapping[str, Any]) -> Optional[int]:
    for argument in node.arguments or ():
        if argument.name.value != "first":
            continue
        if isinstance(argument.value, IntValueNode):
            return int(argument.value.value)
        if isinstance(argument.value, VariableNode):
            return int(variables.get(argument.value.name.value) or 0)
    return None
