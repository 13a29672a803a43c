"""A local stand-in for WooCommerce's REST API (v3), answering as
developer.woocommerce.com documents:

- HTTP Basic authentication with a REST API key (`ck_…`) and secret (`cs_…`); a wrong
  or missing key is a 401 with WordPress's error shape `{code, message, data: {status}}`
  (`woocommerce_rest_authentication_error`, `woocommerce_rest_cannot_view`), and a key
  with Read permission only may not write (`woocommerce_rest_authentication_error`,
  "The API key provided does not have write permissions.");
- lists page with `per_page` (1 to 100, else 400 `rest_invalid_param`) and `page`, and
  say how many there are in `X-WP-Total` and `X-WP-TotalPages`; orders newest first;
  `search` finds text in the billing and shipping addresses (email and phone included)
  and the line items' names, and a number as the order's id; `after` (ISO 8601,
  `dates_are_gmt`) filters by date;
- `GET/PUT /orders/{id}` (status, shipping; any status change is taken, as WooCommerce
  takes it); `GET/POST /orders/{id}/refunds`, refusing an amount over what was paid less
  refunded with HTTP 500 `woocommerce_rest_cannot_create_order_refund` "Invalid refund
  amount." (its `data` the bare status, `"data": 500`) as the refunds controller does,
  moving money through the gateway only with `api_refund` (WooCommerce's default is
  true), and marking the order `refunded` once it is refunded in full;
  `GET/POST /orders/{id}/notes`;
- the Shipment Tracking extension's `GET /wp-json/wc-shipment-tracking/v3/orders/{id}/
  shipment-trackings` (`date_shipped` a day, Y-m-d); without the extension that route is
  WordPress's 404 `rest_no_route`;
- switches: `throttle_next` requests answer 429 (as a host's rate limit does),
  `fail_next` answer 503, `delay` seconds before every answer.

The shop is seeded from the demo store (actions/store/seed.py), as the Shopify stand-in
is: paid orders are `processing`, shipped ones `completed` with a tracking item,
delivered ones the `delivered` status of tracking plugins, cancelled ones `cancelled`,
and orders refunded in full `refunded`. It serves from a thread of its own: `start()`
gives its base URL.
"""
from __future__ import annotations

import asyncio
import base64
import math
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from aiohttp import web

from actions.store.seed import seed_demo_store
from actions.store.sql import Store, open_store
from actions.store.types import Address, OrderStatus, RefundStatus
from tests.provider_api import free_port

Obj = Dict[str, Any]
CENT = Decimal("0.01")
STATUSES = ("pending", "processing", "on-hold", "completed", "cancelled", "refunded",
            "failed", "checkout-draft", "delivered")
# payment gateways of the demo orders that can refund through their API
GATEWAYS_REFUNDING = ("visa", "mastercard", "amex", "paypal", "apple_pay")


