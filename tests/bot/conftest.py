"""Fixtures of the gateway tests: a local server that answers as the Telegram Bot API,
the gateway in process in front of the real Rasa with an admin token, headless
Chromium (skipped, with the reason, where it is missing), and the store platforms as
the gateway opens them."""
from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import AsyncIterator, Dict, Iterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from actions.store.backend import open_systems
from actions.store.types import StoreSystems
from bot.app import create_app
from bot.policies import load_channel_policy
from bot.settings import load_settings
from connectors.telegram import TelegramChannel
from tests.browser import Browser, unavailable
from tests.conftest import RasaStack, shopify_env, woocommerce_env
from tests.connectors import test_twilio as twilio_test
from tests.connectors import test_whatsapp as whatsapp_test
from tests.connectors.test_telegram import API, TOKEN, credentials, sent_message
from tests.provider_api import ProviderAPI, RecordedRequest, answer_twilio_messages
from tests.store_api.shopify import ShopifyStandIn
from tests.store_api.woocommerce import WooCommerceStandIn

ADMIN_TOKEN = "admin-token-for-tests"
PHOTO = b"\xff\xd8\xff\xe0 a damaged parcel"


@pytest_asyncio.fixture
async def bot_api() -> AsyncIterator[ProviderAPI]:
    api = await ProviderAPI().start()
    counter = iter(range(1, 10_000))

    async def send(request: RecordedRequest) -> web.Response:
        return web.json_response(sent_message(request, next(counter)))

    async def true(request: RecordedRequest) -> web.Response:
        return web.json_response({"ok": True, "result": True})

    api.answer("POST", f"{API}/sendMessage", send)
    api.answer("POST", f"{API}/sendPhoto", send)
    async def get_file(request: RecordedRequest) -> web.Response:
        return web.json_response({"ok": True, "result": {
            "file_id": request.form["file_id"][0], "file_unique_id": "u1",
            "file_size": len(PHOTO), "file_path": "photos/file_1.jpg"}})

    async def file_bytes(request: RecordedRequest) -> web.Response:
        return web.Response(body=PHOTO, content_type="image/jpeg")

    api.answer("POST", f"{API}/answerCallbackQuery", true)
    api.answer("POST", f"{API}/getFile", get_file)
    api.answer("GET", f"/file/bot{TOKEN}/photos/file_1.jpg", file_bytes)
    yield api
    await api.stop()


@pytest_asyncio.fixture
async def twilio_api() -> AsyncIterator[ProviderAPI]:
    api = await ProviderAPI().start()
    answer_twilio_messages(api, twilio_test.ACCOUNT_SID)
    yield api
    await api.stop()


@pytest_asyncio.fixture
async def client(rasa_stack: RasaStack, bot_api: ProviderAPI) -> AsyncIterator[TestClient]:
    settings = dataclasses.replace(load_settings(), rasa_url=rasa_stack.rasa_url,
                                   database_url=rasa_stack.database_url,
                                   var_dir=rasa_stack.var_dir, redis_url="",
                                   agent_api_token=ADMIN_TOKEN,
                                   tracker_database_url=f"sqlite:///{rasa_stack.tracker_db}")
    policy = load_channel_policy()
    channel = TelegramChannel(credentials(bot_api.url), policy)
    client = TestClient(TestServer(create_app(settings, {"telegram": channel}, policy)))
    await client.start_server()
    yield client
    await client.close()


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    async with Browser.open() as opened:
        yield opened


@pytest_asyncio.fixture
async def graph() -> AsyncIterator[ProviderAPI]:
    """Meta's Graph API sending WhatsApp messages: each accepted under an id of its own."""
    api = await ProviderAPI().start()

    async def accepted(request: RecordedRequest) -> web.Response:
        return web.json_response({"messaging_product": "whatsapp",
                                  "contacts": [{"input": request.json["to"]}],
                                  "messages": [{"id": f"wamid.{uuid.uuid4().hex}"}]})

    api.answer("POST", whatsapp_test.MESSAGES_PATH, accepted)
    yield api
    await api.stop()


def platform_as_the_gateway_opens_it(env: Dict[str, str], tmp_path: Path) -> StoreSystems:
    """The platform's store systems as the gateway opens them: the bot's records in a
    database of their own, no order cache (the gateway reads outside turns)."""
    return open_systems({**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'gw-bot.db'}"})


@pytest.fixture
def shopify_platform(shopify_shop: ShopifyStandIn, tmp_path: Path) -> Iterator[StoreSystems]:
    systems = platform_as_the_gateway_opens_it(shopify_env(shopify_shop), tmp_path)
    yield systems
    systems.close()


@pytest.fixture
def woocommerce_platform(woocommerce_shop: WooCommerceStandIn,
                         tmp_path: Path) -> Iterator[StoreSystems]:
    systems = platform_as_the_gateway_opens_it(woocommerce_env(woocommerce_shop), tmp_path)
    yield systems
    systems.close()
