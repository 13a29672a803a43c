"""`bot balance`, the front door of run-prod: connections spread over the gateways in
turn, a gateway that refuses connections is passed over, web chat connections of one
client stay with one gateway, and with none up the client gets a 503."""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, List, Tuple

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bot.tools.balancer import Balancer, parse_backend, serve
from tests.provider_api import free_port


async def backend(name: str) -> Tuple[web.AppRunner, int]:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=f"{name} {request.path_qs} {len(await request.read())}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


@pytest_asyncio.fixture
async def balanced() -> AsyncIterator[Tuple[str, List[int]]]:
    """The balancer in front of two live gateways and one whose port is closed."""
    runners, ports = [], []
    for name in ("one", "two"):
        runner, port = await backend(name)
        runners.append(runner)
        ports.append(port)
    front = free_port()
    task = asyncio.ensure_future(serve("127.0.0.1", front, [
        ("127.0.0.1", ports[0]), ("127.0.0.1", free_port()), ("127.0.0.1", ports[1])]))
    await asyncio.sleep(0.1)
    yield f"http://127.0.0.1:{front}", ports
    task.cancel()
    for runner in runners:
        await runner.cleanup()


async def fetch(url: str, **kwargs: object) -> str:
    # a new connection each time: the balancer chooses per connection
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s, \
            s.post(url, **kwargs) as response:  # type: ignore[arg-type]
        assert response.status == 200
        return await response.text()


async def test_connections_go_to_the_gateways_in_turn_passing_over_a_dead_one(
        balanced: Tuple[str, List[int]]) -> None:
    url, _ = balanced
    answers = [await fetch(f"{url}/webhooks/telegram", data=b"x" * 100_000)
               for _ in range(6)]
    assert sorted(answer.split()[0] for answer in answers) == ["one"] * 4 + ["two"] * 2 or \
        sorted(answer.split()[0] for answer in answers) == ["one"] * 2 + ["two"] * 4
    # the whole request went through, path, query and body
    assert all(answer.split()[1:] == ["/webhooks/telegram", "100000"] for answer in answers)


async def test_web_chat_of_one_client_stays_with_one_gateway(
        balanced: Tuple[str, List[int]]) -> None:
    url, _ = balanced
    answers = {(await fetch(f"{url}/socket.io/?EIO=4&transport=polling&sid=abc")).split()[0]
               for _ in range(6)}
    assert len(answers) == 1


async def test_with_no_gateway_up_the_answer_is_503() -> None:
    front = free_port()
    task = asyncio.ensure_future(serve("127.0.0.1", front, [("127.0.0.1", free_port())]))
    await asyncio.sleep(0.1)
    try:
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{front}/health") as response:
            assert response.status == 503
    finally:
        task.cancel()


def test_backends_are_host_and_port() -> None:
    assert parse_backend("127.0.0.1:8081") == ("127.0.0.1", 8081)
    for wrong in ("8081", "host:", "host:port"):
        with pytest.raises(ValueError, match="host:port"):
            parse_backend(wrong)
    with pytest.raises(ValueError):
        Balancer([])
