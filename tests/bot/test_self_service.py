"""Self-service that moves money or parcels, end to end: the customer's words go in
through the gateway's REST channel to the real Rasa (NLU, forms, rules), the action
server and the store, on SQLite and on PostgreSQL. Each write happens once, only on a
yes to the question that says what it does, and the customer hears what the store shows.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, List, Tuple

import pytest
import pytest_asyncio
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from actions.store.sql import Store, open_store
from actions.store.types import Order, OrderStatus
from bot.app import ROUTER, create_app
from bot.policies import load_channel_policy
from bot.settings import load_settings
from bot.tools.launcher import drop_database, ensure_database
from connectors.rest import RestChannel
from tests.bot.test_identity import REST_TOKEN, rest, said
from tests.conftest import POSTGRES_URL, MailServer, RasaStack, start_rasa_stack
from tests.provider_api import ProviderAPI, answer_twilio_messages, serving_in_a_thread

ADMIN_TOKEN = "admin-token-for-self-service-tests"


@dataclasses.dataclass
class Shop:
    """A stack of its own (its store is written to) and the orders tests may take."""

    stack: RasaStack
    store: Store
    paid: Iterator[Order]
    returnable: Iterator[Order]


SMS_ACCOUNT_SID = "AC" + "5" * 32
STORE_NUMBER = "+15017122661"


@pytest.fixture(scope="module")
def sms_api() -> Iterator[ProviderAPI]:
    """Twilio's Messages API, where the action server texts one-time codes."""
    with serving_in_a_thread(ProviderAPI()) as api:
        answer_twilio_messages(api, SMS_ACCOUNT_SID)
        yield api


def texted_codes(api: ProviderAPI, number: str) -> List[str]:
    return [re.findall(r"\b\d{6}\b", call.form["Body"][0])[0] for call in api.requests
            if call.form.get("To") == [number] and call.form["From"] == [STORE_NUMBER]]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shop(request: pytest.FixtureRequest, trained_model: Path, mail_server: MailServer,
         sms_api: ProviderAPI, tmp_path_factory: pytest.TempPathFactory,
         now: datetime) -> Iterator[Shop]:
    var = tmp_path_factory.mktemp(f"self_service_{request.param}")
    database_url = ""
    if request.param == "postgresql":
        server = sa.engine.make_url(POSTGRES_URL)
        database_url = server.set(database=f"pytest_shop_{uuid.uuid4().hex[:8]}"
                                  ).render_as_string(hide_password=False)
        try:
            ensure_database(database_url)
        except sa.exc.OperationalError as error:
            pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL} ({error.orig})")
    try:
        with start_rasa_stack(trained_model, var, now, database_url,
                              NOTIFY_URL=mail_server.url, NOTIFY_SMS_FROM=STORE_NUMBER,
                              TWILIO_ACCOUNT_SID=SMS_ACCOUNT_SID, TWILIO_AUTH_TOKEN="t" * 32,
                              TWILIO_API_BASE_URL=sms_api.url) as stack:
            store = open_store(stack.database_url)
            yield Shop(stack, store, orders_in(store, OrderStatus.PAID),
                       returnable_orders(store, now))
            store.close()
    finally:
        if database_url:
            drop_database(database_url)


def orders_in(store: Store, status: OrderStatus) -> Iterator[Order]:
    return iter(store.orders.orders_since(datetime(2000, 1, 1, tzinfo=timezone.utc), status))


def returnable_orders(store: Store, now: datetime) -> Iterator[Order]:
    """Generated orders (A1001-A1021 each play a part in the demo, fraud rules included)
    delivered within the return window, every item returnable, refundable by the bot
    (policy/escalation.yml), with no return or refund yet."""
    return (order for order in orders_in(store, OrderStatus.DELIVERED)
            if order.order_id >= "A2001" and order.delivered_at
            and now - order.delivered_at < timedelta(days=20)
            and all(item.returnable for item in order.items)
            and order.total <= Decimal("100.00")
            and store.returns.get_return(order.order_id) is None
            and not store.returns.refunds(order.order_id))


