"""A local HTTP server that stands in for a provider's API (Twilio, Meta, Telegram):
it records every request and answers with what each test registers, shaped as the
real API documents. Tests may queue failures (429, 500) ahead of the normal answer."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import parse_qs

from aiohttp import web

Answer = Callable[["RecordedRequest"], Awaitable[web.StreamResponse]]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: Dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def form(self) -> Dict[str, List[str]]:
        return parse_qs(self.body.decode(), keep_blank_values=True)


@dataclass
class ProviderAPI:
    """Start with `await api.start()`; `api.url` is its base URL."""

    answers: Dict[Tuple[str, str], Answer] = field(default_factory=dict)
    failures: Dict[Tuple[str, str], List[web.Response]] = field(default_factory=dict)
    requests: List[RecordedRequest] = field(default_factory=list)
    url: str = ""
    _runner: Optional[web.AppRunner] = None

    def answer(self, method: str, path: str, handler: Answer) -> None:
        self.answers[(method, path)] = handler

    def fail_next(self, method: str, path: str, *responses: web.Response) -> None:
        """Answer the next requests to this route with these responses first."""
        self.failures.setdefault((method, path), []).extend(responses)

    def calls(self, path: str) -> List[RecordedRequest]:
        return [request for request in self.requests if request.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        recorded = RecordedRequest(request.method, request.path, dict(request.headers),
                                   await request.read())
        self.requests.append(recorded)
        key = (request.method, request.path)
        if self.failures.get(key):
            return self.failures[key].pop(0)
        handler = self.answers.get(key)
        if handler is None:
            return web.json_response({"error": f"no route {key}"}, status=404)
        return await handler(recorded)

    async def start(self) -> ProviderAPI:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


def answer_twilio_messages(api: ProviderAPI, account_sid: str) -> str:
    """Answer Twilio's Messages API as it documents a created message; its path."""
    path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
    sids = (f"SM{number:032x}" for number in itertools.count(1))

    async def created(request: RecordedRequest) -> web.Response:
        form = request.form
        return web.json_response({
            "account_sid": account_sid, "api_version": "2010-04-01",
            "body": form.get("Body", [""])[0], "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": form["From"][0],
            "num_media": str(len(form.get("MediaUrl", []))), "num_segments": "1",
            "price": None, "sid": next(sids), "status": "queued", "to": form["To"][0],
        }, status=201)

    api.answer("POST", path, created)
    return path


@contextlib.contextmanager
def serving_in_a_thread(api: ProviderAPI) -> Iterator[ProviderAPI]:
    """The stand-in on an event loop of its own, for a process that is not the test's
    (an action server calling Twilio) while the test's loop is busy or absent."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(api.start(), loop).result(10)
    try:
        yield api
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
