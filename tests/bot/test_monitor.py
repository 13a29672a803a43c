"""Proactive outreach (bot/outreach/) against real SQLite databases: the demo store
seeded relative to a fixed clock, and the gateway's records with the conversations each
test writes. Sends go through a real Router (its delivery records turns and
deliveries) to channels that record what they were asked to send, or to the real
WhatsApp connector against a local stand-in for the Graph API."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
import pytest_asyncio
import sqlalchemy as sa
import yaml
from aiohttp import web

from actions.policy import load_policy
from actions.store.seed import seed_demo_store
from actions.store.sql import SqlDelivery, Store, open_store, shipments, tracking_events
from actions.store.types import CarrierClaim, StoreSystems, WriteRecord
from bot.handoff.desk import HandoffDesk
from bot.handoff.events import EventBus, EventType
from bot.handoff.live import LiveQueues
from bot.handoff.policy import load_handoff_policy
from bot.handoff.store import Handoff, HandoffStore, handoffs
from bot.handoff.store import metadata as handoff_tables
from bot.messaging.inbox import SqlInbox
from bot.messaging.rasa_client import RasaClient
from bot.messaging.records import GatewayRecords
from bot.messaging.records import metadata as records_tables
from bot.outreach.directory import sender_phone
from bot.outreach.policy import MonitorPolicy, load_monitor_policy
from bot.outreach.report import RunReport
from bot.outreach.run import Outreach
from bot.outreach.schedule import Monitor
from bot.outreach.shipments import day
from bot.outreach.tables import metadata as monitor_tables
from bot.outreach.tables import outreach
from bot.router import Router
from bot.services import run_once
from bot.settings import load_settings
from common.paths import REPO_ROOT
from common.policy_files import PolicyError
from common.sql import create_store_engine
from connectors.channel import Channel, ChannelContext
from connectors.config import REQUIRED, ChannelPolicy, WhatsAppCredentials
from connectors.message import Delivery, Message, Reply
from connectors.whatsapp import WhatsAppChannel
from tests.connectors.conftest import channel_policy
from tests.provider_api import ProviderAPI, RecordedRequest

HOUR = 3600.0
DAY = 24 * HOUR
# The demo customers of the orders the tests are about (actions/store/seed.py):
# buyer2 has A1003 (no scan for 6 days and 2 days late) and A1010 (declared lost);
# buyer8 has A1016 (promised yesterday, delayed by the carrier, scanned yesterday);
# buyer1 has A1001 (on time). Generated customers (+1 628 …) never write here.
BUYER1_SMS = "+14155550101"
BUYER2_WHATSAPP = "14155550102"
BUYER8_SMS = "+14155550108"
BUYER2, BUYER8 = 2, 8  # their customer ids
PHONE_NUMBER_ID = "106540352242922"
MESSAGES_PATH = f"/v21.0/{PHONE_NUMBER_ID}/messages"
TEMPLATE = "support_follow_up"  # policy/channels.yml whatsapp.window_closed_template


def monitor_policy() -> MonitorPolicy:
    """policy/monitor.yml, whatever the time of day the tests run: business hours are
    tested on their own."""
    return load_monitor_policy(channel_policy()).copy(update={"only_in_business_hours": False})


def with_products(policy: MonitorPolicy, **changes: Any) -> MonitorPolicy:
    return policy.copy(update={"products": policy.products.copy(update=changes)})


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingChannel(Channel):
    """A channel that accepts everything and remembers (recipient, text)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: List[Tuple[str, str]] = []

    def install(self, app: web.Application, context: ChannelContext) -> None:
        return None

    async def send(self, recipient: str, replies: Sequence[Reply], context: ChannelContext,
                   answering: Optional[Message] = None) -> List[Delivery]:
        self.sent.extend((recipient, reply.text) for reply in replies)
        return [Delivery("sent", f"{self.name}-{len(self.sent)}", attempts=1) for _ in replies]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def wrote(records: GatewayRecords, at: float, connector: str, sender: str,
          text: str = "hello", channel: Optional[str] = None) -> str:
    """The customer wrote at `at`, as the router records it; the conversation id."""
    message = Message(connector=connector, channel=channel or connector, sender=sender,
                      message_id=f"{sender}-{at}-{text}", text=text,
                      store_address="+14155550000", received_at=at)
    records.record_inbound(message)
    return message.conversation_id


def add_handoff(records: GatewayRecords, created: float, conversation_id: str,
                order_id: Optional[str], verified: bool = True, status: str = "resolved",
                owner: Optional[int] = None) -> None:
    """A handoff of the conversation; `verified` with an order: the customer gave the
    order number and its contact (actions/conversation.py handoff_payload); `owner`, the
    customer id the order's snapshot names (bot/handoff/snapshot.py)."""
    snapshot = {"order_id": order_id, "customer_id": owner} if owner is not None else None
    connector = conversation_id.split(":", 1)[0]
    with records.engine.begin() as db:
        db.execute(handoffs.insert().values(
            conversation_id=conversation_id, connector=connector, channel=connector,
            customer_name="", customer_verified=verified, customer_contact="",
            reason_code="customer_request", rule="customer_request", tier=1, queue="general",
            priority=1, status=status, created_at=created, sla_target_seconds=900.0,
            sla_due_at=created + 900, order_id=order_id, slots="{}",
            order_snapshot=json.dumps(snapshot),
            actions_attempted="[]", summary="{}", resolution_note=""))


@dataclass
class Gateway:
    """A gateway's parts on the test's databases, without HTTP."""

    router: Router
    records: GatewayRecords
    shop: StoreSystems
    bus: EventBus
    clock: Clock
    outreach: Outreach

    def wrote(self, connector: str, sender: str, ago: float, text: str = "hello",
              channel: Optional[str] = None) -> str:
        return wrote(self.records, self.clock.now - ago, connector, sender, text, channel)

    def handoff(self, conversation_id: str, order_id: Optional[str], verified: bool = True,
                status: str = "resolved", ago: float = DAY) -> None:
        """As the desk opens one: the order's snapshot names its customer."""
        order = self.shop.orders.get_order(order_id) if order_id else None
        add_handoff(self.records, self.clock.now - ago, conversation_id, order_id, verified,
                    status, order.customer.customer_id if order else None)

    def claims(self) -> Dict[Tuple[str, str], str]:
        """(kind, subject) -> status of every outreach decision."""
        with self.records.engine.connect() as db:
            rows = db.execute(sa.select(outreach.c.kind, outreach.c.subject,
                                        outreach.c.status)).all()
        return {(row.kind, row.subject): row.status for row in rows}

    def transcript(self, conversation_id: str) -> List[str]:
        return [t.text for t in self.records.transcript(conversation_id) if t.role == "bot"]


