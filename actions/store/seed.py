"""Deterministic demo data: 21 hand-written orders (A1001-A1021, one per support
situation the bot handles) plus 200 generated ones (A2001-A2200) for realism and load.

Every date is relative to `now`, so "shipped yesterday" stays true whenever the demo
is (re)seeded. Seeding wipes every table, including contact events.
"""
from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Optional, Sequence

import sqlalchemy as sa

from actions.store.sql import (
    Store,
    address_values,
    carrier_claims,
    customers,
    digits_only,
    item_serials,
    label_url,
    metadata,
    open_store,
    order_items,
    orders,
    refunds,
    returns,
    shipments,
    tracking_events,
)
from actions.store.types import (
    Address,
    DeliveryException,
    OrderStatus,
    RefundStatus,
    ReturnStatus,
)

WAREHOUSE = "Reno, NV"
GENERATED_ORDERS = 200
GENERATED_CUSTOMERS = 80


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price: Decimal
    returnable: bool = True


CATALOGUE = {p.sku: p for p in (
    Product("SHOE-RUN-42", "Trailrunner running shoes", Decimal("89.00")),
    Product("LAPTOP-14", "ProBook 14 laptop", Decimal("1250.00")),
    Product("PHONE-X2", "Nova X2 smartphone", Decimal("980.00")),
    Product("TEE-ORG-M", "Organic cotton T-shirt", Decimal("19.50")),
    Product("JEANS-SLIM-32", "Slim-fit jeans", Decimal("59.00")),
    Product("HOODIE-ZIP-L", "Zip hoodie", Decimal("45.00")),
    Product("MUG-SET-2", "Ceramic mug set", Decimal("24.00")),
    Product("HEADPHONES-BT", "Wireless headphones", Decimal("129.00")),
    Product("KETTLE-EL", "Electric kettle", Decimal("39.00")),
    Product("BACKPACK-25", "Daypack 25 L", Decimal("69.00")),
    Product("BOOK-COOK", "Everyday cookbook", Decimal("28.00")),
    Product("BLENDER-PRO", "Pro blender", Decimal("149.00")),
    Product("YOGA-MAT", "Yoga mat", Decimal("32.00")),
    Product("WATCH-FIT", "Fitness watch", Decimal("199.00")),
    Product("SWIMSUIT-W", "Swimsuit (final sale)", Decimal("34.00"), returnable=False),
    Product("EARRINGS-SLV", "Silver earrings", Decimal("49.00"), returnable=False),
)}

CARRIER_HUBS = {"UPS": "Louisville, KY", "FedEx": "Memphis, TN",
                "DHL": "Cincinnati, OH", "USPS": "Salt Lake City, UT"}
TRACKING_URLS = {
    "UPS": "https://www.ups.com/track?tracknum={}",
    "FedEx": "https://www.fedex.com/fedextrack/?trknbr={}",
    "DHL": "https://www.dhl.com/us-en/home/tracking.html?tracking-id={}",
    "USPS": "https://tools.usps.com/go/TrackConfirmAction?tLabels={}",
}
CITIES = (("San Francisco, CA", "94105"), ("Oakland, CA", "94607"), ("Seattle, WA", "98101"),
          ("Portland, OR", "97205"), ("Austin, TX", "78701"), ("Denver, CO", "80202"),
          ("Chicago, IL", "60601"), ("Boston, MA", "02108"), ("Brooklyn, NY", "11201"),
          ("Atlanta, GA", "30303"), ("Minneapolis, MN", "55401"), ("Phoenix, AZ", "85004"))
STREETS = ("Market St", "Oak Ave", "Pine St", "Maple Dr", "Cedar Ln", "Elm St",
           "Lakeview Rd", "Park Ave", "Hillside Blvd", "2nd Ave", "Mission St", "Sunset Blvd")
FIRST_NAMES = ("Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper", "Jesse",
               "Kendall", "Logan", "Morgan", "Noah", "Olivia", "Parker", "Quinn", "Riley",
               "Sofia", "Tyler", "Uma", "Wei")
