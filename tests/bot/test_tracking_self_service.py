"""Where is my order, answered from the carrier: the customer's words go in through the
gateway's REST channel to the real Rasa and the action server on the demo store with
TRACKING_BACKEND=easypost, which asks the EasyPost stand-in (tests/store_api/easypost.py)
over HTTP."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from bot.app import create_app
from bot.policies import load_channel_policy
from bot.settings import load_settings
from connectors.rest import RestChannel
from tests.bot.test_identity import REST_TOKEN
from tests.bot.test_self_service import ADMIN_TOKEN, Customer
from tests.conftest import RasaStack, start_rasa_stack
from tests.store_api.easypost import EasyPostStandIn


@dataclasses.dataclass
class TrackedStack:
    stack: RasaStack
    easypost: EasyPostStandIn


@pytest.fixture(scope="module")
def tracked_stack(trained_model: Path, tmp_path_factory: pytest.TempPathFactory,
                  now: datetime) -> Iterator[TrackedStack]:
    var = tmp_path_factory.mktemp("tracking_self_service")
    easypost = EasyPostStandIn(now=now)
    easypost.start()
    try:
        with start_rasa_stack(trained_model, var, now, TRACKING_BACKEND="easypost",
                              EASYPOST_API_KEY=easypost.api_key,
                              EASYPOST_API_BASE_URL=easypost.url) as stack:
            yield TrackedStack(stack, easypost)
    finally:
        easypost.stop()


@pytest_asyncio.fixture
async def gateway(tracked_stack: TrackedStack) -> AsyncIterator[TestClient]:
    stack = tracked_stack.stack
    settings = dataclasses.replace(load_settings(), rasa_url=stack.rasa_url,
                                   database_url=stack.database_url, var_dir=stack.var_dir,
                                   redis_url="", agent_api_token=ADMIN_TOKEN,
                                   action_server_url=stack.action_server_url)
    client = TestClient(TestServer(create_app(settings, {"rest": RestChannel(REST_TOKEN)},
                                              load_channel_policy())))
    await client.start_server()
    yield client
    await client.close()


async def test_where_is_my_order_is_answered_from_easyposts_status(
        gateway: TestClient, tracked_stack: TrackedStack, now: datetime) -> None:
    easypost = tracked_stack.easypost
    tomorrow = now + timedelta(days=1)
    easypost.parcel("1Z999AA10123456784", "out_for_delivery", steps=[
        ("in_transit", "Departed facility", "Louisville", "KY"),
        ("out_for_delivery", "Out for delivery", "Seattle", "WA")], est_delivery=tomorrow)
    ann = Customer(gateway, "tracking-status")
    assert "order number" in await ann.says("where is my order?")
    await ann.says("A1001")
    status = await ann.says("buyer1@example.com")
    assert "on its way with UPS" in status and "1Z999AA10123456784" in status
    # the carrier's latest event and estimate, not the store's
    assert "Latest update: Out for delivery, Seattle, WA" in status
    assert f"{tomorrow:%a %d %b}" in status
    [created] = easypost.calls("POST", "/v2/trackers")
    assert created.body == {"tracker": {"tracking_code": "1Z999AA10123456784",
                                        "carrier": "UPS"}}


async def test_a_parcel_easypost_says_delivered_is_told_delivered(
        gateway: TestClient, tracked_stack: TrackedStack) -> None:
    # A1016 is late in the store (DHL, a delay); the carrier has delivered it since
    tracked_stack.easypost.parcel("4819203799", "delivered", steps=[
        ("in_transit", "Delay reported by the carrier: weather", "Cincinnati", "OH"),
        ("delivered", "Delivered, front door", "Austin", "TX")])
    jamie = Customer(gateway, "tracking-delivered")
    await jamie.says("where is my order?")
    await jamie.says("A1016")
    status = await jamie.says("buyer8@example.com")
    assert "Order A1016 was delivered on" in status and "by DHL" in status
    assert "running late" not in status
