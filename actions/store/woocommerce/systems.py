"""The store systems on a WooCommerce shop: its orders, refunds and (with the Shipment
Tracking extension) tracking numbers read into the project's types
(actions/store/types.py), and the bot's writes made with its REST API (v3).

Order numbers: the bot names orders by a letter and digits ('A1001'); WooCommerce's
order number 1001 is the bot's order 'A1001', the letter being the policy's
`identity.order_number_letter`.

Statuses: WooCommerce's `pending`, `on-hold` and `processing` are orders not shipped yet
(PAID in the bot's terms; the first two wait for their payment: Order.holdup);
`completed` is shipped (or delivered, as WOOCOMMERCE_COMPLETED_MEANS says); the custom
status tracking plugins add when the parcel arrived (`delivered`,
WOOCOMMERCE_DELIVERED_STATUS) is delivered; `cancelled` and `failed` are cancelled;
`refunded` is returned when the order had been completed, else cancelled (a paid order
cancelled and refunded in full).
"""
from __future__ import annotations

import logging
import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping, Optional, Sequence

from actions.store.cache import OrderCache, TurnReads, forgets_the_turn
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
    Shipment,
    StoreError,
    StoreUnavailable,
    find_shipped_as,
    normalize_order_id,
)
from actions.store.woocommerce.client import WooClient, WooNotFound

log = logging.getLogger("actions.store.woocommerce")

CENT = Decimal("0.01")
PER_PAGE = 50  # WooCommerce allows at most 100
MAX_PAGES = 40
NOT_SHIPPED = ("pending", "on-hold", "processing")
AWAITING_PAYMENT = ("pending", "on-hold")

Node = Mapping[str, Any]


