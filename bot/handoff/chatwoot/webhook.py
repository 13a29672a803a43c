"""Chatwoot's webhooks at POST /webhooks/chatwoot (the API inbox's webhook URL, or an
account webhook): an agent's reply reaches the customer on their channel, a resolved
conversation goes back to the bot with the CSAT question, a reopened one back to the
agents. Private notes, the customer's own messages and other inboxes' conversations
are ignored.

Signed as Chatwoot's lib/webhooks/trigger.rb (`request_headers`) signs them:
X-Chatwoot-Signature is "sha256=" and the hex HMAC-SHA256, keyed with the secret, of
"{X-Chatwoot-Timestamp}.{raw body}"; X-Chatwoot-Delivery names the delivery. A
missing or wrong signature, or a timestamp more than TIMESTAMP_SKEW_SECONDS away, is
refused with 401 and logged without any of the body."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any, Dict, List, Optional, Tuple

from aiohttp import web

from bot.handoff.chatwoot.links import ChatwootLinks
from bot.handoff.desk import HandoffDesk
from bot.handoff.store import OPEN, Handoff, HandoffConflict

log = logging.getLogger("bot.handoff.chatwoot")
SIGNATURE = "X-Chatwoot-Signature"
TIMESTAMP = "X-Chatwoot-Timestamp"
TIMESTAMP_SKEW_SECONDS = 300
MAX_BODY = 256 * 1024


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signed(secret: str, headers: Any, body: bytes, now: float) -> bool:
    timestamp, given = headers.get(TIMESTAMP, ""), headers.get(SIGNATURE, "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > TIMESTAMP_SKEW_SECONDS:
        return False
    return hmac.compare_digest(given.encode(), signature(secret, timestamp, body).encode())


class Malformed(ValueError):
    pass


class ChatwootWebhook:
    def __init__(self, desk: HandoffDesk, links: ChatwootLinks, secret: str,
                 resolved_disposition: str) -> None:
        self.desk = desk
        self.links = links
        self.secret = secret
        self.resolved_disposition = resolved_disposition

    def install(self, app: web.Application) -> None:
        app.router.add_post("/webhooks/chatwoot", self.receive)

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(MAX_BODY, len(body))
        if not signed(self.secret, request.headers, body, time.time()):
            log.warning("refused a Chatwoot webhook: signature missing, wrong or stale")
            raise web.HTTPUnauthorized(text="signature missing, wrong or stale")
        try:
            event = _event(body)
            await self.handle(event)
        except Malformed as error:
            log.warning("refused a Chatwoot webhook: %s", error)
            raise web.HTTPBadRequest(text=str(error)) from error
        return web.json_response({"ok": True})

    async def handle(self, event: Dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "message_created" and _agent_reply(event):
            await self._reply(event)
        elif kind == "conversation_status_changed":
            await self._status(event)
        elif kind == "conversation_updated" and _assigned_to(event) is not None:
            await self._assigned(event)

    async def _reply(self, event: Dict[str, Any]) -> None:
        handoff = await self._handoff(_number(event.get("conversation", {}), "id"))
        message_id = _number(event, "id")
        content = event.get("content")
        text = content.strip() if isinstance(content, str) else ""
        images, files = _attachments(event.get("attachments"))
        text = "\n".join([text, *files]).strip()
        if handoff is None or not (text or images):
            return
        if not await self.desk.records.write(self.links.first_delivery, message_id,
                                             time.time()):
            return  # a retried delivery: sent already
        actor = _actor(event.get("sender"))
        try:
            deliveries = await self.desk.helpdesk_reply(handoff, actor, text, images)
        except Exception:
            # not sent: Chatwoot's retry of this delivery may send it
            await self.desk.records.write(self.links.forget_delivery, message_id)
            raise
        log.info("H-%s: Chatwoot agent reply sent (%s)", handoff["id"],
                 ", ".join(d.status for d in deliveries))

    async def _status(self, event: Dict[str, Any]) -> None:
        handoff = await self._handoff(_number(event, "id"))
        status = event.get("status")
        if handoff is None:
            return
        actor = _actor((event.get("meta") or {}).get("assignee"))
        try:
            if status == "resolved" and handoff["status"] in OPEN:
                await self.desk.helpdesk_resolve(handoff, actor, self.resolved_disposition)
                log.info("H-%s resolved in Chatwoot: back to the bot", handoff["id"])
            elif status == "open" and handoff["status"] == "resolved":
                await self.desk.helpdesk_reopen(handoff, actor)
                log.info("H-%s reopened in Chatwoot: with people again", handoff["id"])
        except HandoffConflict as error:  # changed meanwhile, or a newer handoff is open
            log.info("H-%s: Chatwoot status %s not applied (%s)", handoff["id"], status, error)

    async def _assigned(self, event: Dict[str, Any]) -> None:
        """Assigned to an agent in Chatwoot: the waiting handoff is theirs (its claim
        time, in the KPIs, is when it was assigned, not when they first replied)."""
        handoff = await self._handoff(_number(event, "id"))
        if handoff is not None and handoff["status"] == "waiting":
            await self.desk.helpdesk_claim(handoff, f"chatwoot:{_assigned_to(event)}")
            log.info("H-%s assigned in Chatwoot: claimed", handoff["id"])

    async def _handoff(self, conversation_id: int) -> Optional[Handoff]:
        records = self.desk.records
        handoff_id = await records.read(self.links.handoff_of, conversation_id)
        if handoff_id is None:
            return None  # another inbox's conversation, or not ours
        return await records.read(self.desk.store.get, handoff_id)


def _event(body: bytes) -> Dict[str, Any]:
    try:
        event = json.loads(body)
    except ValueError as error:
        raise Malformed("the body is not JSON") from error
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise Malformed("the body is not an event")
    return event


def _number(part: Any, key: str) -> int:
    """A Chatwoot id: a positive number a database's 64-bit column holds."""
    value = part.get(key) if isinstance(part, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise Malformed(f"'{key}' is not an id")
    return value


def _attachments(attachments: Any) -> Tuple[List[str], List[str]]:
    """What an agent attached: images (sent as images on the customer's channel) and
    other files (their links, in the text): each by its `data_url`."""
    images: List[str] = []
    files: List[str] = []
    for attachment in attachments if isinstance(attachments, list) else []:
        url = attachment.get("data_url") if isinstance(attachment, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            continue
        (images if attachment.get("file_type") == "image" else files).append(url)
    return images, files


def _assigned_to(event: Dict[str, Any]) -> Optional[int]:
    """The agent a conversation_updated event says it was assigned to, if that is what
    changed (`changed_attributes`, as Chatwoot's webhook listener sends them)."""
    for change in event.get("changed_attributes") or []:
        assignee = change.get("assignee_id") if isinstance(change, dict) else None
        current = assignee.get("current_value") if isinstance(assignee, dict) else None
        if isinstance(current, int) and not isinstance(current, bool) and current > 0:
            return current
    return None


def _agent_reply(event: Dict[str, Any]) -> bool:
    """What the customer should receive: an outgoing message that is not a private
    note (incoming ones are the customer's, mirrored by the gateway)."""
    return event.get("message_type") == "outgoing" and event.get("private") is False


def _actor(sender: Any) -> str:
    """How the audit trail names a Chatwoot agent: by id, not by name."""
    agent = sender.get("id") if isinstance(sender, dict) else None
    return f"chatwoot:{agent}" if isinstance(agent, int) else "chatwoot"