@dataclasses.dataclass
class DemoOrders:
    """Orders a platform's tests may take, as the demo store was seeded: the Shopify and
    WooCommerce stand-ins hold the same ones (their `from_demo`)."""

    paid: Iterator[Order]  # generated, not shipped
    returnable: Iterator[Order]


@contextlib.contextmanager
def demo_orders(stack: RasaStack, now: datetime) -> Iterator[DemoOrders]:
    """From the stack's store, seeded alike (start_rasa_stack); only the generated orders
    (A2001 on), as A1001-A1021 each play their part."""
    store = open_store(stack.database_url)
    try:
        yield DemoOrders((o for o in orders_in(store, OrderStatus.PAID) if o.order_id >= "A2001"),
                         returnable_orders(store, now))
    finally:
        store.close()


@pytest_asyncio.fixture
async def gateway(shop: Shop) -> AsyncIterator[TestClient]:
    settings = dataclasses.replace(load_settings(), rasa_url=shop.stack.rasa_url,
                                   database_url=shop.stack.database_url,
                                   var_dir=shop.stack.var_dir, redis_url="",
                                   agent_api_token=ADMIN_TOKEN,
                                   action_server_url=shop.stack.action_server_url)
    policy = load_channel_policy()
    client = TestClient(TestServer(create_app(settings, {"rest": RestChannel(REST_TOKEN)},
                                              policy)))
    await client.start_server()
    yield client
    await client.close()


class Customer:
    """One customer's REST conversation."""

    def __init__(self, client: TestClient, label: str) -> None:
        self.client, self.sender = client, f"{label}-{uuid.uuid4().hex[:8]}"
        self.replies: List[dict] = []

    async def says(self, text: str) -> str:
        self.replies = await rest(self.client, self.sender, text)
        answer = said(self.replies)
        assert "{" not in answer, f"a placeholder was left unfilled: {answer}"
        return answer

    def buttons(self) -> List[Tuple[str, str]]:
        return [(b["title"], b["payload"]) for reply in self.replies
                for b in reply.get("buttons", [])]

    async def presses(self, title: str) -> str:
        payload = next(payload for label, payload in self.buttons() if label == title)
        return await self.says(payload)


NEW_ADDRESS = "12 Oak Street, Springfield, IL 62704"


async def address_declined_then_changed(customer: Customer, order: Order,
                                        nothing_written: Callable[[], bool]) -> str:
    """On a platform: the customer asks to change the order's address, hears it read
    back, says no (`nothing_written` holds then), asks again and says yes; the answer
    to the yes."""
    await customer.says(f"I want to change the address on order {order.order_id}")
    assert "new delivery address" in await customer.says(order.customer.email)
    question = await customer.says(NEW_ADDRESS)
    assert f"{NEW_ADDRESS}, United States" in question and "Is that right?" in question
    assert [title for title, _ in customer.buttons()] == ["Yes, change it", "No"]
    kept = await customer.says("no")
    assert "haven't changed anything" in kept and nothing_written()
    await customer.says(f"I want to change the address on order {order.order_id}")
    assert "Is that right?" in await customer.says(NEW_ADDRESS)
    done = await customer.says("yes")
    assert f"will now go to {NEW_ADDRESS}, United States" in done
    return done


async def refunded_as_the_only_remedy(customer: Customer, problem: str, email: str,
                                      amount: str) -> str:
    """On a platform that leaves replacements and store credit to people: the customer
    tells the problem ("order A1012 arrived damaged"), proves the order, sends no photo,
    is offered a refund alone, picks it and says yes; the answer to the yes."""
    await customer.says(problem)
    assert "photo" in await customer.says(email)
    await customer.says("no photo")
    assert [title for title, _ in customer.buttons()] == ["A refund"]
    question = await customer.presses("A refund")
    assert amount in question and "Go ahead?" in question
    assert [title for title, _ in customer.buttons()] == ["Yes, refund it", "No"]
    return await customer.says("yes")


async def handoff_rule(client: TestClient, customer: Customer) -> Any:
    desk = client.app[ROUTER].desk
    handoff = await desk.records.read(desk.store.open_for, f"rest:{customer.sender}")
    return handoff and handoff["rule"]