@pytest.fixture
def shop(tmp_path: Path, now: datetime) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    seed_demo_store(store, now)
    yield store
    store.close()


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, shop: StoreSystems, now: datetime,
                  channels: Dict[str, Channel],
                  policy: Optional[MonitorPolicy] = None,
                  channels_policy: Optional[ChannelPolicy] = None,
                  records_url: str = "") -> AsyncIterator[Gateway]:
    records = GatewayRecords(create_store_engine(
        records_url or f"sqlite:///{tmp_path / 'gateway.db'}"))
    clock = Clock(now.timestamp())
    escalation = load_policy()
    store = HandoffStore(records.engine)
    bus = EventBus()
    desk = HandoffDesk(store, records, load_handoff_policy(escalation), escalation, shop, bus,
                       LiveQueues(store, records), clock=clock)
    router = Router(records, SqlInbox(records, 3600),
                    RasaClient(("http://127.0.0.1:9",), 1.0), channels,
                    channels_policy or channel_policy(), desk)
    for channel in channels.values():
        await channel.start()
    try:
        yield Gateway(router, records, shop, bus, clock,
                      Outreach.for_router(router, shop, policy or monitor_policy()))
    finally:
        for channel in channels.values():
            await channel.stop()
        await router.rasa.close()
        records.close()


@pytest_asyncio.fixture
async def gw(tmp_path: Path, shop: Store, now: datetime) -> AsyncIterator[Gateway]:
    channels: Dict[str, Channel] = {name: RecordingChannel(name)
                                    for name in ("twilio", "whatsapp", "telegram", "webchat")}
    async with gateway(tmp_path, shop, now, channels) as opened:
        yield opened


def sent(gw: Gateway, connector: str) -> List[Tuple[str, str]]:
    channel = gw.router.channels[connector]
    assert isinstance(channel, RecordingChannel)
    return channel.sent


def all_sent(gw: Gateway) -> List[Tuple[str, str]]:
    return [item for name in gw.router.channels for item in sent(gw, name)]


def result_of(report: RunReport, label: str) -> Tuple[str, str]:
    [attempt] = [a for a in report.attempts if a.label == label]
    return attempt.kind, attempt.result


# --- shipments ---------------------------------------------------------------------------

async def test_a_late_and_a_no_scan_order_are_each_messaged_once(gw: Gateway) -> None:
    sms = gw.wrote("twilio", BUYER8_SMS, 3 * DAY, channel="sms")
    whatsapp = gw.wrote("whatsapp", BUYER2_WHATSAPP, HOUR)

    report = await gw.outreach.shipments()

    assert result_of(report, "A1016") == ("late", "sent")
    assert result_of(report, "A1003") == ("no_scan", "sent")
    [(to_buyer8, late)] = sent(gw, "twilio")
    [(to_buyer2, no_scan)] = sent(gw, "whatsapp")
    assert to_buyer8 == BUYER8_SMS and to_buyer2 == BUYER2_WHATSAPP
    assert late.startswith("Hi Jamie, your order A1016 is running later than we promised")
    assert "DHL" in late and "https://www.dhl.com/" in late and "4819203799" in late
    # A1003 is late too, but the customer hears once, about the missing scans
    assert "order A1003" in no_scan and "FedEx has not scanned the parcel" in no_scan
    assert "(6 days)" in no_scan and "https://www.fedex.com/" in no_scan
    assert sent(gw, "telegram") == [] and sent(gw, "webchat") == []
    # the router recorded them in the customers' conversations
    assert gw.transcript(sms) == [late] and gw.transcript(whatsapp) == [no_scan]
    assert gw.claims() == {("late", "A1016"): "sent", ("no_scan", "A1003"): "sent",
                           ("late", "A1003"): "covered"}
    # the lost parcel is left to people; the generated orders' customers never wrote
    assert report.lost == ["A1010"] and "A1010" not in report.labels("sent")
    unknown = report.labels("no_conversation")
    assert unknown and all(label.startswith("A2") for label in unknown)
    assert report.counts()["no_conversation"] == len(report.attempts) - 2

    rerun = await gw.outreach.shipments()
    assert len(all_sent(gw)) == 2
    assert result_of(rerun, "A1016") == ("late", "already_messaged")
    assert result_of(rerun, "A1003") == ("no_scan", "already_messaged")
    assert rerun.counts()["sent"] == 0


async def test_two_gateways_at_once_message_each_customer_once(
        tmp_path: Path, shop: Store, now: datetime) -> None:
    first, second = RecordingChannel("twilio"), RecordingChannel("twilio")
    async with gateway(tmp_path, shop, now, {"twilio": first}) as one, \
            gateway(tmp_path, shop, now, {"twilio": second}) as other:
        one.wrote("twilio", BUYER8_SMS, HOUR, channel="sms")
        one.wrote("twilio", "+14155550102", HOUR, channel="sms")
        reports = await asyncio.gather(one.outreach.shipments(), other.outreach.shipments())
    assert sorted(re.search(r"order (A\d+)", text).group(1)  # type: ignore[union-attr]
                  for _, text in first.sent + second.sent) == ["A1003", "A1016"]
    results = [result_of(report, order)[1] for report in reports for order in ("A1003", "A1016")]
    assert sorted(results) == ["already_messaged", "already_messaged", "sent", "sent"]


async def test_on_postgresql_two_gateways_decide_once(tmp_path: Path, shop: Store,
                                                      now: datetime, postgres_url: str) -> None:
    """The records on PostgreSQL (several writer threads each): the claims and the
    alert still settle every race."""
    engine = create_store_engine(postgres_url)
    for tables in (monitor_tables, records_tables, handoff_tables):
        tables.drop_all(engine)
    engine.dispose()
    first, second = RecordingChannel("twilio"), RecordingChannel("twilio")
    policy = with_products(monitor_policy(), threshold=2, message_buyers=True)
    async with gateway(tmp_path, shop, now, {"twilio": first}, policy,
                       records_url=postgres_url) as one, \
            gateway(tmp_path, shop, now, {"twilio": second}, policy,
                    records_url=postgres_url) as other:
        one.wrote("twilio", BUYER8_SMS, HOUR, "is A1016 coming?", channel="sms")
        one.wrote("twilio", "+14155550102", HOUR, "A1016 is my friend's", channel="sms")
        one.wrote("twilio", BUYER1_SMS, 2 * DAY, channel="sms")
        runs = [gw.outreach.shipments() for gw in (one, other)] + \
            [gw.outreach.products() for gw in (one, other)]
        reports = await asyncio.gather(*runs)
        [alert] = [a for report in reports for a in report.alerts]
        assert alert["sku"] == "JEANS-SLIM-32"
        assert one.claims() == {
            ("late", "A1016"): "sent", ("no_scan", "A1003"): "sent",
            ("late", "A1003"): "covered",
            # the jeans' buyers who ever wrote: buyer1 (A1001) and buyer8 (A1016)
            ("product", f"{alert['id']}:1"): "sent", ("product", f"{alert['id']}:8"): "sent",
        }
    texts = [text for _, text in first.sent + second.sent]
    assert len(texts) == 4 and len(set(texts)) == 4


