"""A local server that answers as Freshdesk's API v2 documents
(https://developers.freshdesk.com/api/) for the routes the handoff uses: HTTP Basic
with an API key and "X" (else 401 `invalid_credentials`), tickets created with their
requester found or made as a contact, notes, the ticket and its conversations;
validation errors as 400 `{"description": "Validation failed", "errors": [...]}`.

Freshdesk's automation rules (Ticket updates) are configured with `RULES`, the webhook
bodies docs/helpdesks.md tells admins to write, sent to `webhook_url` with the
`X-Bot-Webhook-Secret` header: "Reply is sent", "Note is added" (every note, the
gateway's own included) and "Status is changed". Tests act as agents with
`agent_reply`, `private_note`, `set_status`; take Freshdesk down with `down` (503),
`unreachable` (connection refused) or `throttle` (429 with Retry-After)."""
from __future__ import annotations

import asyncio
import base64
import html
import itertools
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Set, Tuple

import aiohttp
from aiohttp import web

from tests.provider_api import free_port

API_KEY = "freshdesk-api-key-for-tests"
SECRET = "freshdesk-webhook-secret-for-tests"
SECRET_HEADER = "X-Bot-Webhook-Secret"
# ids unique across servers, as one Freshdesk's are: a test database outlives a server
IDS = itertools.count(int(time.time() * 1000) % 10**9)
AGENT_ID = 43000512
GROUPS = {1: "Delivery", 2: "Returns", 3: "Payments", 4: "Care"}
STATUSES = {2: "Open", 3: "Pending", 4: "Resolved", 5: "Closed"}
# the automation rules' webhook bodies, as docs/helpdesks.md gives them
RULES = {
    "reply": '{"ticket_id": {{ticket.id}}, "event": "reply"}',
    "note": '{"ticket_id": {{ticket.id}}, "event": "note"}',
    "status": '{"ticket_id": {{ticket.id}}, "event": "status"}',
}
TICKET_FIELDS = {"name", "requester_id", "email", "facebook_id", "phone", "twitter_id",
                 "unique_external_id", "subject", "type", "status", "priority",
                 "description", "responder_id", "attachments", "cc_emails", "custom_fields",
                 "due_by", "email_config_id", "fr_due_by", "group_id", "parent_id",
                 "product_id", "source", "tags", "company_id", "internal_agent_id",
                 "internal_group_id", "lookup_parameter"}
NOTE_FIELDS = {"body", "attachments", "incoming", "notify_emails", "private", "user_id"}
REQUESTER_FIELDS = ("requester_id", "email", "phone", "twitter_id", "facebook_id",
                    "unique_external_id")


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Invalid(Exception):
    def __init__(self, *errors: Tuple[str, str, str]) -> None:
        super().__init__("validation failed")
        self.errors = errors


@dataclass
class Ticket:
    id: int
    requester_id: int
    fields: Dict[str, Any]
    conversations: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int(self.fields["status"])

    def notes(self, private: bool) -> List[str]:
        return [c["body"] for c in self.conversations
                if c["source"] == 2 and c["private"] is private]

    def incoming(self) -> List[str]:
        return [c["body"] for c in self.conversations if c["incoming"]]