def wc_time(value: Optional[datetime]) -> Optional[str]:
    """WooCommerce's dates: ISO 8601 without an offset (the `_gmt` ones in UTC)."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S")


def money(value: Decimal) -> str:
    return str(Decimal(value).quantize(CENT))


def digits(text: str) -> str:
    return re.sub(r"\D", "", text or "")


def error(code: str, message: str, status: int, bare_data: bool = False,
          headers: Optional[Mapping[str, str]] = None) -> web.Response:
    """WordPress's error shape; `bare_data` for a WP_Error made with the status as its
    data (`"data": 500`), as the refunds controller makes its refusals."""
    data: Any = status if bare_data else {"status": status}
    return web.json_response({"code": code, "message": message, "data": data},
                             status=status, headers=dict(headers or {}))


@dataclass
class Received:
    method: str
    path: str
    query: Mapping[str, str]
    body: Any
    status: int


class WooCommerceStandIn:
    def __init__(self, *, key: str = "ck_standin", secret: str = "cs_standin",
                 permissions: str = "read_write", tracking_extension: bool = True,
                 delay: float = 0.0) -> None:
        self.key, self.secret, self.permissions = key, secret, permissions
        self.tracking_extension = tracking_extension
        self.delay = delay
        self.throttle_next = 0  # the next requests answered 429
        self.fail_next = 0  # the next requests answered 503
        self.retry_after = "1"
        self.gateway_refunds_fail = False  # the payment gateway declines refunds
        self.ignore_address_updates = False  # a plugin undoes shipping changes
        # something happens in the shop just before the next write (PUT or POST)
        self.before_next_write: Optional[Callable[[], None]] = None
        self.orders: Dict[int, Obj] = {}
        self.trackings: Dict[int, List[Obj]] = {}
        self.refunds: Dict[int, List[Obj]] = {}
        self.notes: Dict[int, List[Obj]] = {}
        self.received: List[Received] = []
        self.url = ""
        self._lock = threading.RLock()
        self._ids = iter(range(900000, 10**9))
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner: Optional[web.AppRunner] = None
        self._thread: Optional[threading.Thread] = None

    # -- seeding -------------------------------------------------------------------

    @classmethod
    def from_demo(cls, now: datetime, workdir: Path, **options: Any) -> WooCommerceStandIn:
        """The shop holding the demo store's orders (seeded relative to `now`)."""
        demo = open_store(f"sqlite:///{workdir / 'woocommerce-demo-seed.db'}")
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
        oid = int(digits(order.order_id))
        shipment = demo.delivery.get_shipment(order.order_id)
        refunds = demo.returns.refunds(order.order_id)
        refunded = sum((r.amount for r in refunds), Decimal(0))
        status = {OrderStatus.PAID: "processing", OrderStatus.SHIPPED: "completed",
                  OrderStatus.DELIVERED: "delivered", OrderStatus.RETURNED: "refunded",
                  OrderStatus.CANCELLED: "cancelled"}[order.status]
        if refunds and refunded >= order.total and status != "cancelled":
            status = "refunded"  # WooCommerce marks an order refunded in full so
        changed = (order.cancelled_at or order.delivered_at or order.shipped_at
                   or order.placed_at)
        cust = order.customer
        self.orders[oid] = {
            "id": oid, "parent_id": 0, "number": str(oid), "order_key": f"wc_order_{oid}",
            "created_via": "checkout", "version": "9.4.0", "status": status,
            "currency": order.currency, "prices_include_tax": False,
            "date_created": wc_time(order.placed_at), "date_created_gmt": wc_time(order.placed_at),
            "date_modified": wc_time(changed), "date_modified_gmt": wc_time(changed),
            "discount_total": "0.00", "shipping_total": "0.00", "total": money(order.total),
            "total_tax": "0.00", "customer_id": cust.customer_id, "customer_note": "",
            "billing": {**self._address(order.billing_address), "email": cust.email,
                        "phone": cust.phone},
            "shipping": {**self._address(order.shipping_address), "phone": ""},
            "payment_method": order.payment_method,
            "payment_method_title": order.payment_method,
            "transaction_id": f"txn_{oid}",
            "date_paid": None if order.status is OrderStatus.CANCELLED else
            wc_time(order.placed_at),
            "date_paid_gmt": None if order.status is OrderStatus.CANCELLED else
            wc_time(order.placed_at),
            "date_completed": wc_time(order.shipped_at),
            "date_completed_gmt": wc_time(order.shipped_at),
            "line_items": [{"id": self._next(), "name": item.name, "product_id": self._next(),
                            "variation_id": 0, "quantity": item.quantity, "sku": item.sku,
                            "price": float(item.unit_price),
                            "subtotal": money(item.unit_price * item.quantity),
                            "total": money(item.unit_price * item.quantity)}
                           for item in order.items],
            "refunds": [],
            "meta_data": [],
        }
        self.trackings[oid] = [self._tracking(shipment.carrier, shipment.tracking_number,
                                              shipment.tracking_url, shipment.shipped_at)
                               ] if shipment else []
        self.refunds[oid] = []
        self.notes[oid] = []
        for refund in sorted(refunds, key=lambda r: r.created_at):
            self._refund(oid, refund.amount, refund.reason, refund.created_at,
                         paid_back=refund.status is RefundStatus.ISSUED)

    def _tracking(self, carrier: str, number: str, link: str, shipped: datetime) -> Obj:
        return {"tracking_id": f"{self._next():x}", "tracking_provider": carrier,
                "tracking_link": link, "tracking_number": number,
                "date_shipped": shipped.astimezone(timezone.utc).strftime("%Y-%m-%d")}

    @staticmethod
    def _address(address: Address) -> Obj:
        first, _, last = address.name.rpartition(" ")
        city, _, state = address.city.rpartition(", ")
        return {"first_name": first, "last_name": last, "company": "",
                "address_1": address.line1, "address_2": address.line2,
                "city": city or address.city, "state": state if city else "",
                "postcode": address.postal_code, "country": address.country}

    def _refund(self, oid: int, amount: Decimal, reason: str, at: datetime,
                paid_back: bool) -> Obj:
        refund: Obj = {"id": self._next(), "date_created": wc_time(at),
                  "date_created_gmt": wc_time(at), "amount": money(amount), "reason": reason,
                  "refunded_by": 1, "refunded_payment": paid_back, "meta_data": [],
                  "line_items": []}
        self.refunds[oid].append(refund)
        self.orders[oid]["refunds"].insert(0, {"id": refund["id"], "reason": reason,
                                               "total": money(-amount)})
        return refund

    def _next(self) -> int:
        return next(self._ids)

    # -- what tests do in the shop meanwhile -------------------------------------------

    def order(self, number: str) -> Obj:
        return self.orders[int(digits(number))]

    def ship(self, number: str, carrier: str = "UPS",
             tracking_number: str = "1Z999AA10000000001") -> None:
        """The warehouse ships the order (outside the bot)."""
        with self._lock:
            order = self.order(number)
            now = datetime.now(timezone.utc)
            order.update(status="completed", date_completed=wc_time(now),
                         date_completed_gmt=wc_time(now), date_modified_gmt=wc_time(now))
            self.trackings[order["id"]].append(self._tracking(
                carrier, tracking_number,
                f"https://www.ups.com/track?tracknum={tracking_number}", now))

    def refundable(self, oid: int) -> Decimal:
        order = self.orders[oid]
        return Decimal(order["total"]) - sum((Decimal(r["amount"]) for r in self.refunds[oid]),
                                             Decimal(0))

    def calls(self, method: str, pattern: str) -> List[Received]:
        """The requests received with this method whose path matches the pattern."""
        return [r for r in self.received if r.method == method and re.fullmatch(pattern,
                                                                                r.path)]

    # -- the API -------------------------------------------------------------------------

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        await asyncio.sleep(self.delay)
        try:
            body = await request.json() if request.can_read_body else None
        except ValueError:
            body = None
        with self._lock:
            if request.method != "GET" and self.before_next_write:
                happening, self.before_next_write = self.before_next_write, None
                happening()
            response = self._refusal(request)
            if response is None:
                try:
                    response = await handler(request)
                except web.HTTPNotFound:
                    response = error("rest_no_route", "No route was found matching the URL "
                                     "and request method.", 404)
            self.received.append(Received(request.method, request.path, dict(request.query),
                                          body, response.status))
        return response

    def _refusal(self, request: web.Request) -> Optional[web.Response]:
        if self.throttle_next > 0:
            self.throttle_next -= 1
            return error("too_many_requests", "Too many requests.", 429,
                         headers={"Retry-After": self.retry_after})
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503, text="<html>Service Unavailable</html>",
                                content_type="text/html")
        auth = request.headers.get("Authorization", "")
        writing = request.method != "GET"
        if not auth.startswith("Basic "):
            return error("woocommerce_rest_cannot_edit" if writing else
                         "woocommerce_rest_cannot_view",
                         "Sorry, you are not allowed to edit this resource." if writing else
                         "Sorry, you cannot list resources.", 401)
        try:
            key, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            key, secret = "", ""
        if key != self.key:
            return error("woocommerce_rest_authentication_error", "Consumer key is invalid.",
                         401)
        if secret != self.secret:
            return error("woocommerce_rest_authentication_error",
                         "Consumer secret is invalid.", 401)
        if writing and self.permissions != "read_write":
            return error("woocommerce_rest_authentication_error",
                         "The API key provided does not have write permissions.", 401)
        return None

    def _listed(self, request: web.Request, items: List[Obj]) -> web.Response:
        try:
            per_page = int(request.query.get("per_page", "10"))
            page = int(request.query.get("page", "1"))
        except ValueError:
            per_page, page = 0, 0
        if not 1 <= per_page <= 100 or page < 1:
            return error("rest_invalid_param", "Invalid parameter(s): per_page", 400)
        total = len(items)
        pages = math.ceil(total / per_page)
        chosen = items[(page - 1) * per_page:page * per_page]
        return web.json_response(chosen, headers={"X-WP-Total": str(total),
                                                  "X-WP-TotalPages": str(pages)})

    def _found(self, request: web.Request) -> Optional[Obj]:
        try:
            return self.orders.get(int(request.match_info["id"]))
        except ValueError:
            return None

    async def _list_orders(self, request: web.Request) -> web.Response:
        query = request.query
        term = query.get("search", "").strip().lower()
        after = query.get("after")
        found = list(self.orders.values())
        if term:
            found = [o for o in found if self._matches(o, term)]
        if after:
            since = datetime.fromisoformat(after.replace("Z", "+00:00"))
            if since.tzinfo is None:
                since = since.replace(tzinfo=timezone.utc)
            found = [o for o in found if datetime.fromisoformat(o["date_created_gmt"]).replace(
                tzinfo=timezone.utc) > since]
        if query.get("status"):
            found = [o for o in found if o["status"] in query["status"].split(",")]
        found.sort(key=lambda o: (o["date_created_gmt"], o["id"]), reverse=True)
        return self._listed(request, found)

    @staticmethod
    def _matches(order: Obj, term: str) -> bool:
        if term.isdigit() and term in (str(order["id"]), order["number"]):
            return True  # the number too, as order-numbering plugins add it
        fields = [str(v) for part in ("billing", "shipping") for v in order[part].values()]
        fields += [item["name"] for item in order["line_items"]]
        return any(term in field.lower() for field in fields)

    async def _get_order(self, request: web.Request) -> web.Response:
        order = self._found(request)
        if order is None:
            return error("woocommerce_rest_shop_order_invalid_id", "Invalid ID.", 404)
        return web.json_response(order)

    async def _update_order(self, request: web.Request) -> web.Response:
        order = self._found(request)
        if order is None:
            return error("woocommerce_rest_shop_order_invalid_id", "Invalid ID.", 404)
        body = await request.json()
        now = wc_time(datetime.now(timezone.utc))
        status = body.get("status")
        if status is not None:
            if status not in STATUSES:
                return error("rest_invalid_param", "Invalid parameter(s): status", 400)
            if status != order["status"]:
                self.notes[order["id"]].append(self._note(
                    f"Order status changed from {order['status']} to {status}.", system=True))
            order["status"] = status
            if status == "completed" and not order["date_completed_gmt"]:
                order["date_completed"] = order["date_completed_gmt"] = now
        shipping = body.get("shipping")
        if isinstance(shipping, Mapping) and not self.ignore_address_updates:
            order["shipping"] = {**order["shipping"], **{k: str(v) for k, v in
                                                         shipping.items()}}
        order["date_modified"] = order["date_modified_gmt"] = now
        return web.json_response(order)

    async def _list_refunds(self, request: web.Request) -> web.Response:
        order = self._found(request)
        if order is None:
            return error("woocommerce_rest_shop_order_invalid_id", "Invalid ID.", 404)
        return self._listed(request, sorted(self.refunds[order["id"]],
                                            key=lambda r: r["date_created_gmt"], reverse=True))

    async def _create_refund(self, request: web.Request) -> web.Response:
        order = self._found(request)
        if order is None:
            return error("woocommerce_rest_shop_order_invalid_id", "Invalid ID.", 404)
        body = await request.json()
        try:
            amount = Decimal(str(body.get("amount") or "0"))
        except ArithmeticError:
            amount = Decimal(-1)
        if amount <= 0:
            return error("woocommerce_rest_invalid_order_refund",
                         "Refund amount must be greater than zero.", 400)
        oid = order["id"]
        if amount > self.refundable(oid):
            return error("woocommerce_rest_cannot_create_order_refund",
                         "Invalid refund amount.", 500, bare_data=True)
        api_refund = body.get("api_refund", True)  # WooCommerce's default: money moves
        if api_refund and (self.gateway_refunds_fail
                           or order["payment_method"] not in GATEWAYS_REFUNDING):
            return error("woocommerce_rest_cannot_create_order_refund",
                         "Refund failed: the payment gateway declined the refund.", 500,
                         bare_data=True)
        refund = self._refund(oid, amount, str(body.get("reason") or ""),
                              datetime.now(timezone.utc), paid_back=bool(api_refund))
        now = wc_time(datetime.now(timezone.utc))
        order["date_modified"] = order["date_modified_gmt"] = now
        if self.refundable(oid) <= 0:
            order["status"] = "refunded"
        return web.json_response(refund, status=201)

    async def _list_notes(self, request: web.Request) -> web.Response:
        order = self._found(request)
        if order is None:
            return error("woocommerce_rest_shop_order_invalid_id", "Invalid ID.", 404)
        return web.json_response(list(reversed(self.notes[order["id"]])))

    async def _create_note(self, request: web.Request) -> web.Response:
        order = self._found(request)
        if order is None:
            return error("woocommerce_rest_shop_order_invalid_id", "Invalid ID.", 404)
        body = await request.json()
        if not str(body.get("note") or "").strip():
            return error("rest_missing_callback_param", "Missing parameter(s): note", 400)
        note = self._note(str(body["note"]), customer=bool(body.get("customer_note")))
        self.notes[order["id"]].append(note)
        return web.json_response(note, status=201)

    def _note(self, text: str, customer: bool = False, system: bool = False) -> Obj:
        at = wc_time(datetime.now(timezone.utc))
        return {"id": self._next(), "author": "system" if system else "API",
                "date_created": at, "date_created_gmt": at, "note": text,
                "customer_note": customer}

    async def _trackings(self, request: web.Request) -> web.Response:
        if not self.tracking_extension:
            raise web.HTTPNotFound()
        order = self._found(request)
        if order is None:
            return error("woocommerce_rest_order_invalid_id", "Invalid order ID.", 404)
        return web.json_response(self.trackings[order["id"]])

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

        self._thread = threading.Thread(target=serve, name="woocommerce-stand-in", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the WooCommerce stand-in did not start")
        return self.url

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._gate])
        api = "/wp-json/wc/v3/orders"
        app.router.add_get(api, self._list_orders)
        app.router.add_get(api + "/{id}", self._get_order)
        app.router.add_put(api + "/{id}", self._update_order)
        app.router.add_get(api + "/{id}/refunds", self._list_refunds)
        app.router.add_post(api + "/{id}/refunds", self._create_refund)
        app.router.add_get(api + "/{id}/notes", self._list_notes)
        app.router.add_post(api + "/{id}/notes", self._create_note)
        app.router.add_get("/wp-json/wc-shipment-tracking/v3/orders/{id}/shipment-trackings",
                           self._trackings)
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