async def test_a_cancel_happens_once_on_a_yes_and_the_store_is_what_the_customer_hears(
        gateway: TestClient, shop: Shop) -> None:
    order = next(shop.paid)
    ann = Customer(gateway, "cancel")
    await ann.says(f"please cancel order {order.order_id}")
    question = await ann.says(order.customer.email)
    assert f"{order.total:.2f}" in question and order.payment_method in question
    assert [title for title, _ in ann.buttons()] == ["Yes, cancel it", "No, keep it"]
    assert shop.store.orders.get_order(order.order_id).status is OrderStatus.PAID

    done = await ann.says("yes")
    refunds = shop.store.returns.refunds(order.order_id)
    assert shop.store.orders.get_order(order.order_id).status is OrderStatus.CANCELLED
    assert len(refunds) == 1 and refunds[0].amount == order.total
    assert "is cancelled" in done and refunds[0].refund_id in done

    again = await ann.says("yes")
    assert "cancelled" not in again and len(shop.store.returns.refunds(order.order_id)) == 1
    status = await ann.says(f"where is my order {order.order_id}?")
    assert "was cancelled" in status and "pending" in status
    assert "not charged" not in status
    [write] = shop.store.writes.for_order(order.order_id)
    assert (write.kind, write.status, write.conversation_id) == (
        "cancel", "done", f"rest:{ann.sender}")


async def test_a_yes_after_another_question_does_not_cancel(
        gateway: TestClient, shop: Shop) -> None:
    order = next(shop.paid)
    ben = Customer(gateway, "stale")
    await ben.says(f"please cancel order {order.order_id}")
    assert "Cancel it?" in await ben.says(order.customer.email)
    fee = await ben.says("is there a cancellation fee?")
    assert "Cancel it?" not in fee
    late = await ben.says("yes")
    assert "haven't done anything" in late and "Cancel it?" in late
    assert shop.store.orders.get_order(order.order_id).status is OrderStatus.PAID
    assert shop.store.writes.for_order(order.order_id) == []
    kept = await ben.presses("No, keep it")
    assert "stays as it is" in kept
    assert shop.store.orders.get_order(order.order_id).status is OrderStatus.PAID


async def test_a_new_address_is_read_back_and_written_only_after_a_yes(
        gateway: TestClient, shop: Shop) -> None:
    order = next(shop.paid)
    cat = Customer(gateway, "address")
    await cat.says(f"I want to change the address on order {order.order_id}")
    assert "new delivery address" in await cat.says(order.customer.email)
    # the country is not guessed: a 5-digit postcode without a US state is asked about
    asked = await cat.says("Hauptstrasse 5, 10115 Berlin")
    assert "Which country" in asked
    question = await cat.says("12 Oak Street, Springfield, IL 62704")
    assert "12 Oak Street, Springfield, IL 62704, United States" in question
    assert "Is that right?" in question
    assert shop.store.orders.get_order(order.order_id).shipping_address == \
        order.shipping_address
    done = await cat.says("yes")
    changed = shop.store.orders.get_order(order.order_id).shipping_address
    assert (changed.line1, changed.city, changed.postal_code, changed.country) == (
        "12 Oak Street", "Springfield, IL", "62704", "US")
    assert "will now go to 12 Oak Street, Springfield, IL 62704, United States" in done


async def test_a_store_that_refuses_gets_an_honest_answer_not_an_outage(
        gateway: TestClient, shop: Shop) -> None:
    order = next(shop.paid)
    dan = Customer(gateway, "refused")
    await dan.says(f"please cancel order {order.order_id}")
    assert "Cancel it?" in await dan.says(order.customer.email)
    with shop.store.engine.begin() as db:  # the warehouse shipped it meanwhile
        db.execute(sa.text("UPDATE orders SET status = 'shipped' WHERE order_id = :id"),
                   {"id": order.order_id})
    refused = await dan.says("yes")
    assert "already shipped" in refused and "unavailable" not in refused
    assert shop.store.orders.get_order(order.order_id).status is OrderStatus.SHIPPED
    assert await handoff_rule(gateway, dan) is None
    [write] = shop.store.writes.for_order(order.order_id)
    assert write.status == "refused"


