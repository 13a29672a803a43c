"""The carrier-tracking webhooks (bot/outreach/carriers.py): EasyPost's and AfterShip's
signed webhooks, as their stand-ins (tests/store_api/) send them, kept, deduplicated and
told through the shipments outreach on the demo store (the outreach tests' gateway
parts: a real Router, channels that record what they send), and once end to end through
the gateway's app to a customer on Telegram (the Bot API's stand-in)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator, Callable, Dict, Iterator, List, Tuple

import pytest
import pytest_asyncio
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from actions.store.seed import seed_demo_store
from actions.store.sql import Store, open_store
from bot.app import CARRIERS, MONITOR, ROUTER, create_app
from bot.outreach.carriers import CarrierWebhooks
from bot.outreach.tables import carrier_events
from bot.policies import load_channel_policy
from bot.settings import load_settings
from connectors.channel import Channel
from connectors.telegram import TelegramChannel
from tests.bot.test_monitor import (
    BUYER2_WHATSAPP,
    BUYER8,
    BUYER8_SMS,
    DAY,
    HOUR,
    Gateway,
    RecordingChannel,
    add_handoff,
    all_sent,
    gateway,
    monitor_policy,
    result_of,
    sent,
    wrote,
)
from tests.connectors.test_telegram import API, credentials
from tests.provider_api import ProviderAPI
from tests.store_api.aftership import AfterShipStandIn
from tests.store_api.easypost import EasyPostStandIn
from tests.store_api.easypost import sign as easypost_sign

EASYPOST_SECRET = "whsec-easypost-ﬁle"  # "ﬁ" is one character; NFKD makes it "fi"
AFTERSHIP_SECRET = "aftership-webhook-secret"
SECRETS = {"easypost": EASYPOST_SECRET, "aftership": AFTERSHIP_SECRET}
A1016_DHL = "4819203799"  # buyer8's order, promised yesterday (late)
A1003_FEDEX = "771234509876"  # buyer2's order, no scan for 6 days
A1001_UPS = "1Z999AA10123456784"  # buyer1's order, on time


@dataclasses.dataclass
class Hooks:
    gw: Gateway
    webhooks: CarrierWebhooks
    client: TestClient
    easypost: EasyPostStandIn
    aftership: AfterShipStandIn

    @property
    def easypost_url(self) -> str:
        return str(self.client.make_url("/webhooks/easypost"))

    @property
    def aftership_url(self) -> str:
        return str(self.client.make_url("/webhooks/aftership"))

    def events(self) -> List[Tuple[str, str, str, str]]:
        with self.gw.records.engine.connect() as db:
            rows = db.execute(sa.select(carrier_events).order_by(carrier_events.c.id)).all()
        return [(r.provider, r.event_id, r.state, r.result) for r in rows]

    async def told(self, count: int) -> None:
        """Until the background work has settled `count` events."""
        for _ in range(200):
            if sum(1 for e in self.events() if e[2] == "done") >= count:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"not told: {self.events()}")


@pytest.fixture
def shop(tmp_path: Path, now: datetime) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    seed_demo_store(store, now)
    yield store
    store.close()


@pytest_asyncio.fixture
async def hooks(tmp_path: Path, shop: Store, now: datetime) -> AsyncIterator[Hooks]:
    channels: Dict[str, Channel] = {name: RecordingChannel(name)
                                    for name in ("twilio", "whatsapp", "telegram")}
    async with gateway(tmp_path, shop, now, channels) as gw:
        webhooks = CarrierWebhooks(gw.outreach, SECRETS, gw.clock)
        app = web.Application()
        webhooks.install(app)
        client = TestClient(TestServer(app))
        await client.start_server()
        await webhooks.start()
        try:
            yield Hooks(gw, webhooks, client, EasyPostStandIn(now=now),
                        AfterShipStandIn(now=now))
        finally:
            await webhooks.stop()
            await client.close()


# --- EasyPost ---------------------------------------------------------------------------

async def test_a_carrier_exception_reaches_the_customer_once(hooks: Hooks) -> None:
    gw, easypost = hooks.gw, hooks.easypost
    gw.wrote("twilio", BUYER8_SMS, 3 * DAY, channel="sms")
    easypost.parcel(A1016_DHL, "in_transit", status_detail="delivery_exception", steps=[
        ("in_transit", "Departed facility", "Louisville", "KY"),
        ("in_transit", "Delivery exception: address needs correction", "Cincinnati", "OH")])
    easypost.tracker(A1016_DHL, "DHLExpress")
    event = easypost.event(A1016_DHL, event_id="evt_first")

    assert await easypost.fire(hooks.easypost_url, event, EASYPOST_SECRET) == 200
    await hooks.told(1)

    [(to, text)] = sent(gw, "twilio")
    assert to == BUYER8_SMS
    assert text.startswith("Hi Jamie, an update on your order A1016: DHL reports a problem "
                           "with the delivery (Delivery exception: address needs correction)")
    # the late text the scan would send is covered by it: one message
    assert gw.claims() == {("carrier", "A1016"): "sent", ("late", "A1016"): "covered"}
    assert hooks.events() == [("easypost", "evt_first", "done", "sent")]

    # EasyPost sends it again: acknowledged, not told twice
    assert await easypost.fire(hooks.easypost_url, event, EASYPOST_SECRET) == 200
    # another exception of the parcel: the order was told already
    again = easypost.event(A1016_DHL, event_id="evt_second")
    assert await easypost.fire(hooks.easypost_url, again, EASYPOST_SECRET) == 200
    await hooks.told(2)
    assert hooks.events()[1:] == [("easypost", "evt_second", "done", "already_messaged")]
    # and the nightly scan finds it messaged
    assert result_of(await gw.outreach.shipments(), "A1016") == ("late", "already_messaged")
    assert sent(gw, "twilio") == [(to, text)]


@pytest.mark.parametrize("signature, status", [
    (None, 200),  # signed by the stand-in with the secret, as EasyPost signs
    ("", 401),
    ("hmac-sha256-hex=" + "0" * 64, 401),
    (easypost_sign(b"another body", EASYPOST_SECRET), 401),
    ("sha256=whatever", 401),
])
async def test_easypost_signatures(hooks: Hooks, signature: str, status: int) -> None:
    hooks.easypost.tracker("EZ2000000002")
    body = hooks.easypost.event("EZ2000000002", event_id="evt_sig")
    assert await hooks.easypost.fire(hooks.easypost_url, body, EASYPOST_SECRET,
                                     signature) == status
    assert len(hooks.events()) == (1 if status == 200 else 0)


async def test_easyposts_secret_is_normalised_to_nfkd(hooks: Hooks) -> None:
    hooks.easypost.tracker("EZ2000000002")
    body = hooks.easypost.event("EZ2000000002")
    # the key EasyPost's libraries use: the secret normalised ("ﬁ" -> "fi")
    assert await hooks.easypost.fire(hooks.easypost_url, body,
                                     "whsec-easypost-file") == 200


async def test_refusals_are_logged_without_the_body(hooks: Hooks,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    hooks.easypost.tracker(A1016_DHL, "DHLExpress")
    body = hooks.easypost.event(A1016_DHL)
    assert await hooks.easypost.fire(hooks.easypost_url, body, "not the secret") == 401
    malformed = b'{"customer": "+14155550108", "not": "an event"}'
    assert await hooks.easypost.fire(hooks.easypost_url, malformed, EASYPOST_SECRET) == 400
    assert await hooks.easypost.fire(hooks.easypost_url, b"not json", EASYPOST_SECRET) == 400
    no_tracker = json.dumps({"object": "Event", "id": "evt_x",
                             "description": "tracker.updated", "result": {}}).encode()
    assert await hooks.easypost.fire(hooks.easypost_url, no_tracker, EASYPOST_SECRET) == 400
    assert "refused a easypost webhook" in caplog.text
    assert "4155550108" not in caplog.text and A1016_DHL not in caplog.text
    assert hooks.events() == []


async def test_other_events_are_acknowledged_and_ignored(hooks: Hooks) -> None:
    body = json.dumps({"object": "Event", "id": "evt_batch", "description": "batch.updated",
                       "result": {"object": "Batch"}}).encode()
    assert await hooks.easypost.fire(hooks.easypost_url, body, EASYPOST_SECRET) == 200
    assert hooks.events() == []


async def test_a_parcel_the_carrier_reports_failed_is_left_to_people(hooks: Hooks) -> None:
    gw = hooks.gw
    gw.wrote("twilio", BUYER8_SMS, HOUR, channel="sms")
    hooks.easypost.parcel(A1016_DHL, "failure",
                          steps=[("failure", "Package damaged", "Cincinnati", "OH")])
    hooks.easypost.tracker(A1016_DHL, "DHLExpress")
    assert await hooks.easypost.fire(hooks.easypost_url, hooks.easypost.event(A1016_DHL),
                                     EASYPOST_SECRET) == 200
    await hooks.told(1)
    assert all_sent(gw) == [] and gw.claims() == {}
    assert hooks.events()[0][3] == "lost"


async def test_a_parcel_on_its_way_is_nothing_to_tell(hooks: Hooks) -> None:
    hooks.gw.wrote("twilio", BUYER8_SMS, HOUR, channel="sms")
    hooks.easypost.parcel(A1016_DHL, "out_for_delivery",
                          steps=[("out_for_delivery", "Out for delivery", "Seattle", "WA")])
    hooks.easypost.tracker(A1016_DHL, "DHLExpress")
    await hooks.easypost.fire(hooks.easypost_url, hooks.easypost.event(A1016_DHL),
                              EASYPOST_SECRET)
    await hooks.told(1)
    assert all_sent(hooks.gw) == [] and hooks.events()[0][3] == "nothing_to_tell"


# --- AfterShip --------------------------------------------------------------------------

async def test_an_aftership_failed_attempt_reaches_the_customer_once(hooks: Hooks) -> None:
    gw, aftership = hooks.gw, hooks.aftership
    gw.wrote("whatsapp", BUYER2_WHATSAPP, HOUR)
    aftership.parcel(A1003_FEDEX, "fedex", "AttemptFail", "AttemptFail_001",
                     subtag_message="Customer not available at door",
                     checkpoints=[("AttemptFail", "Delivery attempted", "Denver", "CO")])
    aftership.tracking(A1003_FEDEX, "fedex")
    body = aftership.event(A1003_FEDEX, event_id="f6a0a1d2-0001")
    assert await aftership.fire(hooks.aftership_url, body, AFTERSHIP_SECRET) == 200
    assert await aftership.fire(hooks.aftership_url, body, AFTERSHIP_SECRET) == 200
    await hooks.told(1)
    [(to, text)] = sent(gw, "whatsapp")
    assert to == BUYER2_WHATSAPP and "order A1003: FedEx reports a problem" in text
    assert "(Customer not available at door)" in text
    # the carrier scanned it since the store's last scan: late, no longer unscanned
    assert gw.claims() == {("carrier", "A1003"): "sent", ("late", "A1003"): "covered"}
    assert hooks.events() == [("aftership", "f6a0a1d2-0001", "done", "sent")]


@pytest.mark.parametrize("signature, status", [
    (None, 200), ("", 401), ("bm90IHRoZSBzaWduYXR1cmU=", 401)])
async def test_aftership_signatures(hooks: Hooks, signature: str, status: int) -> None:
    hooks.aftership.tracking(A1001_UPS, "ups")
    body = hooks.aftership.event(A1001_UPS)
    assert await hooks.aftership.fire(hooks.aftership_url, body, AFTERSHIP_SECRET,
                                      signature) == status
    assert len(hooks.events()) == (1 if status == 200 else 0)


async def test_aftership_malformed_is_refused(hooks: Hooks) -> None:
    body = json.dumps({"event": "tracking_update", "event_id": "e1", "msg": []}).encode()
    assert await hooks.aftership.fire(hooks.aftership_url, body, AFTERSHIP_SECRET) == 400
    assert hooks.events() == []


# --- kept: business hours, crashes ------------------------------------------------------

async def test_an_event_kept_before_a_crash_is_told_at_the_next_start(
        hooks: Hooks, tmp_path: Path) -> None:
    gw = hooks.gw
    gw.wrote("twilio", BUYER8_SMS, HOUR, channel="sms")
    await hooks.webhooks.stop()  # acknowledged, then the gateway stops before telling
    hooks.easypost.parcel(A1016_DHL, "in_transit", status_detail="weather_delay")
    hooks.easypost.tracker(A1016_DHL, "DHLExpress")
    assert await hooks.easypost.fire(hooks.easypost_url, hooks.easypost.event(A1016_DHL),
                                     EASYPOST_SECRET) == 200
    await asyncio.sleep(0.1)
    assert all_sent(gw) == [] and hooks.events()[0][2] == "pending"

    restarted = CarrierWebhooks(gw.outreach, SECRETS, gw.clock)
    await restarted.start()
    try:
        await hooks.told(1)
    finally:
        await restarted.stop()
    assert [to for to, _ in sent(gw, "twilio")] == [BUYER8_SMS]


async def test_outside_business_hours_an_event_waits_until_they_open(tmp_path: Path) -> None:
    sunday_night = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)  # opens 09:00 UTC
    shop = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    seed_demo_store(shop, sunday_night)
    policy = monitor_policy().copy(update={"only_in_business_hours": True})
    twilio = RecordingChannel("twilio")
    easypost = EasyPostStandIn(now=sunday_night)
    try:
        async with gateway(tmp_path, shop, sunday_night, {"twilio": twilio}, policy) as gw:
            gw.wrote("twilio", BUYER8_SMS, HOUR, channel="sms")
            webhooks = CarrierWebhooks(gw.outreach, SECRETS, gw.clock)
            app = web.Application()
            webhooks.install(app)
            async with TestClient(TestServer(app)) as client:
                easypost.parcel(A1016_DHL, "in_transit", status_detail="held")
                easypost.tracker(A1016_DHL, "DHLExpress")
                assert await easypost.fire(str(client.make_url("/webhooks/easypost")),
                                           easypost.event(A1016_DHL),
                                           EASYPOST_SECRET) == 200
            assert await webhooks.tell_pending() == ["outside_hours"]
            assert twilio.sent == [] and gw.claims() == {}
            gw.clock.now += 7 * HOUR  # Sunday 10:00
            assert await webhooks.tell_pending() == ["sent"]
            assert await webhooks.tell_pending() == []
            assert len(twilio.sent) == 1
    finally:
        shop.close()


# --- end to end through the gateway -----------------------------------------------------

CHAT = 9900001  # a Telegram chat of these tests (chat ids 9900001+)


async def test_through_the_gateway_a_telegram_customer_hears_once(
        tmp_path: Path, shop: Store, now: datetime, bot_api: ProviderAPI) -> None:
    settings = dataclasses.replace(
        load_settings(), rasa_url="http://127.0.0.1:9",
        database_url=f"sqlite:///{tmp_path / 'store.db'}", var_dir=tmp_path, redis_url="",
        tracker_database_url=f"sqlite:///{tmp_path / 'tracker.db'}",
        easypost_webhook_secret=EASYPOST_SECRET, aftership_webhook_secret="")
    policy = load_channel_policy()
    app = create_app(settings, {"telegram": TelegramChannel(credentials(bot_api.url),
                                                            policy)}, policy)
    app[MONITOR].outreach.policy = monitor_policy()  # whatever the time of day
    assert app[CARRIERS].outreach is app[MONITOR].outreach
    easypost = EasyPostStandIn(now=now)
    async with TestClient(TestServer(app)) as client:
        records = app[ROUTER].records
        # the customer verified order A1016 with the bot on Telegram (a handoff of it)
        conversation = wrote(records, now.timestamp() - HOUR, "telegram", str(CHAT))
        add_handoff(records, now.timestamp() - HOUR, conversation, "A1016", owner=BUYER8)
        easypost.parcel(A1016_DHL, "in_transit", status_detail="delivery_exception",
                        steps=[("in_transit", "Delivery exception", "Cincinnati", "OH")])
        easypost.tracker(A1016_DHL, "DHLExpress")
        url = str(client.make_url("/webhooks/easypost"))
        event = easypost.event(A1016_DHL, event_id="evt_e2e")
        for _ in range(2):  # EasyPost's retry of the same event
            assert await easypost.fire(url, event, EASYPOST_SECRET) == 200
        assert (await client.post("/webhooks/aftership", data=b"{}")).status == 404

        sends: Callable[[], List] = lambda: bot_api.calls(f"{API}/sendMessage")  # noqa: E731
        for _ in range(200):
            if sends():
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        [message] = sends()
        [chat], [text] = message.form["chat_id"], message.form["text"]
        assert chat == str(CHAT)
        assert "order A1016: DHL reports a problem with the delivery" in text
        texts = [t.text for t in await records.read(records.transcript, conversation)
                 if t.role == "bot"]
        assert texts == [text]


async def test_an_event_that_cannot_be_told_does_not_hold_up_the_others(
        hooks: Hooks) -> None:
    gw = hooks.gw
    await hooks.webhooks.stop()
    gw.wrote("twilio", BUYER8_SMS, HOUR, channel="sms")
    with gw.records.engine.begin() as db:  # kept by an older version, say: unreadable
        db.execute(carrier_events.insert().values(
            provider="easypost", event_id="evt_unreadable", tracking_number=A1001_UPS,
            order_ref="", tracking="not json", state="pending", result="", attempts=0,
            received_at=gw.clock.now, updated_at=gw.clock.now))
    hooks.easypost.parcel(A1016_DHL, "in_transit", status_detail="held")
    hooks.easypost.tracker(A1016_DHL, "DHLExpress")
    assert await hooks.easypost.fire(hooks.easypost_url, hooks.easypost.event(A1016_DHL),
                                     EASYPOST_SECRET) == 200

    teller = CarrierWebhooks(gw.outreach, SECRETS, gw.clock)  # the stopped one's peer
    assert await teller.tell_pending() == ["failed", "sent"]
    for _ in range(3):
        assert await teller.tell_pending() == ["failed"]
    assert await teller.tell_pending() == ["failed"]  # the fifth: set aside
    assert await teller.tell_pending() == []
    assert [e[2:] for e in hooks.events()] == [("done", "failed"), ("done", "sent")]
    assert len(sent(gw, "twilio")) == 1

    # told events are forgotten after 30 days
    gw.clock.now += 31 * DAY
    assert await teller.tell_pending() == [] and hooks.events() == []
