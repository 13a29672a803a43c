"""Acknowledged means kept: the embedded gateway (`bot serve`, no Redis) killed, or
stopped, with a message acknowledged to Telegram but not yet answered answers it after
the restart; stopped, it ends within its grace for the turn under way.

The gateway runs as a real process and is killed with SIGKILL; Telegram's Bot API and
Rasa's REST channel are local servers (Rasa's holds the first turn until the kill)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import AsyncIterator, Dict

import aiohttp
import pytest
from aiohttp import web

from connectors.telegram import SECRET_HEADER
from tests.conftest import GATEWAY_BIN, background
from tests.connectors.test_telegram import (
    API,
    CHAT_ID,
    SECRET,
    TOKEN,
    message_update,
    sent_message,
)
from tests.provider_api import ProviderAPI, RecordedRequest, free_port

RASA_PATH = "/webhooks/rest/webhook"


# Stopped (SIGTERM), the gateway waits this long for a turn under way (the inbox's
# grace), then leaves it kept for the next start; a monitor waiting for its first run
# once held a stop for 30 s.
STOP_SECONDS = 15


@contextlib.asynccontextmanager
async def gateway(env: Dict[str, str], log: Path,
                  stop: signal.Signals = signal.SIGKILL) -> AsyncIterator[str]:
    """`bot serve` with `env`, up once its agent page answers: its base URL. Ended with
    `stop`: SIGKILL as an out-of-memory kill would, SIGTERM as a restart does."""
    url = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    with contextlib.ExitStack() as stack:
        process = await asyncio.to_thread(stack.enter_context, background(
            [str(GATEWAY_BIN / "bot"), "serve"], env, log, f"{url}/agent"))
        yield url
        if process.poll() is None:
            os.killpg(process.pid, stop)
            await asyncio.to_thread(process.wait, STOP_SECONDS)


async def eventually(condition: object, seconds: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
async def test_a_message_acknowledged_before_a_stop_is_answered_after_the_restart(
        tmp_path: Path, stop: signal.Signals) -> None:
    rasa_answers = asyncio.Event()
    rasa, telegram = await ProviderAPI().start(), await ProviderAPI().start()

    async def bot_turn(request: RecordedRequest) -> web.Response:
        await rasa_answers.wait()
        return web.json_response([{"recipient_id": request.json["sender"],
                                   "text": "Your order A1001 is on its way."}])

    async def send(request: RecordedRequest) -> web.Response:
        return web.json_response(sent_message(request, 1))

    rasa.answer("POST", RASA_PATH, bot_turn)
    telegram.answer("POST", f"{API}/sendMessage", send)
    env = {**os.environ, "VAR_DIR": str(tmp_path), "GATEWAY_HOST": "127.0.0.1",
           "GATEWAY_PORT": str(free_port()), "RASA_URL": rasa.url, "REDIS_URL": "",
           "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_SECRET_TOKEN": SECRET,
           "TELEGRAM_API_BASE_URL": telegram.url}
    update = message_update(7001, text="where is my order A1001?")
    try:
        async with gateway(env, tmp_path / "first.log", stop) as url:
            async with aiohttp.ClientSession() as session, session.post(
                    f"{url}/webhooks/telegram", data=json.dumps(update),
                    headers={SECRET_HEADER: SECRET, "Content-Type": "application/json"}) as ack:
                assert ack.status == 200
            await eventually(lambda: rasa.calls(RASA_PATH))  # the turn is under way
        assert telegram.calls(f"{API}/sendMessage") == [], "killed before answering"

        rasa_answers.set()
        async with gateway(env, tmp_path / "second.log"):
            await eventually(lambda: telegram.calls(f"{API}/sendMessage"))
            sent = telegram.calls(f"{API}/sendMessage")
            assert [(r.form["chat_id"][0], r.form["text"][0]) for r in sent] == [
                (str(CHAT_ID), "Your order A1001 is on its way.")]
            # the bot was asked the customer's words again, as sent
            assert rasa.calls(RASA_PATH)[-1].json["message"] == "where is my order A1001?"
    finally:
        await rasa.stop()
        await telegram.stop()