class WooOrders:
    """OrderSystem."""

    def __init__(self, client: WooClient, platform: PlatformPolicy,
                 cache: Optional[OrderCache] = None) -> None:
        self._client = client
        self._letter = platform.order_letter.upper()
        self.refund_through_gateway = platform.refund_through_gateway
        self.delivery_days = platform.delivery_days
        # what the current turn read, per worker thread (begin_turn), and kept across
        # turns in the order cache; outside a turn every read asks WooCommerce
        self.reads = TurnReads("woocommerce", cache)
        self._no_tracking_logged = False

    # -- the turn's reads --

    def begin_turn(self) -> None:
        self.reads.begin_turn()

    def forget_turn(self) -> None:
        self.reads.forget_turn()

    def forget(self, order_id: str) -> None:
        """A write changed the order (or may have): what this turn read and what the
        order cache kept of it are no longer true."""
        self.reads.forget_order(order_id, self._letter)

    def kept(self, key: tuple[str, str], read: Callable[[], Any]) -> Any:
        """What `read` gives of an order ((kind, its number)): once a turn, and kept
        across turns in the order cache."""
        kind, number = key
        return self.reads.read(number, kind, read)

    # -- reads --

    def get_order(self, order_id: str) -> Optional[Order]:
        node = self.order_node(order_id)
        return None if node is None else self.from_node(node)

    def order_node(self, order_id: str) -> Optional[Node]:
        """The order as WooCommerce answers it, found by its number (once a turn)."""
        canonical = normalize_order_id(order_id)
        if canonical is None or canonical[0] != self._letter:
            return None
        number = canonical[1:]
        found: Optional[Node] = self.kept(("order", number), lambda: self._find(number))
        return found

    def _find(self, number: str) -> Optional[Node]:
        """By id (the order number of a shop without a numbering plugin), else by
        searching for the number."""
        try:
            node = self._client.get(f"/orders/{int(number)}").body
            if _number(node) == number:
                return dict(node)
        except WooNotFound:
            pass
        for node in self._pages("/orders", {"search": number}, max_pages=2):
            if _number(node) == number:
                return dict(node)
        return None

    def orders_for_contact(self, contact: str) -> list[Order]:
        """Orders by the billing email, or by the billing phone compared whole
        (WooCommerce's search finds text within the order's addresses)."""
        contact = (contact or "").strip()
        if "@" in contact:
            wanted = contact.lower()
            nodes = [n for n in self._pages("/orders", {"search": wanted})
                     if str(_billing(n).get("email") or "").strip().lower() == wanted]
        elif contact.startswith("+") and len(_digits(contact)) >= 7:
            wanted = _digits(contact)
            # the shop keeps numbers as customers typed them: search by the last four
            # digits, then compare the whole number
            nodes = [n for n in self._pages("/orders", {"search": wanted[-4:]})
                     if _same_phone(str(_billing(n).get("phone") or ""), wanted)]
        else:
            return []
        return sorted((self.from_node(n) for n in nodes), key=lambda o: o.placed_at,
                      reverse=True)

    def orders_since(self, since: datetime,
                     status: Optional[OrderStatus] = None) -> list[Order]:
        # WooCommerce's `after` is strictly after: asked a second earlier, then filtered
        after = (since.astimezone(timezone.utc) - timedelta(seconds=1)).replace(
            tzinfo=None, microsecond=0).isoformat()
        nodes = self._pages("/orders", {"after": after, "dates_are_gmt": "true"})
        for node in nodes:  # within a turn, each is not asked for again
            self.reads.keep(_number(node), "order", dict(node))
        found = [self.from_node(n) for n in nodes]
        return sorted((o for o in found if o.placed_at >= since
                       and (status is None or o.status is status)),
                      key=lambda o: o.placed_at, reverse=True)

    def _pages(self, path: str, params: Mapping[str, Any],
               max_pages: int = MAX_PAGES) -> list[Node]:
        """Every page of a list, as X-WP-TotalPages says."""
        found: list[Node] = []
        page = 1
        while True:
            answer = self._client.get(path, {**params, "per_page": PER_PAGE, "page": page})
            found += list(answer.body)
            if page >= answer.total_pages:
                return found
            if page >= max_pages:
                log.warning("stopped reading WooCommerce %s after %d pages", path, page)
                return found
            page += 1

    # -- writes --

    @forgets_the_turn
    def cancel_order(self, order_id: str, reason: str) -> Order:
        """Cancel an order not shipped yet, then refund what was paid for it (through
        the payment gateway or not, as the policy says); WooCommerce restocks."""
        node = self._changeable(order_id, "cancelled")
        oid = node["id"]
        self._client.put(f"/orders/{oid}", {"status": "cancelled"})
        self.note(oid, f"Cancelled by the support bot: {reason}")
        paid = bool(node.get("date_paid_gmt") or node.get("date_paid"))
        left = refundable(node)
        if paid and left > 0:
            try:
                self.refund(oid, left, f"cancelled: {reason}")
            except StoreError as error:
                # the order is cancelled already: not a refusal of the change, which a
                # person must finish
                raise StoreUnavailable(f"order {order_id} was cancelled but WooCommerce "
                                       f"refused its refund of {left}: {error}") from error
        return self._reread(order_id)

    @forgets_the_turn
    def change_shipping_address(self, order_id: str, address: Address) -> Order:
        """Set the shipping address of an order not shipped yet; the caller compares
        what is read back (actions/guarded.py)."""
        node = self._changeable(order_id, "redirected")
        first, _, last = address.name.strip().rpartition(" ")
        city, state = _city_and_state(address.city)
        self._client.put(f"/orders/{node['id']}", {"shipping": {
            "first_name": first, "last_name": last or address.name, "company": "",
            "address_1": address.line1, "address_2": address.line2, "city": city,
            "state": state, "postcode": address.postal_code, "country": address.country}})
        self.note(node["id"], f"Shipping address changed by the support bot to: "
                              f"{address.one_line()}")
        return self._reread(order_id)

    def create_replacement(self, order_id: str, reason: str) -> Order:
        raise StoreError("free replacements are not made through WooCommerce by the bot: "
                         "a person creates the order")

    def replacement_of(self, order_id: str) -> Optional[Order]:
        return None

    def customers_shipping_to(self, address: Address) -> int:
        """WooCommerce's search cannot count customers by delivery address: not checked
        with this backend (see docs/stores.md)."""
        return 0

    # -- shared by the systems --

    def refund(self, woo_id: int, amount: Decimal, reason: str) -> Node:
        """POST a refund of `amount`, moving money through the payment gateway only if
        the policy says so (`api_refund` is always sent: WooCommerce's default moves
        money)."""
        made = self._client.post(f"/orders/{woo_id}/refunds", {
            "amount": str(amount.quantize(CENT)), "reason": reason[:500],
            "api_refund": self.refund_through_gateway, "api_restock": False}).body
        how = ("through the payment gateway" if self.refund_through_gateway
               else "to be paid back by hand")
        self.note(woo_id, f"Refund of {amount.quantize(CENT)} made by the support bot "
                          f"({how}): {reason}")
        return dict(made)

    def note(self, woo_id: int, text: str) -> None:
        """A private order note saying what the bot did; the change stands without it."""
        try:
            self._client.post(f"/orders/{woo_id}/notes", {"note": text[:1000],
                                                          "customer_note": False})
        except (StoreError, StoreUnavailable, WooNotFound) as error:
            log.warning("WooCommerce order %s: the bot's note was not added (%s)", woo_id,
                        error)

    def trackings(self, node: Node) -> list[Node]:
        """The Shipment Tracking extension's items of the order; none if the extension
        is not installed (its route answers 404)."""
        def read() -> list[Node]:
            try:
                answer = self._client.get(f"/orders/{node['id']}/shipment-trackings",
                                          base=self._client.config.tracking_url)
            except WooNotFound:
                if not self._no_tracking_logged:
                    self._no_tracking_logged = True
                    log.info("WooCommerce has no Shipment Tracking routes: orders are told "
                             "without tracking numbers")
                return []
            return [dict(t) for t in answer.body] if isinstance(answer.body, list) else []

        found: list[Node] = self.kept(("trackings", _number(node)), read)
        return found

    def refund_nodes(self, node: Node) -> list[Node]:
        def read() -> list[Node]:
            return self._pages(f"/orders/{node['id']}/refunds", {})

        found: list[Node] = self.kept(("refunds", _number(node)), read)
        return found

    def _changeable(self, order_id: str, change: str) -> Node:
        node = self.order_node(order_id)
        if node is None:
            raise StoreError(f"unknown order {order_id!r}")
        order = self.from_node(node)
        if not order.can_be_changed:
            raise StoreError(f"order {order.order_id} is {order.status.value}: it cannot be "
                             f"{change} any more")
        return node

    def _reread(self, order_id: str) -> Order:
        self.forget_turn()
        order = self.get_order(order_id)
        if order is None:
            raise StoreUnavailable(f"order {order_id} not found on reading back")
        return order

    def status_of(self, node: Node) -> OrderStatus:
        status = _woo_status(node)
        config = self._client.config
        if status == config.delivered_status:
            return OrderStatus.DELIVERED
        if status == "completed":
            return (OrderStatus.DELIVERED if config.completed_means == "delivered"
                    else OrderStatus.SHIPPED)
        if status in ("cancelled", "failed"):
            return OrderStatus.CANCELLED
        if status == "refunded":
            return OrderStatus.RETURNED if _when(node, "date_completed") else \
                OrderStatus.CANCELLED
        if status in NOT_SHIPPED:
            return OrderStatus.PAID
        # a custom status of a plugin: shipped once WooCommerce says it was completed
        return OrderStatus.SHIPPED if _when(node, "date_completed") else OrderStatus.PAID

    def from_node(self, node: Node) -> Order:
        """The order as the bot sees it, from WooCommerce's answer."""
        status = self.status_of(node)
        placed = _when(node, "date_created") or datetime.fromtimestamp(0, timezone.utc)
        completed = _when(node, "date_completed")
        changed = _when(node, "date_modified")
        billing = _billing(node)
        name = f"{billing.get('first_name') or ''} {billing.get('last_name') or ''}".strip()
        delivered_at: Optional[datetime] = None
        if status is OrderStatus.DELIVERED:
            # WooCommerce keeps no delivery time: when the order was marked delivered
            # (completed, or last changed for a custom status)
            delivered_at = completed if str(node.get("status")) == "completed" else changed
        return Order(
            order_id=f"{self._letter}{_number(node)}",
            customer=Customer(customer_id=int(node.get("customer_id") or 0), name=name,
                              email=str(billing.get("email") or ""),
                              phone=str(billing.get("phone") or "")),
            status=status,
            placed_at=placed,
            promised_date=(placed + timedelta(days=self.delivery_days)).date(),
            total=_money(node.get("total")),
            currency=str(node.get("currency") or ""),
            payment_method=str(node.get("payment_method_title") or node.get("payment_method")
                               or "unknown"),
            shipping_address=_address(node.get("shipping") or {}),
            billing_address=_address(billing),
            items=tuple(OrderItem(sku=str(i.get("sku") or ""), name=str(i.get("name") or ""),
                                  quantity=int(i.get("quantity") or 0),
                                  unit_price=_money(i.get("price")))
                        for i in node.get("line_items") or ()),
            shipped_at=completed if status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED,
                                               OrderStatus.RETURNED) else None,
            delivered_at=delivered_at,
            cancelled_at=changed if status is OrderStatus.CANCELLED else None,
            # pending: the payment is awaited; on-hold: it is to be confirmed by the shop
            holdup=Holdup.PAYMENT if _woo_status(node) in AWAITING_PAYMENT
            else Holdup.NONE,
        )


