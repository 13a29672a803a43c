"""Sunshine Conversations' webhooks at POST /webhooks/zendesk: the gateway's custom
integration in the SunCo app (Admin Center > Apps and integrations > Conversations
integrations), subscribed to `conversation:message` and the switchboard events.

SunCo authenticates its webhooks by sending the integration webhook's secret in the
`X-API-Key` header; the gateway compares it with ZENDESK_SUNCO_WEBHOOK_SECRET in
constant time. A missing or wrong secret is refused with 401, a body that is not
SunCo's envelope (`{"app": {"id"}, "webhook": {...}, "events": [{"id", "type",
"payload"}, ...]}`) with 400, both logged without the body. Accepted webhooks are
answered at once and their events handled afterwards (target.py), each once: SunCo
delivers again what was not answered in time."""
from __future__ import annotations

import hmac
import json
import logging
from typing import Any, Dict, List

from aiohttp import web

from bot.handoff.zendesk.target import ZendeskTarget

log = logging.getLogger("bot.handoff.zendesk")
SECRET_HEADER = "X-API-Key"
MAX_BODY = 512 * 1024


class Malformed(ValueError):
    pass


class ZendeskWebhook:
    def __init__(self, target: ZendeskTarget, secret: str, app_id: str) -> None:
        self.target = target
        self.secret = secret.encode()
        self.app_id = app_id

    def install(self, app: web.Application) -> None:
        app.router.add_post("/webhooks/zendesk", self.receive)
        app.router.add_route("HEAD", "/webhooks/zendesk", self.check)

    async def check(self, request: web.Request) -> web.Response:
        """SunCo checks a webhook's URL with a HEAD request when it is created."""
        return web.Response()

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(MAX_BODY, len(body))
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self.secret):
            log.warning("refused a Sunshine Conversations webhook: %s missing or wrong",
                        SECRET_HEADER)
            raise web.HTTPUnauthorized(text=f"{SECRET_HEADER} missing or wrong")
        try:
            app_id, events = parse(body)
        except Malformed as error:
            log.warning("refused a Sunshine Conversations webhook: %s", error)
            raise web.HTTPBadRequest(text=str(error)) from error
        if app_id != self.app_id:
            log.warning("a Sunshine Conversations webhook of another app was ignored")
        elif events:
            self.target.notify(events)
        return web.json_response({"ok": True})


def parse(body: bytes) -> tuple[str, List[Dict[str, Any]]]:
    """The app's id and the events, or Malformed saying what is wrong (not what was
    sent)."""
    try:
        envelope = json.loads(body)
    except ValueError as error:
        raise Malformed("the body is not JSON") from error
    if not isinstance(envelope, dict):
        raise Malformed("the body is not a JSON object")
    app = envelope.get("app")
    if not isinstance(app, dict) or not isinstance(app.get("id"), str):
        raise Malformed("'app.id' is missing")
    events = envelope.get("events")
    if not isinstance(events, list):
        raise Malformed("'events' is not a list")
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("id"), str) \
                or not event["id"] or len(event["id"]) > 64:
            raise Malformed("an event has no id")
        if not isinstance(event.get("type"), str):
            raise Malformed("an event has no type")
        if not isinstance(event.get("payload"), dict):
            raise Malformed("an event has no payload")
    return str(app["id"]), events