async def test_a_later_exception_of_the_same_order_is_messaged(gw: Gateway) -> None:
    gw.wrote("twilio", BUYER8_SMS, HOUR, channel="sms")
    await gw.outreach.shipments()
    [(_, late)] = sent(gw, "twilio")
    assert "A1016 is running later" in late
    # four days on, A1016's last scan (yesterday) is five days old: a new exception
    gw.clock.now += 4 * DAY
    report = await gw.outreach.shipments()
    assert result_of(report, "A1016") == ("no_scan", "sent")
    assert len(sent(gw, "twilio")) == 2 and "has not scanned" in sent(gw, "twilio")[1][1]
    gw.clock.now += HOUR
    assert result_of(await gw.outreach.shipments(), "A1016")[1] == "already_messaged"


async def test_an_opted_out_customer_is_not_messaged(gw: Gateway) -> None:
    gw.wrote("twilio", BUYER8_SMS, HOUR, channel="sms")
    gw.records.set_opted_out("twilio", BUYER8_SMS, True)

    report = await gw.outreach.shipments()
    assert result_of(report, "A1016") == ("late", "opted_out")
    assert sent(gw, "twilio") == [] and gw.claims() == {}

    gw.records.set_opted_out("twilio", BUYER8_SMS, False)  # START
    assert result_of(await gw.outreach.shipments(), "A1016") == ("late", "sent")


async def test_a_telegram_chat_that_blocked_the_bot_is_messaged_once_it_writes_again(
        gw: Gateway) -> None:
    chat = gw.wrote("telegram", "5550001", 2 * DAY)
    gw.handoff(chat, "A1016")  # verified in that chat earlier
    gw.records.set_opted_out("telegram", "5550001", True)  # blocked the bot since
    assert result_of(await gw.outreach.shipments(), "A1016") == ("late", "opted_out")
    gw.clock.now += HOUR  # the opt-out was recorded at the wall clock's time
    gw.wrote("telegram", "5550001", 0)
    assert result_of(await gw.outreach.shipments(), "A1016") == ("late", "sent")


async def test_an_order_without_a_known_conversation_is_reported_not_messaged(
        gw: Gateway) -> None:
    gw.wrote("twilio", "+14155550199", HOUR, channel="sms")  # nobody's phone
    gw.wrote("webchat", "session-of-someone", HOUR)
    report = await gw.outreach.shipments()
    assert result_of(report, "A1016") == ("late", "no_conversation")
    [listed] = [line for line in report.lines() if line.startswith("not messaged, no conv")]
    assert listed.startswith("not messaged, no conversation of the customer is known: ")
    assert "A1016" in listed
    assert all_sent(gw) == [] and gw.claims() == {}
    # nothing was decided: once the customer writes, the next run reaches them
    gw.wrote("twilio", BUYER8_SMS, 0, channel="sms")
    assert result_of(await gw.outreach.shipments(), "A1016") == ("late", "sent")


async def test_web_chat_and_telegram_are_linked_only_by_a_verified_order(gw: Gateway) -> None:
    old_sms = gw.wrote("twilio", "+14155550102", 3 * DAY, channel="sms")
    chat = gw.wrote("telegram", "5550002", 2 * HOUR)
    gw.handoff(chat, "A1010")  # buyer2 proved who they are here, about another order
    anyone = gw.wrote("webchat", "s-anyone", HOUR)
    gw.handoff(anyone, "A1016", verified=False)  # typed someone's order number
    report = await gw.outreach.shipments()
    # buyer2's latest conversation is the Telegram chat
    assert result_of(report, "A1003") == ("no_scan", "sent")
    assert [to for to, _ in sent(gw, "telegram")] == ["5550002"]
    assert gw.transcript(old_sms) == []
    assert result_of(report, "A1016") == ("late", "no_conversation")
    assert sent(gw, "webchat") == []


async def test_a_conversation_with_a_person_is_left_to_them(gw: Gateway) -> None:
    sms = gw.wrote("twilio", BUYER8_SMS, HOUR, channel="sms")
    gw.handoff(sms, None, verified=False, status="active")
    assert result_of(await gw.outreach.shipments(), "A1016") == ("late", "with_agent")
    assert all_sent(gw) == [] and gw.claims() == {}


async def test_whatsapp_through_twilio_outside_the_window_is_not_sent_free_text(
        gw: Gateway) -> None:
    gw.wrote("twilio", f"whatsapp:{BUYER8_SMS}", 2 * DAY, channel="whatsapp")
    assert result_of(await gw.outreach.shipments(), "A1016") == ("late", "window_closed")
    assert all_sent(gw) == [] and gw.claims() == {}
    gw.wrote("twilio", f"whatsapp:{BUYER8_SMS}", HOUR, channel="whatsapp")
    assert result_of(await gw.outreach.shipments(), "A1016") == ("late", "sent")
    assert [to for to, _ in sent(gw, "twilio")] == [f"whatsapp:{BUYER8_SMS}"]


async def test_a_channel_that_is_off_here_is_tried_again_next_run(
        tmp_path: Path, shop: Store, now: datetime) -> None:
    async with gateway(tmp_path, shop, now, {}) as without:
        without.wrote("twilio", BUYER8_SMS, HOUR, channel="sms")
        report = await without.outreach.shipments()
        assert result_of(report, "A1016") == ("late", "not_attempted")
        assert without.claims() == {}
    twilio = RecordingChannel("twilio")
    async with gateway(tmp_path, shop, now, {"twilio": twilio}) as with_twilio:
        assert result_of(await with_twilio.outreach.shipments(), "A1016") == ("late", "sent")
    assert [to for to, _ in twilio.sent] == [BUYER8_SMS]


async def test_nothing_is_sent_outside_business_hours(tmp_path: Path) -> None:
    sunday_night = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)  # opens 09:00 UTC
    shop = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    seed_demo_store(shop, sunday_night)
    policy = load_monitor_policy(channel_policy())
    assert policy.only_in_business_hours
    twilio = RecordingChannel("twilio")
    try:
        async with gateway(tmp_path, shop, sunday_night, {"twilio": twilio}, policy) as gw:
            gw.wrote("twilio", BUYER8_SMS, HOUR, channel="sms")
            report = await gw.outreach.shipments()
            assert report.outside_hours and result_of(report, "A1016")[1] == "outside_hours"
            assert "outside business hours (open again today at 09:00), nothing sent" \
                in report.summary()
            assert twilio.sent == [] and gw.claims() == {}
            gw.clock.now += 7 * HOUR  # Sunday 10:00
            assert result_of(await gw.outreach.shipments(), "A1016") == ("late", "sent")
    finally:
        shop.close()