def _woo_status(node: Node) -> str:
    return str(node.get("status") or "").removeprefix("wc-")


class WooDelivery:
    """DeliverySystem: shipments are the Shipment Tracking extension's items. Carrier
    claims and traces are not made through WooCommerce (it has none): a person opens
    them."""

    def __init__(self, orders: WooOrders) -> None:
        self._orders = orders

    def get_shipment(self, order_id: str) -> Optional[Shipment]:
        found = self.shipments(order_id)
        return found[-1] if found else None

    def shipments(self, order_id: str) -> list[Shipment]:
        node = self._orders.order_node(order_id)
        if node is None:
            return []
        order = self._orders.from_node(node)
        if order.status in (OrderStatus.PAID, OrderStatus.CANCELLED):
            return []  # nothing shipped (not read: saves a request)
        items = sorted(self._orders.trackings(node), key=_shipped_on)
        return [self._shipment(order, item, last=n == len(items) - 1)
                for n, item in enumerate(items)]

    def open_claim(self, order_id: str, kind: str) -> CarrierClaim:
        raise StoreError("carrier claims are not opened through WooCommerce: a person opens "
                         "them with the carrier")

    def claims_by_customer(self, customer_id: int, since: datetime) -> list[CarrierClaim]:
        return []

    def claims_for_order(self, order_id: str) -> list[CarrierClaim]:
        return []

    def claims_opened(self, since: datetime, kinds: Sequence[str]) -> list[CarrierClaim]:
        return []

    def order_shipped_as(self, tracking_number: str, since: datetime) -> Optional[str]:
        return find_shipped_as(self._orders, self, tracking_number, since)

    def _shipment(self, order: Order, item: Node, last: bool) -> Shipment:
        """The extension keeps the carrier, number, link and the day shipped; no carrier
        events, estimate or delivery (a carrier-tracking service would add them): the
        estimate is the shop's promise (windows.delivery_days)."""
        shipped = _shipped_on(item)
        if order.shipped_at is not None and order.shipped_at.date() == shipped.date():
            shipped = order.shipped_at  # the day shipped, at the time it was completed
        delivered = order.delivered_at if last else None
        return Shipment(
            order_id=order.order_id,
            carrier=str(item.get("tracking_provider") or item.get("custom_tracking_provider")
                        or ""),
            tracking_number=str(item.get("tracking_number") or ""),
            tracking_url=str(item.get("tracking_link") or item.get("custom_tracking_link")
                             or ""),
            shipped_at=shipped,
            eta=(shipped + timedelta(days=self._orders.delivery_days)).date(),
            exception=DeliveryException.NONE, events=(), delivered_at=delivered,
            scans_known=False)