LAST_NAMES = ("Anderson", "Brown", "Chen", "Davis", "Evans", "Fischer", "Gonzalez", "Hughes",
              "Ito", "Johnson", "Khan", "Lopez", "Miller", "Nguyen", "Okafor", "Patel")
PAYMENT_METHODS = ("visa", "mastercard", "amex", "paypal", "apple_pay")
PLACED_DAYS_AGO = {OrderStatus.PAID: (0.1, 2), OrderStatus.SHIPPED: (2, 8),
                   OrderStatus.DELIVERED: (8, 120), OrderStatus.CANCELLED: (8, 120),
                   OrderStatus.RETURNED: (20, 120)}

Event = tuple[datetime, str, str]  # time, location, description


class _Seed:
    """Collects rows for every table, with all times relative to `now`."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.rows: dict[sa.Table, list[dict[str, Any]]] = defaultdict(list)
        self.homes: dict[int, Address] = {}
        self.orders: dict[str, dict[str, Any]] = {}

    def ago(self, days: float, hours: float = 0) -> datetime:
        return self.now - timedelta(days=days, hours=hours)

    def day(self, offset: int) -> date:
        return (self.now + timedelta(days=offset)).date()

    def customer(self, customer_id: int, name: str, email: str, phone: str,
                 home: Address) -> None:
        self.homes[customer_id] = home
        self.rows[customers].append({"customer_id": customer_id, "name": name, "email": email,
                                     "phone": phone, "phone_digits": digits_only(phone)})

    def order(self, order_id: str, customer_id: int, status: OrderStatus, placed: datetime,
              promised: date, items: Sequence[tuple[str, int]], payment: str = "visa",
              ship_to: Optional[Address] = None, cancelled: Optional[datetime] = None) -> None:
        home = self.homes[customer_id]
        for sku, quantity in items:
            product = CATALOGUE[sku]
            self.rows[order_items].append({
                "order_id": order_id, "sku": sku, "name": product.name, "quantity": quantity,
                "unit_price": product.price, "returnable": product.returnable})
        total = sum((CATALOGUE[sku].price * quantity for sku, quantity in items), Decimal("0"))
        row = {"order_id": order_id, "customer_id": customer_id, "status": status.value,
               "placed_at": placed, "promised_date": promised, "total": total,
               "currency": "USD", "payment_method": payment,
               **address_values("shipping", ship_to or home), **address_values("billing", home),
               "shipped_at": None, "delivered_at": None, "cancelled_at": cancelled,
               "cancel_reason": "customer request" if cancelled else None}
        self.orders[order_id] = row
        self.rows[orders].append(row)

    def ship(self, order_id: str, carrier: str, tracking_number: str, shipped: datetime,
             eta: date, exception: DeliveryException = DeliveryException.NONE,
             events: Sequence[Event] = (), delivered: Optional[datetime] = None) -> None:
        order = self.orders[order_id]
        order.update(shipped_at=shipped, delivered_at=delivered)
        self.rows[shipments].append({
            "order_id": order_id, "carrier": carrier, "tracking_number": tracking_number,
            "tracking_url": TRACKING_URLS[carrier].format(tracking_number),
            "shipped_at": shipped, "eta": eta, "exception": exception.value,
            "delivered_at": delivered})
        destination = order["shipping_city"]
        for at, location, description in events or self.journey(carrier, shipped,
                                                                  delivered, destination):
            self.rows[tracking_events].append({"order_id": order_id, "time": at,
                                               "location": location, "description": description})

    def journey(self, carrier: str, shipped: datetime, delivered: Optional[datetime],
                destination: str) -> list[Event]:
        """The usual scans: pickup, hub, then out for delivery and delivered (or en route)."""
        events = [(shipped, WAREHOUSE, f"Picked up by {carrier}"),
                  (shipped + timedelta(hours=10), CARRIER_HUBS[carrier], "Departed facility")]
        if delivered is not None:
            events += [(delivered - timedelta(hours=5), destination, "Out for delivery"),
                       (delivered, destination, "Delivered, front door")]
        return [e for e in events if e[0] <= self.now]

    def ret(self, rma_id: str, order_id: str, status: ReturnStatus, created: datetime,
            reason: str, shipped: Optional[datetime] = None,
            received: Optional[datetime] = None) -> None:
        self.rows[returns].append({
            "rma_id": rma_id, "order_id": order_id, "status": status.value,
            "label_url": label_url(rma_id), "reason": reason, "created_at": created,
            "shipped_at": shipped, "received_at": received})

    def refund(self, refund_id: str, order_id: str, amount: Decimal, created: datetime,
               issued: Optional[datetime] = None, reason: str = "return") -> None:
        self.rows[refunds].append({
            "refund_id": refund_id, "order_id": order_id, "amount": amount, "currency": "USD",
            "status": (RefundStatus.ISSUED if issued else RefundStatus.PENDING).value,
            "reason": reason, "created_at": created, "issued_at": issued})

    def serial(self, order_id: str, sku: str, shipped: str,
               returned: Optional[str] = None) -> None:
        self.rows[item_serials].append({"order_id": order_id, "sku": sku,
                                        "shipped_serial": shipped, "returned_serial": returned})

    def claim(self, claim_id: str, order_id: str, kind: str, created: datetime) -> None:
        self.rows[carrier_claims].append({"claim_id": claim_id, "order_id": order_id,
                                          "kind": kind, "created_at": created})


def _home(name: str, number: int, street: str, city: str, postal_code: str) -> Address:
    return Address(name=name, line1=f"{number} {street}", city=city,
                   postal_code=postal_code, country="US")


DEMO_CUSTOMERS = (
    (1, "Alex Morgan", _home("Alex Morgan", 500, "Market St", "San Francisco, CA", "94105")),
    (2, "Priya Shah", _home("Priya Shah", 1200, "Broadway", "Oakland, CA", "94612")),
    (3, "Jordan Lee", _home("Jordan Lee", 88, "Pine St", "Seattle, WA", "98101")),
    (4, "Maria Garcia", _home("Maria Garcia", 2301, "E 6th St", "Austin, TX", "78702")),
    (5, "Sam Taylor", _home("Sam Taylor", 17, "Beacon St", "Boston, MA", "02108")),
    (6, "Chris Walker", _home("Chris Walker", 1550, "Larimer St", "Denver, CO", "80202")),
    (7, "Taylor Kim", _home("Taylor Kim", 410, "N Michigan Ave", "Chicago, IL", "60611")),
    (8, "Jamie Rivera", _home("Jamie Rivera", 75, "Court St", "Brooklyn, NY", "11201")),
    # three accounts that all ship to one address (a stop-the-line rule)
    (9, "Lee Park", _home("Lee Park", 77, "Harbor Way", "Portland, OR", "97209")),
    (10, "Robin Park", _home("Robin Park", 77, "Harbor Way", "Portland, OR", "97209")),
    (11, "Casey Park", _home("Casey Park", 77, "Harbor Way", "Portland, OR", "97209")),
    (12, "Drew Novak", _home("Drew Novak", 930, "Colfax Ave", "Denver, CO", "80204")),
)
FORWARDER = Address(name="J. Smith", line1="1400 Freight Rd", line2="Unit 4",
                    city="Newark, NJ", postal_code="07114", country="US")


def _demo(s: _Seed) -> None:
    for n, name, home in DEMO_CUSTOMERS:
        s.customer(n, name, f"buyer{n}@example.com", f"+1 415 555 01{n:02d}", home)
    paid, shipped, delivered = OrderStatus.PAID, OrderStatus.SHIPPED, OrderStatus.DELIVERED

    # A1001: on its way, on time.
    s.order("A1001", 1, shipped, s.ago(3), s.day(3), [("TEE-ORG-M", 2), ("JEANS-SLIM-32", 1)])
    s.ship("A1001", "UPS", "1Z999AA10123456784", s.ago(1), s.day(2), events=[
        (s.ago(1), WAREHOUSE, "Picked up by UPS"),
        (s.ago(0, 14), "Louisville, KY", "Departed UPS facility"),
        (s.ago(0, 3), "Oakland, CA", "Arrived at UPS facility")])
    # A1002: delivered, returnable running shoes.
    s.order("A1002", 1, delivered, s.ago(9), s.day(-4), [("SHOE-RUN-42", 1)], payment="paypal")
    s.ship("A1002", "FedEx", "394857261034", s.ago(8), s.day(-5), delivered=s.ago(5))
    # A1003: stuck, no scan for 6 days, promise broken.
    s.order("A1003", 2, shipped, s.ago(10), s.day(-2), [("BACKPACK-25", 1)])
    s.ship("A1003", "FedEx", "771234509876", s.ago(9), s.day(-2), DeliveryException.STUCK, [
        (s.ago(9), WAREHOUSE, "Picked up by FedEx"),
        (s.ago(8), "Memphis, TN", "Departed FedEx hub"),
        (s.ago(6), "Chicago, IL", "Arrived at FedEx facility")])
    # A1004: paid, not shipped: can still be cancelled or redirected.
    s.order("A1004", 3, paid, s.ago(0, 5), s.day(4), [("BLENDER-PRO", 1)])
    # A1005: delivered long ago (outside a 30-day return window).
    s.order("A1005", 3, delivered, s.ago(50), s.day(-45), [("BOOK-COOK", 1), ("MUG-SET-2", 1)])
    s.ship("A1005", "USPS", "9400111899223100045678", s.ago(48), s.day(-45),
           delivered=s.ago(45))
    # A1006: expensive laptop delivered yesterday.
    s.order("A1006", 4, delivered, s.ago(4), s.day(-1), [("LAPTOP-14", 1)], payment="amex")
    s.ship("A1006", "UPS", "1Z999AA10123456791", s.ago(3), s.day(-1), delivered=s.ago(1))
    # A1007: the customer shipped the return back; refund pending.
    s.order("A1007", 4, delivered, s.ago(16), s.day(-12), [("HEADPHONES-BT", 1)])
    s.ship("A1007", "DHL", "4819203746", s.ago(15), s.day(-12), delivered=s.ago(12))
    s.ret("RMA-K7M2Q9XA", "A1007", ReturnStatus.IN_TRANSIT, s.ago(5), "doesn't fit",
          shipped=s.ago(3))
    s.refund("RF-7H2K9Q4M", "A1007", CATALOGUE["HEADPHONES-BT"].price, s.ago(3))
    # A1008: returned, received, refunded.
    s.order("A1008", 5, OrderStatus.RETURNED, s.ago(24), s.day(-20), [("HOODIE-ZIP-L", 1)])
    s.ship("A1008", "USPS", "9400111899223100012345", s.ago(23), s.day(-20),
           delivered=s.ago(20))
    s.ret("RMA-3XW8P5LN", "A1008", ReturnStatus.RECEIVED, s.ago(12), "changed my mind",
          shipped=s.ago(10), received=s.ago(5))
    s.refund("RF-5N8D2W6R", "A1008", Decimal("45.00"), s.ago(5), issued=s.ago(3))
    # A1009: cancelled before shipping.
    s.order("A1009", 5, OrderStatus.CANCELLED, s.ago(5), s.day(0), [("YOGA-MAT", 1)],
            cancelled=s.ago(4))
    s.refund("RF-9C4L2T8V", "A1009", CATALOGUE["YOGA-MAT"].price, s.ago(4), issued=s.ago(3),
             reason="cancelled: customer request")
    # A1010: lost by the carrier.
    s.order("A1010", 2, shipped, s.ago(15), s.day(-9), [("WATCH-FIT", 1)])
    s.ship("A1010", "USPS", "9400111899223100098765", s.ago(14), s.day(-9),
           DeliveryException.LOST, [
               (s.ago(14), WAREHOUSE, "Picked up by USPS"),
               (s.ago(12), "Salt Lake City, UT", "In transit to next facility"),
               (s.ago(2), "Salt Lake City, UT", "Package declared lost by the carrier")])
    # A1011: high value, shipped to an address other than the billing one.
    s.order("A1011", 6, delivered, s.ago(6), s.day(-2), [("PHONE-X2", 1)], ship_to=FORWARDER)
    s.ship("A1011", "FedEx", "771234501122", s.ago(5), s.day(-2), delivered=s.ago(2))
    # A1012-A1014: a customer with two earlier "not received" claims.
    s.order("A1012", 7, delivered, s.ago(6), s.day(-3), [("KETTLE-EL", 1)])
    s.ship("A1012", "UPS", "1Z999AA10123456802", s.ago(5), s.day(-3), delivered=s.ago(3))
    s.order("A1013", 7, delivered, s.ago(24), s.day(-20), [("MUG-SET-2", 1)])
    s.ship("A1013", "UPS", "1Z999AA10123456813", s.ago(23), s.day(-20), delivered=s.ago(20))
    s.claim("CLM-8R4T6Y2U", "A1013", "not_received", s.ago(15))
    s.order("A1014", 7, delivered, s.ago(44), s.day(-40), [("BOOK-COOK", 1)])
    s.ship("A1014", "UPS", "1Z999AA10123456824", s.ago(43), s.day(-40), delivered=s.ago(40))
    s.claim("CLM-2B9N5M7K", "A1014", "not_received", s.ago(35))
    # A1015: final sale, not returnable.
    s.order("A1015", 8, delivered, s.ago(7), s.day(-4), [("SWIMSUIT-W", 1)])
    s.ship("A1015", "USPS", "9400111899223100055555", s.ago(6), s.day(-4), delivered=s.ago(4))
    # A1016: delayed by the carrier, promise missed, new ETA.
    s.order("A1016", 8, shipped, s.ago(7), s.day(-1), [("JEANS-SLIM-32", 1)])
    s.ship("A1016", "DHL", "4819203799", s.ago(6), s.day(2), DeliveryException.DELAYED, [
        (s.ago(6), WAREHOUSE, "Picked up by DHL"),
        (s.ago(5), "Cincinnati, OH", "Departed DHL hub"),
        (s.ago(1), "Cincinnati, OH", "Delay reported by the carrier: weather")])
    # A1017-A1019: three accounts, one delivery address; a claim on A1019 stops the line.
    for order_id, customer, days in (("A1017", 9, 30), ("A1018", 10, 20), ("A1019", 11, 6)):
        s.order(order_id, customer, delivered, s.ago(days), s.day(3 - days),
                [("MUG-SET-2", 1)])
        s.ship(order_id, "UPS", f"1Z999AA1012345{customer:04d}", s.ago(days - 1),
               s.day(3 - days), delivered=s.ago(days - 3))
    # A1020-A1021: the warehouse received A1020's headphones back with another serial
    # number than the one shipped (a swapped unit); a claim on any of the customer's
    # orders (A1021, say) stops the line.
    s.order("A1020", 12, OrderStatus.RETURNED, s.ago(40), s.day(-35), [("HEADPHONES-BT", 1)])
    s.ship("A1020", "UPS", "1Z999AA10123456840", s.ago(39), s.day(-35), delivered=s.ago(35))
    s.ret("RMA-9S4W2P7Q", "A1020", ReturnStatus.RECEIVED, s.ago(30), "stopped working",
          shipped=s.ago(28), received=s.ago(24))
    s.serial("A1020", "HEADPHONES-BT", "HBT-24-118842", returned="HBT-22-004417")
    s.order("A1021", 12, delivered, s.ago(8), s.day(-4), [("WATCH-FIT", 1)])
    s.ship("A1021", "UPS", "1Z999AA10123456857", s.ago(7), s.day(-4), delivered=s.ago(4))
    s.serial("A1021", "WATCH-FIT", "WF-25-330917")
    # serial numbers of the other electronics shipped
    for order_id, sku, serial in (("A1006", "LAPTOP-14", "PB14-25-771203"),
                                  ("A1007", "HEADPHONES-BT", "HBT-25-220931"),
                                  ("A1010", "WATCH-FIT", "WF-25-118406"),
                                  ("A1011", "PHONE-X2", "NX2-25-905561")):
        s.serial(order_id, sku, serial)


def _tracking_number(rng: random.Random, carrier: str) -> str:
    digits = "".join(rng.choices("0123456789", k=20))
    if carrier == "UPS":
        return "1Z" + "".join(rng.choices("ABCDEFGHJKLMNPRSTUVWXYZ0123456789", k=6)) + digits[:10]
    return {"FedEx": digits[:12], "DHL": digits[:10], "USPS": "94001" + digits[:17]}[carrier]


def _generated(s: _Seed, rng: random.Random) -> None:
    """Customers buyer100+ and orders A2001+ with a realistic mix of states."""
    for k in range(GENERATED_CUSTOMERS):
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        city, postal_code = rng.choice(CITIES)
        home = _home(name, rng.randint(1, 9999), rng.choice(STREETS), city, postal_code)
        s.customer(100 + k, name, f"buyer{100 + k}@example.com",
                   f"+1 628 555 {100 + k:04d}", home)
    kinds = (OrderStatus.PAID, OrderStatus.SHIPPED, OrderStatus.DELIVERED,
             OrderStatus.CANCELLED, OrderStatus.RETURNED)
    skus = sorted(CATALOGUE)
    latest = s.ago(0, 1)
    for n in range(GENERATED_ORDERS):
        order_id = f"A{2001 + n}"
        status = rng.choices(kinds, weights=(10, 20, 55, 8, 7))[0]
        items = [(sku, rng.choice((1, 1, 1, 2))) for sku in rng.sample(skus, rng.randint(1, 3))]
        placed = s.ago(rng.uniform(*PLACED_DAYS_AGO[status]))
        promised = (placed + timedelta(days=rng.randint(4, 7))).date()
        cancelled = placed + timedelta(hours=rng.uniform(1, 30)) \
            if status is OrderStatus.CANCELLED else None
        s.order(order_id, 100 + rng.randrange(GENERATED_CUSTOMERS), status, placed, promised,
                items, payment=rng.choice(PAYMENT_METHODS), cancelled=cancelled)
        if status is OrderStatus.CANCELLED and cancelled is not None:
            s.refund(f"RF-C{n:07d}", order_id, s.orders[order_id]["total"], cancelled,
                     issued=cancelled + timedelta(days=1), reason="cancelled: customer request")
        if status in (OrderStatus.PAID, OrderStatus.CANCELLED):
            continue
        carrier = rng.choice(sorted(CARRIER_HUBS))
        shipped = min(placed + timedelta(days=rng.uniform(0.3, 1.5)), latest)
        if status is OrderStatus.SHIPPED:
            exception = rng.choices(list(DeliveryException), weights=(85, 10, 5, 0))[0]
            s.ship(order_id, carrier, _tracking_number(rng, carrier), shipped,
                   max(promised, s.day(1)), exception)
            continue
        delivered = min(shipped + timedelta(days=rng.uniform(1.5, 5)), latest)
        s.ship(order_id, carrier, _tracking_number(rng, carrier), shipped, delivered.date(),
               delivered=delivered)
        if status is OrderStatus.RETURNED:
            received = delivered + timedelta(days=6)  # placed >= 20 days ago: in the past
            s.ret(f"RMA-G{n:07d}", order_id, ReturnStatus.REFUNDED, delivered + timedelta(days=1),
                  "changed my mind", shipped=delivered + timedelta(days=2), received=received)
            s.refund(f"RF-G{n:07d}", order_id, s.orders[order_id]["total"], received,
                     issued=received + timedelta(days=1))


def seed_demo_store(store: Store, now: Optional[datetime] = None) -> int:
    """Wipe every table and load the demo data; returns the number of orders."""
    s = _Seed((now or datetime.now(timezone.utc)).astimezone(timezone.utc))
    _demo(s)
    _generated(s, random.Random(42))
    with store.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
        for table in metadata.sorted_tables:
            if s.rows[table]:
                conn.execute(table.insert(), s.rows[table])
    return len(s.orders)


def main() -> None:
    """`python -m actions.store.seed`: reseed the store at DATABASE_URL or var/store.db."""
    store = open_store()
    started = time.perf_counter()
    count = seed_demo_store(store)
    print(f"seeded {count} orders into {store.engine.url!r} "
          f"in {time.perf_counter() - started:.2f}s")
    store.close()


if __name__ == "__main__":
    main()
