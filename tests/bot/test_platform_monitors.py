"""The monitors and the carriers' webhooks on a store platform (STORE_BACKEND=shopify or
woocommerce): the shipments scan and a carrier's report of a parcel read the platform's
orders (its stand-in, over HTTP), not the demo SQL store, and message the customer
through the outreach tests' gateway parts (a real Router, channels that record)."""
from __future__ import annotations

import asyncio
import re
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator, Dict, Tuple

import pytest_asyncio
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from actions.store.types import StoreSystems
from bot.outreach.carriers import CarrierWebhooks
from bot.outreach.tables import carrier_events
from connectors.channel import Channel
from tests.bot.test_carrier_webhooks import A1003_FEDEX, EASYPOST_SECRET, SECRETS
from tests.bot.test_monitor import (
    BUYER2_WHATSAPP,
    BUYER8_SMS,
    DAY,
    HOUR,
    Gateway,
    RecordingChannel,
    gateway,
    result_of,
    sent,
)
from tests.store_api.easypost import EasyPostStandIn
from tests.store_api.shopify import ShopifyStandIn


@pytest_asyncio.fixture
async def on_shopify(tmp_path: Path, now: datetime,
                     shopify_platform: StoreSystems) -> AsyncIterator[Gateway]:
    async with gateway(tmp_path, shopify_platform, now, recording()) as gw:
        yield gw


def recording() -> Dict[str, Channel]:
    return {name: RecordingChannel(name)
            for name in ("twilio", "whatsapp", "telegram", "webchat")}


async def test_the_shipments_scan_on_shopify_tells_from_shopifys_orders(
        on_shopify: Gateway, shopify_shop: ShopifyStandIn) -> None:
    gw = on_shopify
    gw.wrote("twilio", BUYER8_SMS, 3 * DAY, channel="sms")
    gw.wrote("whatsapp", BUYER2_WHATSAPP, HOUR)
    for n in range(2001, 2031):  # web chats that verified an order, months of them
        gw.handoff(gw.wrote("webchat", f"session-{n}", 30 * DAY), f"A{n}")
    before = shopify_shop.calls("Orders")  # the handoffs' snapshots, read then

    report = await gw.outreach.shipments()

    assert result_of(report, "A1016")[1] == "sent"
    assert result_of(report, "A1003") == ("no_scan", "sent")
    [(_, late)] = sent(gw, "twilio")
    [(_, no_scan)] = sent(gw, "whatsapp")
    assert "order A1016" in late and "4819203799" in late  # Shopify's tracking number
    assert "order A1003" in no_scan and "FedEx has not scanned the parcel" in no_scan
    # Shopify's last fulfilment event says FAILURE: lost, for people
    assert report.lost == ["A1010"]
    # the scan reads the orders' states lightly, then the orders in transit whole, 8 to
    # a request, and each once (the scan is one turn); the conversations are matched by
    # the handoffs' order snapshots, not by reading every order ever verified
    assert shopify_shop.calls("OrderStates")
    whole = [set(re.findall(r"name:(\d+)", call.variables["query"]))
             for call in shopify_shop.calls("Orders")[len(before):]]
    read = [number for numbers in whole for number in numbers]
    assert whole and all(len(numbers) <= 8 for numbers in whole)
    assert len(read) == len(set(read)) and {"1003", "1010", "1016"} <= set(read)
    assert len(whole) == -(-len(read) // 8)


async def test_the_shipments_scan_on_woocommerce_claims_no_missing_scans(
        tmp_path: Path, now: datetime, woocommerce_platform: StoreSystems) -> None:
    """WooCommerce keeps no carrier scans: a parcel is told late by its date, never
    "not scanned for days" (nothing says so)."""
    async with gateway(tmp_path, woocommerce_platform, now, recording()) as gw:
        gw.wrote("twilio", BUYER8_SMS, 3 * DAY, channel="sms")
        gw.wrote("whatsapp", BUYER2_WHATSAPP, HOUR)
        report = await gw.outreach.shipments()
        assert result_of(report, "A1016") == ("late", "sent")
        assert result_of(report, "A1003") == ("late", "sent")
        assert not any(a.kind == "no_scan" for a in report.attempts)
        # buyer2's A1010, lost by the SQL demo's carrier, is just late on WooCommerce
        texts = [text for _, text in sent(gw, "whatsapp")]
        assert ["order A1003" in t for t in texts].count(True) == 1 and len(texts) == 2
        assert not any("not scanned" in text for text in texts)


async def test_a_carrier_report_naming_only_the_parcel_finds_the_shopify_order(
        on_shopify: Gateway, now: datetime) -> None:
    gw = on_shopify
    gw.wrote("whatsapp", BUYER2_WHATSAPP, HOUR)
    easypost = EasyPostStandIn(now=now)
    easypost.parcel(A1003_FEDEX, "in_transit", status_detail="delivery_exception", steps=[
        ("in_transit", "Arrived at facility", "Memphis", "TN"),
        ("in_transit", "Delivery exception: weather delay", "Memphis", "TN")])
    easypost.tracker(A1003_FEDEX, "FedEx")
    webhooks = CarrierWebhooks(gw.outreach, SECRETS, gw.clock)
    app = web.Application()
    webhooks.install(app)
    async with TestClient(TestServer(app)) as client:
        await webhooks.start()
        try:
            event = easypost.event(A1003_FEDEX, event_id="evt_platform")
            url = str(client.make_url("/webhooks/easypost"))
            assert await easypost.fire(url, event, EASYPOST_SECRET) == 200
            assert await settled(gw) == ("done", "sent")
        finally:
            await webhooks.stop()
    [(to, text)] = sent(gw, "whatsapp")
    assert to == BUYER2_WHATSAPP
    assert "order A1003" in text and "weather delay" in text


async def settled(gw: Gateway) -> Tuple[str, str]:
    """The state and result of the one carrier event, once the background work has
    handled it."""
    for _ in range(250):
        with gw.records.engine.connect() as db:
            row = db.execute(sa.select(carrier_events.c.state, carrier_events.c.result)).first()
        if row is not None and row.state == "done":
            return row.state, row.result
        await asyncio.sleep(0.02)
    raise AssertionError("the carrier event was not handled")