class WooReturns:
    """ReturnsSystem: WooCommerce's refunds. WooCommerce has no returns of its own
    (returns come from plugins): the bot neither reads nor makes them there; a person
    arranges a return."""

    def __init__(self, client: WooClient, orders: WooOrders) -> None:
        self._client = client
        self._orders = orders

    def get_return(self, order_id: str) -> Optional[ReturnRecord]:
        return None

    def create_return(self, order_id: str, reason: str) -> ReturnRecord:
        raise StoreError("returns are not made through WooCommerce by the bot (it has no "
                         "returns of its own): a person arranges the return")

    def swapped_returns(self, customer_id: int, since: datetime) -> list[str]:
        return []

    def get_refund(self, order_id: str) -> Optional[Refund]:
        found = self.refunds(order_id)
        return found[0] if found else None

    def refunds(self, order_id: str) -> list[Refund]:
        node = self._orders.order_node(order_id)
        if node is None:
            return []
        canonical = self._orders.from_node(node).order_id
        refunds = [_refund(canonical, str(node.get("currency") or ""), r)
                   for r in self._orders.refund_nodes(node)]
        return sorted(refunds, key=lambda r: (r.created_at, r.refund_id), reverse=True)

    @forgets_the_turn
    def create_refund(self, order_id: str, amount: Decimal, reason: str,
                      method: str = "original_payment") -> Refund:
        """A refund of `amount`, never more than was paid less what was refunded."""
        if method != "original_payment":
            raise StoreError(f"refunds as {method} are not made through WooCommerce by the bot")
        node = self._orders.order_node(order_id)
        if node is None:
            raise StoreError(f"unknown order {order_id!r}")
        amount = Decimal(amount).quantize(CENT)
        left = refundable(node)
        if not Decimal(0) < amount <= left:
            raise StoreError(f"refund of {amount} refused: at most {left} of order "
                             f"{order_id} may still be refunded")
        made = self._orders.refund(node["id"], amount, reason)
        self._orders.forget_turn()  # read the order's refunds again
        refund_id = f"RF-{made.get('id')}"
        found = next((r for r in self.refunds(order_id) if r.refund_id == refund_id), None)
        if found is None:
            raise StoreUnavailable(f"refund {refund_id} not found on reading back")
        return found