@dataclass
class FreshdeskServer:
    """Start with `await server.start()`; point it at the gateway with `webhook_url`."""

    webhook_url: str = ""
    url: str = ""
    secret: str = SECRET
    contacts: Dict[int, Dict[str, Any]] = field(default_factory=dict)
    tickets: Dict[int, Ticket] = field(default_factory=dict)
    # every API call: (method, path, HTTP status answered)
    calls: List[Tuple[str, str, int]] = field(default_factory=list)
    # the gateway's answers to the webhooks sent: (event, HTTP status)
    deliveries: List[Tuple[str, int]] = field(default_factory=list)
    is_down: bool = False
    throttled: int = 0  # how many next calls get 429
    retry_after: int = 0
    _port: int = 0
    _runner: Optional[web.AppRunner] = None
    _session: Optional[aiohttp.ClientSession] = None
    _background: Set[asyncio.Task] = field(default_factory=set)

    async def start(self) -> FreshdeskServer:
        self._port = free_port()
        await self.reachable()
        self.url = f"http://127.0.0.1:{self._port}"
        self._session = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        for task in list(self._background):
            await task
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def down(self, is_down: bool = True) -> None:
        """Every API call answered 503, as during Freshdesk's maintenance."""
        self.is_down = is_down

    def throttle(self, retry_after: int, times: int = 1) -> None:
        """The next `times` calls answered 429 with Retry-After, as over the plan's limit."""
        self.throttled, self.retry_after = times, retry_after

    async def unreachable(self) -> None:
        """Nothing listens on the port and open connections are closed: connections
        are refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def reachable(self) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/api/v2/tickets", self._create_ticket)
        app.router.add_get("/api/v2/tickets/{id}", self._ticket)
        app.router.add_post("/api/v2/tickets/{id}/notes", self._create_note)
        app.router.add_get("/api/v2/tickets/{id}/conversations", self._conversations)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self._port).start()

    def ticket_for(self, reference: str) -> Optional[Ticket]:
        """The ticket whose subject names the handoff (H-12)."""
        return next((t for t in self.tickets.values()
                     if f"({reference}," in t.fields["subject"]), None)

    # what agents do in Freshdesk

    async def agent_reply(self, ticket_id: int, text: str) -> int:
        """An agent replies to the requester; the webhook's answer status."""
        ticket = self.tickets[ticket_id]
        self._add(ticket, f"<div>{text}</div>", source=0, private=False, incoming=False,
                  user_id=AGENT_ID)
        ticket.fields["responder_id"] = AGENT_ID
        return await self.fire("reply", ticket)

    async def private_note(self, ticket_id: int, text: str) -> int:
        ticket = self.tickets[ticket_id]
        self._add(ticket, f"<div>{text}</div>", source=2, private=True, incoming=False,
                  user_id=AGENT_ID)
        return await self.fire("note", ticket)

    async def set_status(self, ticket_id: int, status: int) -> int:
        """Resolve (4), close (5), reopen (2) or set pending (3)."""
        ticket = self.tickets[ticket_id]
        ticket.fields["status"] = status
        ticket.fields["responder_id"] = AGENT_ID
        return await self.fire("status", ticket)

    async def fire(self, rule: str, ticket: Ticket) -> int:
        """The automation rule's "Trigger webhook" action; the gateway's answer status."""
        body = RULES[rule].replace("{{ticket.id}}", str(ticket.id))
        return await self.send_webhook(body.encode(), rule)

    async def send_webhook(self, body: bytes, rule: str = "",
                           headers: Optional[Dict[str, str]] = None) -> int:
        assert self._session is not None and self.webhook_url
        sent = {"Content-Type": "application/json", **(
            headers if headers is not None else {SECRET_HEADER: self.secret})}
        async with self._session.post(self.webhook_url, data=body, headers=sent) as answer:
            self.deliveries.append((rule, answer.status))
            return answer.status

    # the API

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response = await self._answer(request, handler)
        self.calls.append((request.method, request.path, response.status))
        return response

    async def _answer(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.is_down:
            return web.Response(status=503, text="Service Unavailable")
        expected = "Basic " + base64.b64encode(f"{API_KEY}:X".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"code": "invalid_credentials",
                                      "message": "You have to be logged in to perform "
                                                 "this action."}, status=401)
        if self.throttled:
            self.throttled -= 1
            return web.json_response(
                {"message": "You have exceeded the limit of requests per minute"},
                status=429, headers={"Retry-After": str(self.retry_after)})
        try:
            return await handler(request)
        except Invalid as invalid:
            return web.json_response({"description": "Validation failed", "errors": [
                {"field": f, "message": m, "code": c} for f, m, c in invalid.errors]},
                status=400)

    async def _body(self, request: web.Request, allowed: Set[str]) -> Dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as error:
            raise Invalid(("", "Request body has invalid json format",
                           "invalid_json")) from error
        if not isinstance(body, dict):
            raise Invalid(("", "Request body has invalid json format", "invalid_json"))
        unexpected = [k for k in body if k not in allowed]
        if unexpected:
            raise Invalid(*[(k, "Unexpected/invalid field in request", "invalid_field")
                            for k in unexpected])
        return body

    async def _create_ticket(self, request: web.Request) -> web.Response:
        body = await self._body(request, TICKET_FIELDS)
        errors: List[Tuple[str, str, str]] = []
        if not any(body.get(k) for k in REQUESTER_FIELDS):
            errors.append(("requester_id", "Please fill at least 1 of requester_id, phone, "
                           "email, twitter_id, facebook_id, unique_external_id fields",
                           "missing_field"))
        if body.get("phone") and not body.get("name"):
            errors.append(("name", "It should be a/an String", "missing_field"))
        for key in ("subject", "description"):
            if not isinstance(body.get(key), str) or not body[key].strip():
                errors.append((key, "It should be a/an String", "missing_field"))
        for key, allowed in (("status", STATUSES), ("priority", (1, 2, 3, 4)),
                             ("source", (1, 2, 3, 7, 9, 10))):
            if key in body and body[key] not in allowed:
                errors.append((key, f"It should be one of these values: "
                               f"'{','.join(map(str, allowed))}'", "invalid_value"))
        if "group_id" in body and body["group_id"] not in GROUPS:
            errors.append(("group_id", "There is no group matching the given group_id",
                           "invalid_value"))
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and t and len(t) <= 32
                                                 for t in tags):
            errors.append(("tags", "It should be an Array of Strings", "datatype_mismatch"))
        if errors:
            raise Invalid(*errors)
        requester = self._requester(body)
        ticket_id = next(IDS)
        fields = {"status": 2, "priority": 1, "source": 2, "group_id": None,
                  "responder_id": None, "tags": [], "type": None, "custom_fields": {},
                  **{k: v for k, v in body.items() if k not in REQUESTER_FIELDS + ("name",)}}
        ticket = Ticket(ticket_id, requester, fields)
        self.tickets[ticket_id] = ticket
        return web.json_response(self._ticket_data(ticket), status=201)

    def _requester(self, body: Dict[str, Any]) -> int:
        """Freshdesk's contact for the ticket: found by the field given, else made."""
        for key in ("email", "phone", "unique_external_id"):
            value = body.get(key)
            if value:
                found = next((c["id"] for c in self.contacts.values() if c.get(key) == value),
                             None)
                if found is not None:
                    return found
                contact = {"id": next(IDS), "name": body.get("name") or str(value),
                           "email": None, "phone": None, "unique_external_id": None,
                           key: value}
                self.contacts[contact["id"]] = contact
                return int(contact["id"])
        requester_id = body.get("requester_id")
        if requester_id not in self.contacts:
            raise Invalid(("requester_id", "There is no contact matching the given "
                           "requester_id", "invalid_value"))
        return int(requester_id)

    async def _ticket(self, request: web.Request) -> web.Response:
        ticket = self.tickets.get(int(request.match_info["id"]))
        if ticket is None:
            return web.Response(status=404)
        return web.json_response(self._ticket_data(ticket))

    async def _create_note(self, request: web.Request) -> web.Response:
        ticket = self.tickets.get(int(request.match_info["id"]))
        if ticket is None:
            return web.Response(status=404)
        body = await self._body(request, NOTE_FIELDS)
        if not isinstance(body.get("body"), str) or not body["body"].strip():
            raise Invalid(("body", "It should be a/an String", "missing_field"))
        for key in ("private", "incoming"):
            if key in body and not isinstance(body[key], bool):
                raise Invalid((key, "It should be a/an Boolean", "datatype_mismatch"))
        user_id = body.get("user_id", AGENT_ID)
        if user_id != AGENT_ID and user_id not in self.contacts:
            raise Invalid(("user_id", "There is no contact matching the given user_id",
                           "invalid_value"))
        note = self._add(ticket, body["body"], source=2, private=body.get("private", True),
                         incoming=body.get("incoming", False), user_id=user_id)
        self._in_background("note", ticket)
        return web.json_response(note, status=201)

    async def _conversations(self, request: web.Request) -> web.Response:
        ticket = self.tickets.get(int(request.match_info["id"]))
        if ticket is None:
            return web.Response(status=404)
        page = int(request.query.get("page", "1"))
        per_page = min(int(request.query.get("per_page", "30")), 100)
        return web.json_response(ticket.conversations[(page - 1) * per_page:page * per_page])

    # shapes

    def _add(self, ticket: Ticket, body: str, source: int, private: bool, incoming: bool,
             user_id: int) -> Dict[str, Any]:
        text = html.unescape(re.sub(r"<[^>]*>", "", body.replace("<br>", "\n")))
        conversation = {"id": next(IDS), "body": body, "body_text": text,
                        "incoming": incoming, "private": private, "user_id": user_id,
                        "support_email": None, "source": source, "category": 2,
                        "ticket_id": ticket.id, "to_emails": [], "from_email": None,
                        "cc_emails": [], "bcc_emails": [], "attachments": [],
                        "created_at": now_iso(), "updated_at": now_iso()}
        ticket.conversations.append(conversation)
        return conversation

    def _ticket_data(self, ticket: Ticket) -> Dict[str, Any]:
        return {"id": ticket.id, "requester_id": ticket.requester_id,
                "cc_emails": [], "fwd_emails": [], "reply_cc_emails": [], "fr_escalated": False,
                "spam": False, "email_config_id": None, "product_id": None,
                "company_id": None, "is_escalated": False, "due_by": now_iso(),
                "fr_due_by": now_iso(), "created_at": now_iso(), "updated_at": now_iso(),
                "description_text": ticket.fields.get("description", ""),
                **ticket.fields}

    def _in_background(self, rule: str, ticket: Ticket) -> None:
        """Automations run after the API call is answered."""
        if not self.webhook_url:
            return
        task = asyncio.get_running_loop().create_task(self.fire(rule, ticket))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
