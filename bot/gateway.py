"""The gateway in front of Rasa (aiohttp). For now it serves a Rasa-compatible REST
channel and the health check; the messaging channels plug in here."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, AsyncIterator, Dict, List

import aiohttp
from aiohttp import web
from sqlalchemy import text

from actions.store.sql import Store, open_store
from bot.settings import Settings, load_settings

log = logging.getLogger("bot.gateway")

SETTINGS = web.AppKey("settings", Settings)
HTTP = web.AppKey("http", aiohttp.ClientSession)
STORE = web.AppKey("store", Store)


class BadRequest(web.HTTPBadRequest):
    def __init__(self, reason: str) -> None:
        super().__init__(text=json.dumps({"error": reason}), content_type="application/json")


async def _resources(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=app[SETTINGS].rasa_timeout_seconds)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        app[HTTP] = session
        app[STORE] = open_store()
        yield
        app[STORE].close()


async def _read_rest_message(request: web.Request) -> Dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as error:
        raise BadRequest("body must be JSON") from error
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    sender, message = body.get("sender"), body.get("message")
    if not isinstance(sender, str) or not sender.strip() or len(sender) > 128:
        raise BadRequest("'sender' must be a non-empty string of at most 128 characters")
    if not isinstance(message, str) or len(message) > 4096:
        raise BadRequest("'message' must be a string of at most 4096 characters")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise BadRequest("'metadata' must be a JSON object")
    return {"sender": sender, "message": message, "metadata": metadata}


async def rest_webhook(request: web.Request) -> web.Response:
    """Rasa's REST channel contract: {sender, message} in, a list of replies out."""
    payload = await _read_rest_message(request)
    url = f"{request.app[SETTINGS].rasa_url}/webhooks/rest/webhook"
    try:
        async with request.app[HTTP].post(url, json=payload) as response:
            if response.status != 200:
                raise aiohttp.ClientResponseError(
                    response.request_info, (), status=response.status
                )
            replies: List[Dict[str, Any]] = await response.json()
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        log.error("rasa did not answer: %s", type(error).__name__)
        return web.json_response(
            {"error": "the assistant is unavailable, please try again shortly"}, status=503
        )
    return web.json_response(replies)


async def _component_up(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
            return response.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


def _store_up(store: Store) -> bool:
    try:
        with store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:  # any driver error means "down" here
        return False


async def health(request: web.Request) -> web.Response:
    settings, session = request.app[SETTINGS], request.app[HTTP]
    rasa_up, actions_up = await asyncio.gather(
        _component_up(session, f"{settings.rasa_url}/"),
        _component_up(session, settings.action_health_url),
    )
    components = {
        "gateway": True,
        "rasa": rasa_up,
        "action_server": actions_up,
        "store": await asyncio.to_thread(_store_up, request.app[STORE]),
    }
    status = 200 if all(components.values()) else 503
    return web.json_response({"status": "ok" if status == 200 else "starting", **components},
                             status=status)


def create_app(settings: Settings | None = None) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[SETTINGS] = settings or load_settings()
    app.cleanup_ctx.append(_resources)
    app.router.add_post("/webhooks/rest/webhook", rest_webhook)
    app.router.add_get("/health", health)
    return app
