"""The gateway's Rasa client against a local server that answers as Rasa's (strict)
REST channel does: replies pass through; an error, such as the 503 of a turn that
failed, is the bot being unavailable (so the message is asked again, or goes to a
person, not nowhere)."""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from bot.rasa import BotUnavailable, RasaClient
from tests.provider_api import ProviderAPI, RecordedRequest, free_port

WEBHOOK = "/webhooks/rest/webhook"


@pytest_asyncio.fixture
async def rasa() -> AsyncIterator[ProviderAPI]:
    api = await ProviderAPI().start()
    yield api
    await api.stop()


def answering(api: ProviderAPI, replies: list) -> None:
    async def answer(request: RecordedRequest) -> web.Response:
        return web.json_response(replies)

    api.answer("POST", WEBHOOK, answer)


async def ask(client: RasaClient) -> list:
    try:
        return await client.ask("telegram:1", "hello", {})
    finally:
        await client.close()


async def test_replies_pass_through(rasa: ProviderAPI) -> None:
    answering(rasa, [{"recipient_id": "telegram:1", "text": "Hi!",
                      "buttons": [{"title": "Track", "payload": "/order_status"}]}])
    [reply] = await ask(RasaClient((rasa.url,), 5))
    assert reply.text == "Hi!" and reply.buttons[0].payload == "/order_status"


@pytest.mark.parametrize("status", [500, 503])
async def test_an_error_answer_is_unavailable(rasa: ProviderAPI, status: int) -> None:
    rasa.fail_next("POST", WEBHOOK, web.json_response({"error": "the turn failed"},
                                                      status=status))
    with pytest.raises(BotUnavailable, match=f"HTTP {status}"):
        await ask(RasaClient((rasa.url,), 5))


async def test_a_conversation_keeps_to_one_instance_of_several() -> None:
    instances = [await ProviderAPI().start() for _ in range(2)]
    try:
        for api in instances:
            answering(api, [{"recipient_id": "x", "text": api.url}])
        client = RasaClient(tuple(api.url for api in instances), 5)
        for sender in ("telegram:1", "telegram:2", "telegram:3", "telegram:4"):
            first = await client.ask(sender, "hello", {})
            assert await client.ask(sender, "again", {}) == first
        await client.close()
        # the senders are spread: both instances served some of them
        assert all(api.requests for api in instances)
    finally:
        for api in instances:
            await api.stop()


async def test_an_instance_that_refuses_connections_is_passed_over(rasa: ProviderAPI) -> None:
    answering(rasa, [{"recipient_id": "x", "text": "from the live one"}])
    down = f"http://127.0.0.1:{free_port()}"
    client = RasaClient((down, rasa.url), 5)
    try:
        for sender in ("telegram:1", "telegram:2", "telegram:3"):
            [reply] = await client.ask(sender, "hello", {})
            assert reply.text == "from the live one"
    finally:
        await client.close()


async def test_when_every_instance_refuses_the_bot_is_unavailable() -> None:
    client = RasaClient((f"http://127.0.0.1:{free_port()}",
                         f"http://127.0.0.1:{free_port()}"), 5)
    with pytest.raises(BotUnavailable, match="ClientConnectorError"):
        await ask(client)


async def test_a_burst_waits_in_the_gateway_with_few_requests_in_flight(
        rasa: ProviderAPI) -> None:
    in_flight, most = 0, 0

    async def slow(request: RecordedRequest) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.json_response([{"recipient_id": "x", "text": "ok"}])

    rasa.answer("POST", WEBHOOK, slow)
    client = RasaClient((rasa.url,), 5, in_flight=3)
    try:
        answers = await asyncio.gather(*(client.ask(f"telegram:{n}", "hi", {})
                                         for n in range(12)))
    finally:
        await client.close()
    assert [reply.text for [reply] in answers] == ["ok"] * 12
    assert most == 3
