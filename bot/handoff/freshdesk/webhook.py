"""Freshdesk's automation webhooks at POST /webhooks/freshdesk. Freshdesk has no signed
webhooks: an automation rule (Admin > Workflows > Automations > Ticket updates) whose
action is "Trigger webhook" sends a body and headers the admin writes. The gateway
asks for a header `X-Bot-Webhook-Secret` holding FRESHDESK_WEBHOOK_SECRET (compared in
constant time) and the body

    {"ticket_id": {{ticket.id}}, "event": "reply"}    (rule: "Reply is sent")
    {"ticket_id": {{ticket.id}}, "event": "status"}   (rule: "Status is changed")

("note" is taken too, and does nothing but catch up). A missing or wrong secret is
refused with 401, a body that is not such an object with 400, both logged without the
body. Accepted webhooks are answered at once; the ticket is read from Freshdesk's API
afterwards (target.py), so what reaches the customer never comes from the webhook."""
from __future__ import annotations

import hmac
import json
import logging
from typing import Any, Tuple

from aiohttp import web

from bot.handoff.freshdesk.target import FreshdeskTarget

log = logging.getLogger("bot.handoff.freshdesk")
SECRET_HEADER = "X-Bot-Webhook-Secret"
EVENTS = ("reply", "note", "status")
MAX_BODY = 64 * 1024


class Malformed(ValueError):
    pass


class FreshdeskWebhook:
    def __init__(self, target: FreshdeskTarget, secret: str) -> None:
        self.target = target
        self.secret = secret.encode()

    def install(self, app: web.Application) -> None:
        app.router.add_post("/webhooks/freshdesk", self.receive)

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(MAX_BODY, len(body))
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self.secret):
            log.warning("refused a Freshdesk webhook: %s missing or wrong", SECRET_HEADER)
            raise web.HTTPUnauthorized(text=f"{SECRET_HEADER} missing or wrong")
        try:
            ticket_id, event = parse(body)
        except Malformed as error:
            log.warning("refused a Freshdesk webhook: %s", error)
            raise web.HTTPBadRequest(text=str(error)) from error
        self.target.notify(ticket_id, event == "status")
        return web.json_response({"ok": True})


def parse(body: bytes) -> Tuple[int, str]:
    """The ticket and the event, or Malformed saying what is wrong (not what was sent)."""
    try:
        event = json.loads(body)
    except ValueError as error:
        raise Malformed("the body is not JSON") from error
    if not isinstance(event, dict):
        raise Malformed("the body is not a JSON object")
    kind = event.get("event")
    if kind not in EVENTS:
        raise Malformed(f"'event' is not one of {', '.join(EVENTS)}")
    return _ticket_id(event.get("ticket_id")), str(kind)


def _ticket_id(value: Any) -> int:
    """{{ticket.id}}: a number, or its digits if the template quoted it."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise Malformed("'ticket_id' is not a ticket id")
    return value
