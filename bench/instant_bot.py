"""An instant bot: Rasa's REST channel answered at once, in a process of its own, as
Rasa is. bench_gateway.py measures the gateway's own cost against it: every call to
the bot then crosses between processes, whether it comes through the gateway or
straight from the load generator.

    .venv/bin/python bench/instant_bot.py PORT
"""
from __future__ import annotations

import sys

from aiohttp import web


async def answer(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response([{"recipient_id": body["sender"], "text": "ok"}])


async def status(request: web.Request) -> web.Response:
    return web.Response(text="instant bot")


def main() -> None:
    app = web.Application()
    app.router.add_post("/webhooks/rest/webhook", answer)
    app.router.add_get("/", status)  # what Rasa's health check asks
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