async def test_asking_where_a_stuck_parcel_is_opens_no_trace_until_the_customer_says_yes(
        gateway: TestClient, shop: Shop) -> None:
    eve = Customer(gateway, "stuck")
    await eve.says("where is my order A1003?")
    late = await eve.says("buyer2@example.com")
    assert "running late" in late and "Shall I ask them?" in late
    assert shop.store.delivery.claims_for_order("A1003") == []
    again = await eve.says("where is order A1003?")
    assert "Shall I ask them?" in again and shop.store.delivery.claims_for_order("A1003") == []
    traced = await eve.says("yes")
    [claim] = shop.store.delivery.claims_for_order("A1003")
    assert claim.kind == "trace" and claim.claim_id in traced
    shown = await eve.says("where is my order A1003?")
    assert claim.claim_id in shown and "Shall I" not in shown
    assert len(shop.store.delivery.claims_for_order("A1003")) == 1


async def test_a_damaged_item_gets_one_remedy_not_a_replacement_and_a_refund(
        gateway: TestClient, shop: Shop) -> None:
    fay = Customer(gateway, "damaged")
    await fay.says("order A1002 arrived damaged")
    assert "photo" in await fay.says("buyer1@example.com")
    await fay.says("no photo")
    assert [title for title, _ in fay.buttons()] == ["A replacement", "A refund",
                                                      "Store credit"]
    question = await fay.presses("A replacement")
    assert "free replacement" in question and "Send it?" in question
    assert shop.store.orders.replacement_of("A1002") is None
    sent = await fay.says("yes")
    replacement = shop.store.orders.replacement_of("A1002")
    assert replacement is not None and replacement.order_id in sent
    assert replacement.total == Decimal("0")

    await fay.says("order A1002 arrived damaged")
    again = await fay.says("no photo")
    assert "already put this right" in again and replacement.order_id in again
    assert shop.store.returns.refunds("A1002") == []


async def test_a_return_and_then_its_refund_are_each_made_once_on_a_yes(
        gateway: TestClient, shop: Shop) -> None:
    order = next(shop.returnable)
    bea = Customer(gateway, "return")
    await bea.says(f"I want to return order {order.order_id}")
    question = await bea.says(order.customer.email)
    assert "Create the return?" in question and f"{order.total:.2f}" in question
    assert [title for title, _ in bea.buttons()] == ["Yes, create it", "No"]
    await bea.presses("No")
    assert shop.store.returns.get_return(order.order_id) is None

    await bea.says(f"I want to return order {order.order_id}")
    created = await bea.says("yes")
    record = shop.store.returns.get_return(order.order_id)
    assert record is not None and record.rma_id in created and record.label_url in created
    await bea.says("yes")
    assert shop.store.returns.get_return(order.order_id) == record

    ship_return(shop.store, order.order_id)  # the carrier scans the parcel going back
    question = await bea.says(f"I want a refund for order {order.order_id}")
    assert f"{order.total:.2f}" in question and "Go ahead?" in question
    assert shop.store.returns.refunds(order.order_id) == []
    done = await bea.says("yes")
    [refund] = shop.store.returns.refunds(order.order_id)
    assert refund.amount == order.total and refund.refund_id in done
    assert "pending" in done and "approved" not in done

    again = await bea.says(f"I want a refund for order {order.order_id}")
    assert "pending" in again and f"{order.total:.2f}" in again
    assert shop.store.returns.refunds(order.order_id) == [refund]


async def test_a_refund_before_the_return_is_shipped_stops_the_line(
        gateway: TestClient, shop: Shop) -> None:
    order = next(shop.returnable)
    cal = Customer(gateway, "early-refund")
    await cal.says(f"I want to return order {order.order_id}")
    await cal.says(order.customer.email)
    await cal.says("yes")
    assert shop.store.returns.get_return(order.order_id) is not None

    await cal.says(f"I want my refund for order {order.order_id} now")
    assert await handoff_rule(gateway, cal) == "stop_the_line_refund_before_return"
    assert shop.store.returns.refunds(order.order_id) == []
    assert shop.store.writes.hold_on(order.order_id) is not None