def refundable(node: Node) -> Decimal:
    """What was paid less what was refunded (the order's `refunds` carry negative
    totals)."""
    refunded = sum((abs(_money(r.get("total"))) for r in node.get("refunds") or ()),
                   Decimal(0))
    return max(_money(node.get("total")) - refunded, Decimal(0))


def _refund(order_id: str, currency: str, node: Node) -> Refund:
    """A refund the gateway made (`refunded_payment`) is issued; one recorded without
    the gateway is pending until the shop pays it back."""
    created = _when(node, "date_created") or datetime.fromtimestamp(0, timezone.utc)
    issued = bool(node.get("refunded_payment"))
    return Refund(refund_id=f"RF-{node.get('id')}", order_id=order_id,
                  amount=abs(_money(node.get("amount"))), currency=currency,
                  status=RefundStatus.ISSUED if issued else RefundStatus.PENDING,
                  created_at=created, issued_at=created if issued else None,
                  reason=str(node.get("reason") or ""))


def _billing(node: Node) -> Node:
    billing: Node = node.get("billing") or {}
    return billing


def _number(node: Node) -> str:
    return _digits(str(node.get("number") or node.get("id") or ""))


def _address(node: Node) -> Address:
    name = f"{node.get('first_name') or ''} {node.get('last_name') or ''}".strip()
    city, state = str(node.get("city") or ""), str(node.get("state") or "")
    return Address(name=name, line1=str(node.get("address_1") or ""),
                   line2=str(node.get("address_2") or ""),
                   city=f"{city}, {state}" if city and state else city or state,
                   postal_code=str(node.get("postcode") or ""),
                   country=str(node.get("country") or ""))


def _city_and_state(city: str) -> tuple[str, str]:
    """'Seattle, WA' -> ('Seattle', 'WA'): the bot writes a state code into the city as
    customers say it; WooCommerce keeps the state apart."""
    town, sep, state = city.rpartition(",")
    state = state.strip()
    if sep and town.strip() and re.fullmatch(r"[A-Z]{2,3}", state):
        return town.strip(), state
    return city.strip(), ""


def _when(node: Node, field: str) -> Optional[datetime]:
    """WooCommerce's `{field}_gmt` (no offset, UTC), else the shop's local time."""
    text = node.get(f"{field}_gmt") or node.get(field)
    if not text:
        return None
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _shipped_on(item: Node) -> datetime:
    """The extension's `date_shipped` is a day (Y-m-d), or a Unix time."""
    text = str(item.get("date_shipped") or "")
    if text.isdigit():
        return datetime.fromtimestamp(int(text), timezone.utc)
    try:
        day = date.fromisoformat(text[:10])
    except ValueError:
        return datetime.fromtimestamp(0, timezone.utc)
    return datetime.combine(day, datetime.min.time(), timezone.utc)


def _money(value: Any) -> Decimal:
    try:
        return Decimal(str(value if value not in (None, "") else "0")).quantize(CENT)
    except ArithmeticError:
        return Decimal(0)


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text or "")


def _same_phone(stored: str, wanted_digits: str) -> bool:
    """Compared whole, never by their end: '+1 415 555 0107' is +14155550107, and
    '555 0107' is not."""
    return bool(stored) and _digits(stored) == wanted_digits
