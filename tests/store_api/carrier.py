"""What the carrier-tracking stand-ins (easypost.py, aftership.py) share: an aiohttp app
served from a thread of its own (the action server and the tests' own loops call it),
every request recorded, switches to throttle or fail the next requests, and signed
webhooks fired at a gateway."""
from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import aiohttp
from aiohttp import web

from tests.provider_api import free_port


@dataclass
class Received:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any
    status: int


class ThreadedStandIn:
    name = "stand-in"

    def __init__(self) -> None:
        self.throttle_next = 0  # the next requests answer 429
        self.fail_next = 0  # the next requests answer 503
        self.received: List[Received] = []
        self.url = ""
        self.lock = threading.RLock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner: Optional[web.AppRunner] = None
        self._thread: Optional[threading.Thread] = None

    # to be given by each stand-in

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def refusal(self, request: web.Request) -> Optional[web.Response]:
        """A throttled, failed or unauthenticated request's answer."""
        raise NotImplementedError

    # shared

    def calls(self, method: str, pattern: str) -> List[Received]:
        return [r for r in self.received if r.method == method and re.fullmatch(pattern,
                                                                                r.path)]

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            body = await request.json() if request.can_read_body else None
        except ValueError:
            body = None
        with self.lock:
            response = self.refusal(request)
            if response is None:
                response = await handler(request)
            self.received.append(Received(request.method, request.path, dict(request.query),
                                          dict(request.headers), body, response.status))
        return response

    def start(self) -> str:
        """Serve on a free loopback port from a thread; returns the base URL."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name=f"{self.name}-stand-in",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the {self.name} stand-in did not start")
        return self.url

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._gate])
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()


async def post_webhook(url: str, body: bytes, headers: Dict[str, str]) -> int:
    """POST a webhook as the service sends it (JSON, its signature header); the
    status the gateway answered."""
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers={
            "Content-Type": "application/json", **headers}) as response:
        await response.read()
        return response.status