def ship_return(store: Store, order_id: str) -> None:
    """What the returns carrier's first scan does to the store's return record."""
    from actions.store.sql import returns
    from actions.store.types import ReturnStatus

    with store.engine.begin() as conn:
        conn.execute(returns.update().where(returns.c.order_id == order_id).values(
            status=ReturnStatus.IN_TRANSIT.value, shipped_at=datetime.now(timezone.utc)))


# --- conversation repair ---------------------------------------------------------------------


async def test_a_message_with_two_requests_gets_both_one_after_the_other(
        gateway: TestClient, shop: Shop) -> None:
    order = next(shop.paid)
    dee = Customer(gateway, "two-requests")
    first = await dee.says(f"Please cancel order {order.order_id}. "
                           "Also, what payment methods do you accept?")
    assert 'You also asked: "Also, what payment methods do you accept?"' in first
    assert "Visa" not in first
    await dee.says(order.customer.email)
    assert [title for title, _ in dee.buttons()] == ["Yes, cancel it", "No, keep it"]
    done = await dee.says("yes")
    assert shop.store.orders.get_order(order.order_id).status is OrderStatus.CANCELLED
    assert len(shop.store.returns.refunds(order.order_id)) == 1
    assert done.index("cancelled") < done.index("Now, your other request") < done.index("Visa")


async def test_a_question_answered_at_once_is_followed_by_the_other_request_in_one_reply(
        gateway: TestClient, shop: Shop) -> None:
    eve = Customer(gateway, "faq-first")
    reply = await eve.says("What is your return policy? And where is my order A1001?")
    assert reply.index("return most items") < reply.index("Now, your other request")
    assert "email address or phone number" in reply and "You also asked" not in reply
    status = await eve.says("buyer1@example.com")
    assert "A1001" in status and "UPS" in status


# --- conversation repair (single requests) -----------------------------------------------------


async def test_an_order_number_without_its_letter_is_read_with_the_stores(
        gateway: TestClient, shop: Shop) -> None:
    gus = Customer(gateway, "digits")
    assert "order number" in await gus.says("where is my order?")
    assert "email" in await gus.says("#1001")
    assert "1Z999AA10123456784" in await gus.says("buyer1@example.com")


async def test_without_an_order_number_the_bot_offers_a_person_instead_of_asking_forever(
        gateway: TestClient, shop: Shop) -> None:
    hal = Customer(gateway, "no-number")
    await hal.says("where is my order?")
    first = await hal.says("hmm")
    assert "doesn't look like an order number" in first
    second = await hal.says("12")
    assert "doesn't look like" not in second and "a person can look it up" in second
    assert [title for title, _ in hal.buttons()] == ["Yes, a person", "No, thanks"]
    await hal.says("yes")
    assert await handoff_rule(gateway, hal) == "identity_not_verified"


async def test_without_the_order_number_a_code_emailed_to_the_customer_proves_them(
        gateway: TestClient, shop: Shop, mail_server: MailServer) -> None:
    ivy = Customer(gateway, "code")
    await ivy.says("where is my order?")
    hint = await ivy.says("I can't find the order number")
    assert "email address or phone number on your orders" in hint
    sent = await ivy.says("buyer1@example.com")
    assert "emailed it a one-time code" in sent and "6-digit code" in sent
    code = mail_server.codes_to("buyer1@example.com")[-1]
    wrong = await ivy.says("000000" if code != "000000" else "111111")
    assert "doesn't match" in wrong
    listed = await ivy.says(code)
    assert "Which order" in listed and "A1001" not in listed
    [a1001] = [title for title, _ in ivy.buttons() if title.startswith("#A1001")]
    status = await ivy.presses(a1001)
    assert "A1001" in status and "UPS" in status


