"""The gateway's Rasa client against a local server that answers as Rasa's (strict)
REST channel does: replies pass through; an error is the bot being unavailable, and
only a refusal (503, no connection) is safe to ask again; a message that waits too long
for a free request is given up without sending it; a timeout or another error may
come after the turn ran, and goes to a person."""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from bot.messaging.rasa_client import BotBusy, BotRefused, BotUnavailable, RasaClient
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


@pytest.mark.parametrize("status, refused", [(503, True), (500, False), (404, False)])
async def test_an_error_answer_is_unavailable_and_only_503_is_a_refusal(
        rasa: ProviderAPI, status: int, refused: bool) -> None:
    """Rasa answers 503 for a turn it kept nothing of (components/whole_turns.py): safe
    to ask again. Any other error may come after the turn ran."""
    rasa.fail_next("POST", WEBHOOK, web.json_response({"error": "the turn failed"},
                                                      status=status))
    with pytest.raises(BotUnavailable, match=f"HTTP {status}") as raised:
        await ask(RasaClient((rasa.url,), 5))
    assert isinstance(raised.value, BotRefused) == refused


async def test_a_turn_that_timed_out_is_not_a_refusal(rasa: ProviderAPI) -> None:
    async def hangs(request: RecordedRequest) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response([])

    rasa.answer("POST", WEBHOOK, hangs)
    with pytest.raises(BotUnavailable, match="TimeoutError") as raised:
        await ask(RasaClient((rasa.url,), 0.2))
    assert not isinstance(raised.value, BotRefused)


async def test_the_wait_for_a_request_slot_is_bounded(rasa: ProviderAPI) -> None:
    """Past bot_queue_seconds the message is given up, having sent nothing."""
    async def slow(request: RecordedRequest) -> web.Response:
        await asyncio.sleep(1)
        return web.json_response([{"recipient_id": "x", "text": "ok"}])

    rasa.answer("POST", WEBHOOK, slow)
    client = RasaClient((rasa.url,), 5, in_flight=1, queue_seconds=0.1)
    try:
        first = asyncio.create_task(client.ask("telegram:1", "hi", {}))
        await asyncio.sleep(0.05)
        with pytest.raises(BotBusy, match="no request to Rasa free"):
            await client.ask("telegram:2", "hi", {})
        assert [reply.text for reply in await first] == ["ok"]
    finally:
        await client.close()
    assert len(rasa.calls(WEBHOOK)) == 1


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
    with pytest.raises(BotRefused, match="ClientConnectorError"):
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


async def test_every_turn_goes_on_a_new_connection() -> None:
    """A kept-alive connection Rasa closed meanwhile fails a request that never reached
    Rasa, indistinguishable from a turn that ran; on a new connection that cannot be."""
    peers: list = []

    async def answer(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport
                     else None)
        return web.json_response([{"recipient_id": "x", "text": "ok"}])

    app = web.Application()
    app.router.add_post(WEBHOOK, answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = RasaClient((f"http://127.0.0.1:{port}",), 5)
    try:
        for text in ("hi", "again", "and again"):
            await client.ask("telegram:1", text, {})
    finally:
        await client.close()
        await runner.cleanup()
    assert len(peers) == 3 and len(set(peers)) == 3