async def test_logs_carry_no_contact_or_message_text(gw: Gateway,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    gw.wrote("twilio", BUYER8_SMS, HOUR, channel="sms")
    gw.wrote("whatsapp", BUYER2_WHATSAPP, HOUR)
    with caplog.at_level(logging.DEBUG):
        await gw.outreach.shipments()
    assert "monitor: late A1016 to twilio:+1******0108: sent" in caplog.text
    for secret in ("4155550108", "4155550102", "buyer8@", "Jamie", "running later"):
        assert secret not in caplog.text


# --- WhatsApp Cloud API: the real connector, a local Graph API ---------------------------

@pytest_asyncio.fixture
async def graph() -> AsyncIterator[ProviderAPI]:
    api = await ProviderAPI().start()

    async def accepted(request: RecordedRequest) -> web.Response:
        return web.json_response({
            "messaging_product": "whatsapp",
            "contacts": [{"input": request.json["to"], "wa_id": request.json["to"]}],
            "messages": [{"id": f"wamid.SENT{len(api.calls(MESSAGES_PATH))}"}]})

    api.answer("POST", MESSAGES_PATH, accepted)
    yield api
    await api.stop()


@pytest.mark.parametrize(("wrote_ago", "expected"), [(2 * DAY, "template"), (HOUR, "sent")])
async def test_whatsapp_outside_the_24_hour_window_gets_only_the_template(
        tmp_path: Path, shop: Store, now: datetime, graph: ProviderAPI, wrote_ago: float,
        expected: str) -> None:
    whatsapp = WhatsAppChannel(WhatsAppCredentials("secret", "verify", "token",
                                                   PHONE_NUMBER_ID, f"{graph.url}/v21.0"),
                               channel_policy())
    async with gateway(tmp_path, shop, now, {"whatsapp": whatsapp}) as gw:
        gw.wrote("whatsapp", BUYER2_WHATSAPP, wrote_ago)
        report = await gw.outreach.shipments()
        assert result_of(report, "A1003") == ("no_scan", expected)
        requests = [r.json for r in graph.calls(MESSAGES_PATH)]
        assert [r["to"] for r in requests] == [BUYER2_WHATSAPP]
        if expected == "template":
            assert requests[0]["type"] == "template"
            assert requests[0]["template"]["name"] == TEMPLATE
            assert "A1003" not in json.dumps(requests)  # no free text outside the window
            deliveries = gw.records.deliveries()
            assert sorted((d["status"], d["template"]) for d in deliveries) == \
                [("blocked", ""), ("sent", TEMPLATE)]
        else:
            assert requests[0]["type"] == "text" and "A1003" in requests[0]["text"]["body"]
        assert gw.claims()[("no_scan", "A1003")] == expected
        await gw.outreach.shipments()
        assert len(graph.calls(MESSAGES_PATH)) == 1


# --- products ------------------------------------------------------------------------------

# Monday 20:00 UTC: 20 hours on is another UTC day, so another window bucket too
EVENING = datetime(2026, 11, 23, 20, 0, tzinfo=timezone.utc)


@pytest_asyncio.fixture
async def evening(tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway whose clock and store are fixed at EVENING."""
    shop = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    seed_demo_store(shop, EVENING)
    channels: Dict[str, Channel] = {name: RecordingChannel(name)
                                    for name in ("twilio", "whatsapp", "telegram", "webchat")}
    try:
        async with gateway(tmp_path, shop, EVENING, channels) as opened:
            yield opened
    finally:
        shop.close()


async def test_a_product_alert_fires_once_per_window(evening: Gateway) -> None:
    gw = evening
    outreach = Outreach.for_router(gw.router, gw.shop,
                                   with_products(monitor_policy(), threshold=3))
    # JEANS-SLIM-32 is in A1001 and A1016; each conversation counts once
    gw.wrote("webchat", "s1", 2 * HOUR, "where is my order A1016?")
    gw.wrote("webchat", "s1", HOUR, "A1016 please, it's late")
    gw.wrote("telegram", "501", HOUR, "jeans from order #a 1001 are torn")
    gw.wrote("telegram", "502", 30 * HOUR, "A1016 again")  # outside the 24-hour window
    gw.wrote("telegram", "503", HOUR, "my order A9999")  # no such order

    quiet = await outreach.products()
    assert quiet.contacts["JEANS-SLIM-32"] == 2 and quiet.alerts == []

    handed = gw.wrote("twilio", BUYER8_SMS, 3 * HOUR, "I want a person", channel="sms")
    gw.handoff(handed, "A1016", ago=3 * HOUR)
    async with gw.bus.subscribe() as console:
        report = await outreach.products()
        event = console.get_nowait()
    [alert] = report.alerts
    assert alert["sku"] == "JEANS-SLIM-32" and alert["contacts"] == 3
    assert alert["product"] == "Slim-fit jeans" and alert["threshold"] == 3
    assert event["type"] == EventType.MONITOR_ALERT and event["alert"]["sku"] == "JEANS-SLIM-32"
    assert event["alert"]["contacts"] == 3 and "conversations" not in event["alert"]
    assert report.contacts["TEE-ORG-M"] == 1  # A1001's other item, one conversation
    assert "ALERT JEANS-SLIM-32 (Slim-fit jeans): 3 conversations in 24 h (threshold 3)" \
        in report.lines()
    assert report.attempts == []  # message_buyers is off

    gw.clock.now += 20 * HOUR
    gw.wrote("telegram", "504", 0, "A1016??")
    gw.wrote("telegram", "505", 0, "A1016")
    gw.wrote("telegram", "506", 0, "A1001")
    later = await outreach.products()
    assert later.contacts["JEANS-SLIM-32"] >= 3 and later.alerts == []

    gw.clock.now += 5 * HOUR  # the first alert is now older than the window
    again = await outreach.products()
    assert [a["sku"] for a in again.alerts] == ["JEANS-SLIM-32"]
    assert [a["sku"] for a in await outreach.alerts()] == ["JEANS-SLIM-32", "JEANS-SLIM-32"]


async def test_two_gateways_at_once_raise_one_alert(tmp_path: Path) -> None:
    shop = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    seed_demo_store(shop, EVENING)
    policy = with_products(monitor_policy(), threshold=2)
    try:
        async with gateway(tmp_path, shop, EVENING, {}, policy) as one, \
                gateway(tmp_path, shop, EVENING, {}, policy) as other:
            one.wrote("webchat", "s1", HOUR, "A1016")
            one.wrote("webchat", "s2", HOUR, "A1016")
            reports = await asyncio.gather(*(gw.outreach.products() for gw in (one, other)
                                             for _ in range(3)))
            assert [a["sku"] for r in reports for a in r.alerts] == ["JEANS-SLIM-32"]
            assert len(await one.outreach.alerts()) == 1
    finally:
        shop.close()


async def test_product_alert_messages_recent_buyers_once(gw: Gateway) -> None:
    policy = with_products(monitor_policy(), threshold=2, message_buyers=True)
    outreach = Outreach.for_router(gw.router, gw.shop, policy)
    gw.wrote("twilio", BUYER1_SMS, HOUR, "where is A1001", channel="sms")
    gw.wrote("whatsapp", "14155550108", HOUR, "A1016 is late")

    report = await outreach.products()
    assert [a["sku"] for a in report.alerts] == ["JEANS-SLIM-32"]
    assert result_of(report, "A1001 JEANS-SLIM-32") == ("product", "sent")
    assert result_of(report, "A1016 JEANS-SLIM-32") == ("product", "sent")
    # TEE-ORG-M had one conversation: no alert, no message about it
    assert {a.label.split()[1] for a in report.attempts} == {"JEANS-SLIM-32"}
    [(to_buyer1, text)] = sent(gw, "twilio")
    assert to_buyer1 == BUYER1_SMS
    assert text.startswith("Hi Alex, about the Slim-fit jeans in your order A1001:")
    assert [to for to, _ in sent(gw, "whatsapp")] == ["14155550108"]
    unreachable = report.labels("no_conversation")
    assert unreachable and all(label.startswith("A2") for label in unreachable)

    gw.clock.now += HOUR
    rerun = await outreach.products()
    assert rerun.alerts == [] and rerun.counts()["sent"] == 0
    assert result_of(rerun, "A1001 JEANS-SLIM-32")[1] == "already_messaged"
    assert len(all_sent(gw)) == 2


# --- policy --------------------------------------------------------------------------------

def write_policy(tmp_path: Path, change: Any) -> Path:
    data = yaml.safe_load((REPO_ROOT / "policy" / "monitor.yml").read_text())
    change(data)
    (tmp_path / "monitor.yml").write_text(yaml.safe_dump(data))
    return tmp_path


def test_the_shipped_policy_is_valid() -> None:
    policy = load_monitor_policy(channel_policy())
    assert policy.whatsapp_window_closed_template == TEMPLATE
    assert not policy.shipments.enabled and not policy.products.enabled
    assert policy.promises.enabled  # the bot's own promises are kept out of the box
    assert policy.shipments.no_scan_days == 4 and policy.products.threshold == 5


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["shipments"]["texts"].update(late="Order {order} is late"),
     "shipments.texts.late: unknown placeholder {order}; known: {first_name}, {order_id}"),
    (lambda d: d["shipments"]["texts"].update(no_scan="Your parcel has not moved"),
     "shipments.texts.no_scan: must name {order_id}"),
    (lambda d: d["shipments"]["texts"].update(late="Order {order_id is late"),
     "shipments.texts.late: is not a valid text"),
    (lambda d: d["shipments"]["texts"].update(late="Order {order_id!r} is late"),
     "shipments.texts.late: placeholder {order_id} takes no format or conversion"),
    (lambda d: d["products"]["texts"].update(buyers="About {tracking_url}"),
     "products.texts.buyers: unknown placeholder {tracking_url}; known: {first_name}"),
    (lambda d: d["products"].update(threshold=1),
     "products.threshold: ensure this value is greater than or equal to 2"),
    (lambda d: d["shipments"].update(no_scan_days=0),
     "shipments.no_scan_days: ensure this value is greater than or equal to 1"),
    (lambda d: d["shipments"].update(every_hours=1),
     "shipments.every_hours: extra fields not permitted"),
    (lambda d: d.pop("products"), "products: field required"),
    # on hold the customer hears no promise: no date, no claim
    (lambda d: d["promises"]["texts"].update(on_hold="{first_name}, {order_id} by {due}"),
     "promises.texts.on_hold: unknown placeholder {due}; known: {first_name}, {order_id}"),
    (lambda d: d["promises"]["texts"].update(trace="We will replace it by {due}"),
     "promises.texts.trace: must name {order_id}"),
    (lambda d: d["promises"]["next_steps"].update(not_received="send a replacement"),
     "promises.next_steps.not_received: must name {claim_id}"),
    (lambda d: d["promises"].update(look_back_days=0),
     "promises.look_back_days: ensure this value is greater than or equal to 1"),
    (lambda d: d["promises"].pop("next_steps"), "promises.next_steps: field required"),
])
def test_policy_errors_name_the_file_and_the_key(tmp_path: Path, change: Any,
                                                 message: str) -> None:
    directory = write_policy(tmp_path, change)
    with pytest.raises(PolicyError) as raised:
        load_monitor_policy(channel_policy(), directory)
    assert str(raised.value).startswith(f"{directory / 'monitor.yml'}: ")
    assert message in str(raised.value)


def test_the_template_must_be_the_one_the_connector_sends(tmp_path: Path) -> None:
    directory = write_policy(
        tmp_path, lambda d: d.update(whatsapp_window_closed_template="shipping_update"))
    with pytest.raises(PolicyError, match=r"whatsapp_window_closed_template: 'shipping_update'"
                                          r" is not the template .* \('support_follow_up'"):
        load_monitor_policy(channel_policy(), directory)


def test_senders_phone_numbers_are_compared_whole() -> None:
    assert sender_phone("twilio", "+14155550108") == sender_phone(
        "twilio", "whatsapp:+14155550108") == sender_phone("whatsapp", "14155550108") == \
        "+14155550108"
    # the same last ten digits in another country are another customer
    assert sender_phone("whatsapp", "444155550108") != "+14155550108"
    assert sender_phone("twilio", "5550108") is None
    assert sender_phone("webchat", "s-session") is None


# --- the schedule ----------------------------------------------------------------------------

async def test_the_schedule_runs_enabled_monitors_and_survives_failures(
        gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    policy = monitor_policy()
    fast = policy.copy(update={
        "shipments": policy.shipments.copy(update={"enabled": True, "every_minutes": 0.001}),
        "products": policy.products.copy(update={"enabled": False}),
        "promises": policy.promises.copy(update={"enabled": False})})
    outreach = Outreach.for_router(gw.router, gw.shop, fast)
    gw.wrote("twilio", BUYER8_SMS, HOUR, channel="sms")
    calls = 0
    real = outreach.shipments

    async def flaky() -> RunReport:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError(f"database said no about {BUYER8_SMS}")
        return await real()

    outreach.shipments = flaky  # type: ignore[method-assign]
    monitor = Monitor(outreach, first_run_after_seconds=0)
    assert [name for name, _ in monitor.enabled()] == ["shipments"]
    with caplog.at_level(logging.INFO, logger="bot.outreach"):
        await monitor.start()
        for _ in range(200):
            if monitor.runs["shipments"] >= 3:
                break
            await asyncio.sleep(0.01)
        await monitor.stop()
    assert monitor.runs["shipments"] >= 3 and monitor.runs["products"] == 0
    assert "monitor shipments run failed: RuntimeError at test_monitor.py:" in caplog.text
    assert "4155550108" not in caplog.text
    assert [to for to, _ in sent(gw, "twilio")] == [BUYER8_SMS]  # once, however many runs
    runs = dict(monitor.runs)
    await asyncio.sleep(0.05)
    assert monitor.runs == runs  # stopped


async def test_a_disabled_schedule_starts_nothing(gw: Gateway) -> None:
    policy = monitor_policy()
    off = policy.copy(update={"promises": policy.promises.copy(update={"enabled": False})})
    monitor = Monitor(Outreach.for_router(gw.router, gw.shop, off), first_run_after_seconds=0)
    await monitor.start()
    await asyncio.sleep(0.02)
    await monitor.stop()
    assert monitor.runs == {"shipments": 0, "products": 0, "promises": 0}


# --- once from the CLI, through a gateway that does not serve --------------------------------

async def test_run_once_sends_through_the_gateways_own_parts(
        tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    for names in REQUIRED.values():  # no provider credentials: web chat only
        for name in names:
            monkeypatch.delenv(name, raising=False)
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    seeded = open_store(store_url)
    seed_demo_store(seeded, now)
    seeded.close()
    settings = dataclasses.replace(
        load_settings(), database_url=store_url, var_dir=tmp_path / "var", redis_url="",
        gateway_database_override=f"sqlite:///{tmp_path / 'gateway.db'}")
    records = GatewayRecords(create_store_engine(settings.gateway_database_url))
    HandoffStore(records.engine)
    chat = wrote(records, now.timestamp() - HOUR, "webchat", "signed-session-1")
    add_handoff(records, now.timestamp() - DAY, chat, "A1016", owner=BUYER8)
    records.close()

    report = await run_once("shipments", settings, monitor_policy())

    assert result_of(report, "A1016") == ("late", "sent")
    records = GatewayRecords(create_store_engine(settings.gateway_database_url))
    try:
        [text] = [t.text for t in records.transcript(chat) if t.role == "bot"]
        assert "order A1016 is running later" in text
    finally:
        records.close()
    again = await run_once("shipments", settings, monitor_policy())
    assert result_of(again, "A1016")[1] == "already_messaged"


# --- promises: traces and not-received claims that fall due ------------------------------

SEEDED_CLAIM = "A1013 CLM-8R4T6Y2U"  # buyer7's claim of 15 days ago; buyer7 never wrote


def open_claim(shop: StoreSystems, order_id: str, opened: datetime,
               kind: str = "trace") -> CarrierClaim:
    """The claim the bot opened at `opened` (the store stamps claims with its clock)."""
    assert isinstance(shop, Store), "claims are opened in the demo SQL store"
    return SqlDelivery(shop.engine, lambda: opened).open_claim(order_id, kind)


def opened_days_ago(gw: Gateway, days: float) -> datetime:
    return datetime.fromtimestamp(gw.clock.now, timezone.utc) - timedelta(days=days)


def promise_handoffs(gw: Gateway) -> List[Handoff]:
    return [h for h in gw.router.desk.store.list() if h["reason_code"] == "promise_due"]


async def test_a_due_trace_is_handed_to_a_person_once(gw: Gateway) -> None:
    whatsapp = gw.wrote("whatsapp", BUYER2_WHATSAPP, HOUR)
    opened = opened_days_ago(gw, 5)  # two business days are over, whatever the weekday
    claim = open_claim(gw.shop, "A1003", opened)
    label = f"A1003 {claim.claim_id}"

    report = await gw.outreach.promises()

    assert result_of(report, label) == ("promise", "sent")
    [handoff] = promise_handoffs(gw)
    assert handoff["conversation_id"] == whatsapp and handoff["status"] == "waiting"
    assert handoff["queue"] == "logistics" and handoff["rule"] == "promise_due"
    assert handoff["order_id"] == "A1003" and handoff["customer_verified"]
    snapshot = handoff["order_snapshot"]
    assert snapshot is not None and snapshot["order_id"] == "A1003"
    assert snapshot["customer_id"] == BUYER2 and snapshot["shipment"]["carrier"] == "FedEx"
    last_scan = day((opened - timedelta(days=1)).date())
    assert handoff["summary"]["next"] == (
        f"trace {claim.claim_id} (FedEx 771234509876) opened on {day(opened.date())}; no scan "
        f"since {last_scan}: send the free replacement we promised for "
        f"{day(load_policy().promised_by('trace', opened))}, then tell the customer its "
        "order number")
    assert handoff["summary"]["eta"] == "within 2 business hours"
    [(to, text)] = sent(gw, "whatsapp")
    assert to == BUYER2_WHATSAPP and text.startswith("Hi Priya, about your order A1003: FedEx")
    assert "replacement at no cost" in text and gw.transcript(whatsapp) == [text]
    assert gw.claims()[("promise", claim.claim_id)] == "sent"
    assert f"handed to a person: {label} (H-{handoff['id']})" in report.lines()
    # the seeded claim is due too, but nobody knows where to reach buyer7: said loudly
    assert result_of(report, SEEDED_CLAIM) == ("promise", "no_conversation")
    assert any(line.startswith("due, NOT handed over") and SEEDED_CLAIM in line
               for line in report.lines())

    rerun = await gw.outreach.promises()
    assert result_of(rerun, label) == ("promise", "already_handled")
    with gw.records.engine.begin() as db:  # the person resolves it; the promise stays handled
        db.execute(handoffs.update().values(status="resolved"))
    gw.clock.now += DAY
    assert result_of(await gw.outreach.promises(), label) == ("promise", "already_handled")
    assert len(promise_handoffs(gw)) == 1 and len(all_sent(gw)) == 1


async def test_a_due_not_received_claim_is_handed_over_with_its_promise(gw: Gateway) -> None:
    sms = gw.wrote("twilio", BUYER1_SMS, HOUR, channel="sms")
    opened = opened_days_ago(gw, 5)  # three business days are over
    claim = open_claim(gw.shop, "A1002", opened, "not_received")
    due = day(load_policy().promised_by("not_received", opened))

    report = await gw.outreach.promises()

    assert result_of(report, f"A1002 {claim.claim_id}") == ("promise", "sent")
    [handoff] = promise_handoffs(gw)
    assert handoff["conversation_id"] == sms and handoff["queue"] == "logistics"
    assert handoff["summary"]["next"].startswith(
        f"not-received claim {claim.claim_id} (FedEx) opened on {day(opened.date())}; we "
        f"promised an update by {due}: get the claim's outcome")
    [(_, text)] = sent(gw, "twilio")
    assert text.startswith(f"Hi Alex, about your claim {claim.claim_id} for order A1002: we "
                           f"promised you an update by {due}.")


def scanned(shop: Store, order_id: str, at: datetime) -> None:
    with shop.engine.begin() as db:
        db.execute(tracking_events.insert().values(order_id=order_id, time=at,
                                                   location="Chicago, IL",
                                                   description="Departed FedEx facility"))


def delivered(shop: Store, order_id: str, at: datetime) -> None:
    with shop.engine.begin() as db:
        db.execute(shipments.update().where(shipments.c.order_id == order_id)
                   .values(delivered_at=at))


@pytest.mark.parametrize("moved", [scanned, delivered])
async def test_a_trace_whose_parcel_moved_is_void(gw: Gateway, moved: Any) -> None:
    gw.wrote("whatsapp", BUYER2_WHATSAPP, HOUR)
    claim = open_claim(gw.shop, "A1003", opened_days_ago(gw, 5))
    moved(gw.shop, "A1003", opened_days_ago(gw, 1))

    report = await gw.outreach.promises()

    assert report.nothing_due["moved"] == [claim.claim_id]
    assert all(claim.claim_id not in a.label for a in report.attempts)
    assert promise_handoffs(gw) == [] and all_sent(gw) == []
    assert "void, the parcel moved 1" in report.summary()


def replaced(shop: Store, order_id: str) -> None:
    shop.orders.create_replacement(order_id, "a person replaced it already")


def bot_replacing(shop: Store, order_id: str) -> None:
    """The bot's replacement is under way (the write log has it, the store not yet)."""
    shop.writes.claim(WriteRecord(key=f"replacement-{order_id}", conversation_id="x",
                                  kind="replacement", order_id=order_id, params={},
                                  status="started", before={},
                                  created_at=datetime.now(timezone.utc)))


def refunded(shop: Store, order_id: str) -> None:
    shop.returns.create_refund(order_id, Decimal("10.00"), "goodwill")


@pytest.mark.parametrize("remedy", [replaced, bot_replacing, refunded])
async def test_a_promise_already_kept_needs_nothing(gw: Gateway, remedy: Any) -> None:
    gw.wrote("whatsapp", BUYER2_WHATSAPP, HOUR)
    claim = open_claim(gw.shop, "A1003", opened_days_ago(gw, 5))
    remedy(gw.shop, "A1003")

    report = await gw.outreach.promises()

    assert report.nothing_due["kept"] == [claim.claim_id]
    assert promise_handoffs(gw) == [] and all_sent(gw) == []


async def test_a_promise_is_handed_over_on_its_day_not_before(gw: Gateway) -> None:
    gw.wrote("whatsapp", BUYER2_WHATSAPP, HOUR)
    opened = opened_days_ago(gw, 0)
    claim = open_claim(gw.shop, "A1003", opened)
    due = load_policy().promised_by("trace", opened)
    midnight = datetime(due.year, due.month, due.day, tzinfo=timezone.utc).timestamp()

    gw.clock.now = midnight - 1  # the last second of the day before
    report = await gw.outreach.promises()
    assert claim.claim_id in report.nothing_due["not_yet"]
    assert promise_handoffs(gw) == [] and all_sent(gw) == []

    gw.clock.now = midnight
    gw.wrote("whatsapp", BUYER2_WHATSAPP, 0)  # within WhatsApp's window on that day
    report = await gw.outreach.promises()
    assert result_of(report, f"A1003 {claim.claim_id}") == ("promise", "sent")
    assert len(promise_handoffs(gw)) == 1


async def test_an_order_on_hold_goes_to_its_holds_team_without_a_promise(gw: Gateway) -> None:
    whatsapp = gw.wrote("whatsapp", BUYER2_WHATSAPP, HOUR)
    claim = open_claim(gw.shop, "A1003", opened_days_ago(gw, 5))
    gw.shop.writes.hold("A1003", "stop_the_line_shared_address", "telegram:1")

    report = await gw.outreach.promises()

    assert result_of(report, f"A1003 {claim.claim_id}") == ("promise", "sent")
    [handoff] = promise_handoffs(gw)
    assert handoff["conversation_id"] == whatsapp and handoff["queue"] == "payments_fraud"
    assert handoff["summary"]["next"].startswith(
        f"order on hold (stop_the_line_shared_address); claim {claim.claim_id} opened on")
    assert "order on hold (stop_the_line_shared_address) since" in \
        handoff["summary"]["what_happened"]
    [(_, text)] = sent(gw, "whatsapp")
    assert text == "Hi Priya, about your order A1003: a person from our team is looking at it " \
                   "and will write to you here."


async def test_an_opted_out_customer_is_handed_over_but_not_messaged(gw: Gateway) -> None:
    gw.wrote("twilio", BUYER1_SMS, HOUR, channel="sms")
    gw.records.set_opted_out("twilio", BUYER1_SMS, True)
    claim = open_claim(gw.shop, "A1002", opened_days_ago(gw, 5), "not_received")
    label = f"A1002 {claim.claim_id}"

    report = await gw.outreach.promises()
    assert result_of(report, label) == ("promise", "opted_out")
    assert len(promise_handoffs(gw)) == 1 and all_sent(gw) == []
    assert gw.claims()[("promise", claim.claim_id)] == "opted_out"
    assert result_of(await gw.outreach.promises(), label) == ("promise", "already_handled")


async def test_a_conversation_with_a_person_gets_the_promise_once_they_resolve_it(
        gw: Gateway) -> None:
    sms = gw.wrote("twilio", BUYER1_SMS, HOUR, channel="sms")
    gw.handoff(sms, None, verified=False, status="active")
    claim = open_claim(gw.shop, "A1002", opened_days_ago(gw, 5), "not_received")
    label = f"A1002 {claim.claim_id}"
    assert result_of(await gw.outreach.promises(), label) == ("promise", "with_agent")
    assert promise_handoffs(gw) == [] and gw.claims() == {}
    with gw.records.engine.begin() as db:
        db.execute(handoffs.update().values(status="resolved"))
    assert result_of(await gw.outreach.promises(), label) == ("promise", "sent")


async def test_promises_are_handed_over_in_business_hours_only(tmp_path: Path) -> None:
    sunday_night = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)  # opens 09:00 UTC
    shop = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    seed_demo_store(shop, sunday_night)
    claim = open_claim(shop, "A1003", sunday_night - timedelta(days=5))
    twilio = RecordingChannel("twilio")
    try:
        async with gateway(tmp_path, shop, sunday_night, {"twilio": twilio},
                           load_monitor_policy(channel_policy())) as gw:
            gw.wrote("twilio", "+14155550102", HOUR, channel="sms")
            report = await gw.outreach.promises()
            assert result_of(report, f"A1003 {claim.claim_id}")[1] == "outside_hours"
            assert promise_handoffs(gw) == [] and twilio.sent == []
            gw.clock.now += 7 * HOUR  # Sunday 10:00
            report = await gw.outreach.promises()
            assert result_of(report, f"A1003 {claim.claim_id}")[1] == "sent"
    finally:
        shop.close()


async def test_two_gateways_at_once_hand_a_promise_over_once(
        tmp_path: Path, store: Store, now: datetime, request: pytest.FixtureRequest) -> None:
    """On SQLite, and on PostgreSQL with the gateways' records there too."""
    records_url = ""
    if store.engine.dialect.name == "postgresql":
        records_url = request.getfixturevalue("postgres_url")
        engine = create_store_engine(records_url)
        for tables in (monitor_tables, records_tables, handoff_tables):
            tables.drop_all(engine)
        engine.dispose()
    claim = open_claim(store, "A1003", now - timedelta(days=5))
    first, second = RecordingChannel("twilio"), RecordingChannel("twilio")
    async with gateway(tmp_path, store, now, {"twilio": first}, records_url=records_url) \
            as one, gateway(tmp_path, store, now, {"twilio": second},
                            records_url=records_url) as other:
        one.wrote("twilio", "+14155550102", HOUR, channel="sms")
        reports = await asyncio.gather(*(gw.outreach.promises() for gw in (one, other)
                                         for _ in range(2)))
        results = sorted(result_of(r, f"A1003 {claim.claim_id}")[1] for r in reports)
        assert results == ["already_handled"] * 3 + ["sent"]
        assert len(promise_handoffs(one)) == 1
    assert len(first.sent + second.sent) == 1


async def test_logs_of_promises_carry_no_contact_or_message_text(
        gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    gw.wrote("whatsapp", BUYER2_WHATSAPP, HOUR)
    claim = open_claim(gw.shop, "A1003", opened_days_ago(gw, 5))
    with caplog.at_level(logging.DEBUG):
        await gw.outreach.promises()
    assert f"monitor: promise A1003 {claim.claim_id} handed over as H-" in caplog.text
    assert f"monitor: promise {SEEDED_CLAIM} is due and no conversation" in caplog.text
    for secret in ("4155550102", "buyer2@", "Priya", "Taylor", "replacement at no cost"):
        assert secret not in caplog.text


async def test_run_once_hands_promises_over_through_the_gateways_own_parts(
        tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    for names in REQUIRED.values():  # no provider credentials: web chat only
        for name in names:
            monkeypatch.delenv(name, raising=False)
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    seeded = open_store(store_url)
    seed_demo_store(seeded, now)
    claim = open_claim(seeded, "A1003", now - timedelta(days=5))
    seeded.close()
    settings = dataclasses.replace(
        load_settings(), database_url=store_url, var_dir=tmp_path / "var", redis_url="",
        gateway_database_override=f"sqlite:///{tmp_path / 'gateway.db'}")
    records = GatewayRecords(create_store_engine(settings.gateway_database_url))
    HandoffStore(records.engine)
    chat = wrote(records, now.timestamp() - HOUR, "webchat", "signed-session-2")
    add_handoff(records, now.timestamp() - DAY, chat, "A1003", owner=BUYER2)  # verified
    records.close()

    report = await run_once("promises", settings, monitor_policy())

    assert result_of(report, f"A1003 {claim.claim_id}") == ("promise", "sent")
    records = GatewayRecords(create_store_engine(settings.gateway_database_url))
    try:
        opened = HandoffStore(records.engine).open_for(chat)
        assert opened is not None and opened["reason_code"] == "promise_due"
        [text] = [t.text for t in records.transcript(chat) if t.role == "bot"]
        assert "order A1003" in text and "replacement at no cost" in text
    finally:
        records.close()
    again = await run_once("promises", settings, monitor_policy())
    assert result_of(again, f"A1003 {claim.claim_id}")[1] == "already_handled"


async def test_a_promise_whose_run_died_before_its_handoff_is_handed_over_later(
        gw: Gateway) -> None:
    gw.wrote("whatsapp", BUYER2_WHATSAPP, HOUR)
    claim = open_claim(gw.shop, "A1003", opened_days_ago(gw, 5))
    label = f"A1003 {claim.claim_id}"

    def claimed_by_a_run_that_died(ago: float) -> None:
        with gw.records.engine.begin() as db:
            db.execute(outreach.delete())
            db.execute(outreach.insert().values(
                kind="promise", subject=claim.claim_id, order_id="A1003",
                customer_id=2, conversation_id="whatsapp:x", status="sending",
                created_at=gw.clock.now - ago, updated_at=gw.clock.now - ago))

    claimed_by_a_run_that_died(60)  # perhaps still opening its handoff: left alone
    assert result_of(await gw.outreach.promises(), label) == ("promise", "already_handled")
    claimed_by_a_run_that_died(HOUR)
    assert result_of(await gw.outreach.promises(), label) == ("promise", "sent")
    assert len(promise_handoffs(gw)) == 1
    assert result_of(await gw.outreach.promises(), label) == ("promise", "already_handled")


def test_bot_monitor_promises_prints_what_it_handed_over(
        tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    for names in REQUIRED.values():  # no provider credentials: web chat only
        for name in names:
            monkeypatch.delenv(name, raising=False)
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    gateway_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    for name, value in (("DATABASE_URL", store_url), ("GATEWAY_DATABASE_URL", gateway_url),
                        ("VAR_DIR", str(tmp_path / "var")), ("REDIS_URL", "")):
        monkeypatch.setenv(name, value)
    seeded = open_store(store_url)
    seed_demo_store(seeded, now)
    claim = open_claim(seeded, "A1003", now - timedelta(days=5))
    seeded.close()
    records = GatewayRecords(create_store_engine(gateway_url))
    HandoffStore(records.engine)
    chat = wrote(records, now.timestamp() - HOUR, "webchat", "signed-session-3")
    add_handoff(records, now.timestamp() - DAY, chat, "A1003", owner=BUYER2)
    records.close()
    # whatever the time of day the tests run (business hours are tested on their own)
    monkeypatch.setattr("bot.outreach.policy.load_monitor_policy",
                        lambda channels: monitor_policy())

    assert main(["monitor", "promises"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("monitor promises: 2 due (sent 1, no_conversation 1), 1 handed to a "
                          "person")
    assert f"handed to a person: A1003 {claim.claim_id} (H-2)" in out
    assert "due, NOT handed over: no conversation of the customer is known (a person must " \
           f"take it up; tried again next run): {SEEDED_CLAIM}" in out