async def test_without_the_order_number_a_code_texted_to_the_number_on_file_proves_them(
        gateway: TestClient, shop: Shop, sms_api: ProviderAPI) -> None:
    kim = Customer(gateway, "sms-code")
    await kim.says("where is my order?")
    hint = await kim.says("I don't have the order number")
    assert "phone number on your orders" in hint
    sent = await kim.says("+1 415 555 0101")
    assert "texted it a one-time code" in sent
    code = texted_codes(sms_api, "+14155550101")[-1]
    listed = await kim.says(code)
    assert "Which order" in listed
    assert any(title.startswith("#A1001") for title, _ in kim.buttons())


async def test_a_number_without_orders_is_answered_alike_and_texted_nothing(
        gateway: TestClient, shop: Shop, sms_api: ProviderAPI) -> None:
    lou = Customer(gateway, "sms-no-orders")
    await lou.says("where is my order?")
    sent = await lou.says("+1 415 555 0199")
    assert "texted it a one-time code" in sent
    assert texted_codes(sms_api, "+14155550199") == []


async def test_an_email_without_orders_is_answered_alike_and_sent_nothing(
        gateway: TestClient, shop: Shop, mail_server: MailServer) -> None:
    jon = Customer(gateway, "no-orders")
    await jon.says("where is my order?")
    sent = await jon.says("nobody-here@example.com")
    assert "emailed it a one-time code" in sent
    assert mail_server.codes_to("nobody-here@example.com") == []
    after = await jon.says("123456")
    assert "can't be used" in after and "a person can look it up" in after


async def test_a_complaint_while_the_bot_asks_for_the_order_number_is_heard(
        gateway: TestClient, shop: Shop) -> None:
    ivy = Customer(gateway, "complaint")
    await ivy.says("where is my order?")
    heard = await ivy.says("this is terrible service, I want to make a complaint")
    assert "order number" not in heard and "sorry we let you down" in heard
    assert await handoff_rule(gateway, ivy) == "complaint"


# --- escalation rules -----------------------------------------------------------------------


@pytest.mark.parametrize("text,rule,safety_text", [
    ("I will sue you if this isn't fixed", "legal_threat", False),
    ("it started smoking when I plugged it in", "safety_incident", True),
    ("my son cut his hand on the blender", "safety_incident", True),
    ("I'll file a chargeback with my bank", "chargeback", False),
])
async def test_each_trigger_goes_to_its_own_rule_with_its_own_words(
        gateway: TestClient, shop: Shop, text: str, rule: str, safety_text: bool) -> None:
    jo = Customer(gateway, "trigger")
    answer = await jo.says(text)
    assert await handoff_rule(gateway, jo) == rule
    assert ("emergency services" in answer) is safety_text


async def test_saying_there_is_no_chargeback_escalates_nothing(
        gateway: TestClient, shop: Shop) -> None:
    kim = Customer(gateway, "negated")
    answer = await kim.says("I don't want a chargeback, I just want to know where my order is")
    assert await handoff_rule(gateway, kim) is None
    assert "order number" in answer


async def test_an_empty_box_stops_the_line_on_that_order(gateway: TestClient,
                                                         shop: Shop) -> None:
    lou = Customer(gateway, "empty-box")
    await lou.says("order A1015 arrived damaged")
    assert "photo" in await lou.says("buyer8@example.com")
    held = await lou.says("the box was empty")
    assert await handoff_rule(gateway, lou) == "stop_the_line_empty_box"
    assert "someone" in held.lower() or "team" in held.lower()
    hold = shop.store.writes.hold_on("A1015")
    assert hold is not None and hold.conversation_id == f"rest:{lou.sender}"
    # a person reviews it and resolves the handoff: the bot may act on the order again
    desk = gateway.app[ROUTER].desk
    handoff = await desk.records.read(desk.store.open_for, f"rest:{lou.sender}")
    await desk.records.write(desk.store.add_agent, "rev", ["payments_fraud"], 3, 0.0)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for action, body in (("claim", {"agent": "rev"}),
                         ("resolve", {"disposition": "information_given", "note": "ok"})):
        response = await gateway.post(f"/api/handoffs/{handoff['id']}/{action}", json=body,
                                      headers=admin)
        assert response.status == 200, await response.text()
    assert shop.store.writes.hold_on("A1015") is None
