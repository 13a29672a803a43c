"""A local server that answers as Chatwoot's Application API documents
(https://developers.chatwoot.com/api-reference; swagger/ in chatwoot/chatwoot) for the
routes the handoff uses, and sends webhooks as Chatwoot does: every message created
(the API's own included) and every status change, signed as lib/webhooks/trigger.rb
signs them, to the API inbox's webhook URL. Tests act as agents with `agent_reply`
and `set_status`, take Chatwoot down with `down` and fail calls with `fail_next`."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import aiohttp
from aiohttp import web

from tests.provider_api import free_port

TOKEN = "chatwoot-api-token-for-tests"
SECRET = "chatwoot-webhook-secret-for-tests"
ACCOUNT_ID = 5
INBOX_ID = 9
# ids unique across servers, as one Chatwoot's are: a test database outlives a server
IDS = itertools.count(int(time.time() * 1000) % 10**9)
AGENT = {"id": 21, "name": "Maya Agent", "email": "maya@store.example", "type": "user"}
TEAMS = {1: "delivery", 2: "returns", 3: "payments", 4: "care"}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


@dataclass
class Conversation:
    id: int
    contact_id: int
    source_id: str
    additional_attributes: Dict[str, Any]
    status: str = "open"
    team_id: Optional[int] = None
    assignee_id: Optional[int] = None
    messages: List[Dict[str, Any]] = field(default_factory=list)

    def notes(self) -> List[str]:
        return [m["content"] for m in self.messages if m["private"]]

    def incoming(self) -> List[str]:
        return [m["content"] for m in self.messages if m["message_type"] == "incoming"]


@dataclass
class ChatwootServer:
    """Start with `await server.start()`; point it at the gateway with `webhook_url`."""

    webhook_url: str = ""
    url: str = ""
    contacts: Dict[int, Dict[str, Any]] = field(default_factory=dict)
    contact_inboxes: Set[tuple] = field(default_factory=set)
    conversations: Dict[int, Conversation] = field(default_factory=dict)
    # the gateway's answers to the webhooks sent: (event, HTTP status)
    deliveries: List[tuple] = field(default_factory=list)
    is_down: bool = False
    # path endings and how many of their next calls fail with 500
    failures: Dict[str, int] = field(default_factory=dict)
    # (method, path ending) and how many of their next calls are done but answered 504
    lost_answers: Dict[tuple, int] = field(default_factory=dict)
    _runner: Optional[web.AppRunner] = None
    _session: Optional[aiohttp.ClientSession] = None
    _background: Set[asyncio.Task] = field(default_factory=set)

    async def start(self) -> ChatwootServer:
        app = web.Application(middlewares=[self._auth])
        base = f"/api/v1/accounts/{ACCOUNT_ID}"
        app.router.add_get(f"{base}/contacts/search", self._search_contacts)
        app.router.add_post(f"{base}/contacts", self._create_contact)
        app.router.add_post(f"{base}/contacts/{{id}}/contact_inboxes", self._contact_inbox)
        app.router.add_get(f"{base}/contacts/{{id}}/conversations", self._contact_conversations)
        app.router.add_post(f"{base}/conversations", self._create_conversation)
        app.router.add_post(f"{base}/conversations/{{id}}/messages", self._create_message)
        app.router.add_get(f"{base}/conversations/{{id}}/messages", self._list_messages)
        app.router.add_post(f"{base}/conversations/{{id}}/assignments", self._assign)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
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
        """Every API call answered 503, as a Chatwoot behind its proxy while it restarts."""
        self.is_down = is_down

    def fail_next(self, path_ending: str, times: int = 1) -> None:
        """The next calls to paths ending so fail with 500, as an overloaded Chatwoot."""
        self.failures[path_ending] = times

    def lose_next_answer(self, method: str, path_ending: str, times: int = 1) -> None:
        """The next such calls are done, but answered 504, as by a proxy whose wait for
        Chatwoot ran out: the caller cannot tell whether they were done."""
        self.lost_answers[(method, path_ending)] = times

    def conversation_for(self, reference: str) -> Optional[Conversation]:
        return next((c for c in self.conversations.values()
                     if c.additional_attributes.get("handoff_reference") == reference), None)

    # what agents do in Chatwoot

    async def agent_reply(self, conversation_id: int, text: str, private: bool = False,
                          agent: Optional[Dict[str, Any]] = None,
                          files: Sequence[Tuple[str, str]] = ()) -> int:
        """An agent writes (a reply, or a private note), attaching `files` (file type
        and name, as an upload); the webhook's answer status."""
        message = self._add_message(self.conversations[conversation_id], text, "outgoing",
                                    private, agent or AGENT)
        if files:  # Attachment#push_event_data; data_url an Active Storage blob URL
            message["attachments"] = [{
                "id": next(IDS), "message_id": message["id"], "file_type": kind,
                "account_id": ACCOUNT_ID, "extension": name.rsplit(".", 1)[-1],
                "data_url": f"{self.url}/rails/active_storage/blobs/redirect/{uuid.uuid4()}/{name}",
                "thumb_url": "", "file_size": 1024} for kind, name in files]
        return await self.send_webhook(self._message_event(message))

    async def assign(self, conversation_id: int, agent_id: int) -> int:
        """An agent (or an admin) assigns the conversation to agent_id."""
        conversation = self.conversations[conversation_id]
        previous, conversation.assignee_id = conversation.assignee_id, agent_id
        return await self.send_webhook({
            **self._conversation_data(conversation), "event": "conversation_updated",
            "changed_attributes": [{"assignee_id": {"previous_value": previous,
                                                    "current_value": agent_id}}]})

    async def set_status(self, conversation_id: int, status: str) -> int:
        conversation = self.conversations[conversation_id]
        previous, conversation.status = conversation.status, status
        return await self.send_webhook({
            **self._conversation_data(conversation), "event": "conversation_status_changed",
            "changed_attributes": [{"status": {"previous_value": previous,
                                               "current_value": status}}]})

    async def send_webhook(self, payload: Dict[str, Any], secret: str = SECRET,
                           headers: Optional[Dict[str, str]] = None,
                           body: Optional[bytes] = None) -> int:
        """POST it as Webhooks::Trigger does; the gateway's answer status."""
        assert self._session is not None and self.webhook_url
        raw = body if body is not None else json.dumps(payload).encode()
        timestamp = str(int(time.time()))
        sent = {"Content-Type": "application/json", "Accept": "application/json",
                "X-Chatwoot-Delivery": str(uuid.uuid4()), "X-Chatwoot-Timestamp": timestamp,
                "X-Chatwoot-Signature": sign(secret, timestamp, raw), **(headers or {})}
        async with self._session.post(self.webhook_url, data=raw, headers=sent) as answer:
            self.deliveries.append((payload.get("event"), answer.status))
            return answer.status

    # the API

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.is_down:
            return web.json_response({"error": "service unavailable"}, status=503)
        if request.headers.get("api_access_token") != TOKEN:
            return web.json_response({"error": "Invalid Access Token"}, status=401)
        ending = next((e for e, n in self.failures.items()
                       if n and request.path.endswith(e)), None)
        if ending is not None:
            self.failures[ending] -= 1
            return web.json_response({"error": "Internal Server Error"}, status=500)
        answer = await handler(request)
        lost = next((key for key, n in self.lost_answers.items() if n and key[0] ==
                     request.method and request.path.endswith(key[1])), None)
        if lost is not None:
            self.lost_answers[lost] -= 1
            return web.Response(text="Gateway Timeout", status=504)
        return answer

    async def _search_contacts(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "")
        found = [c for c in self.contacts.values()
                 if query and any(query in str(c.get(k) or "")
                                  for k in ("name", "identifier", "email", "phone_number"))]
        return web.json_response({"meta": {"count": len(found), "current_page": 1},
                                  "payload": found})

    async def _create_contact(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("inbox_id") != INBOX_ID:
            return web.json_response({"message": "Inbox not found"}, status=404)
        identifier = body.get("identifier")
        if identifier and any(c["identifier"] == identifier for c in self.contacts.values()):
            return web.json_response({"message": "Identifier has already been taken"},
                                     status=422)
        contact = {"id": next(IDS), "name": body.get("name") or "",
                   "email": body.get("email"), "phone_number": body.get("phone_number"),
                   "identifier": identifier, "thumbnail": "", "additional_attributes": {},
                   "custom_attributes": {}, "availability_status": "offline"}
        self.contacts[contact["id"]] = contact
        source_id = str(uuid.uuid4())
        self.contact_inboxes.add((contact["id"], INBOX_ID, source_id))
        return web.json_response({"payload": {"contact": contact, "contact_inbox": {
            "inbox": self._inbox(), "source_id": source_id}}})

    async def _contact_inbox(self, request: web.Request) -> web.Response:
        contact_id = int(request.match_info["id"])
        body = await request.json()
        if contact_id not in self.contacts or body.get("inbox_id") != INBOX_ID:
            return web.json_response({"error": "Resource could not be found"}, status=404)
        source_id = body.get("source_id") or str(uuid.uuid4())
        self.contact_inboxes.add((contact_id, INBOX_ID, source_id))
        return web.json_response({"source_id": source_id, "inbox": self._inbox()})

    async def _contact_conversations(self, request: web.Request) -> web.Response:
        """ContactsController#conversations: the contact's conversations, newest first."""
        contact_id = int(request.match_info["id"])
        if contact_id not in self.contacts:
            return web.json_response({"error": "Resource could not be found"}, status=404)
        found = [self._conversation_data(c) for c in self.conversations.values()
                 if c.contact_id == contact_id]
        return web.json_response({"payload": found[::-1]})

    async def _create_conversation(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = (body.get("contact_id"), body.get("inbox_id"), body.get("source_id"))
        if key not in self.contact_inboxes:
            return web.json_response({"error": "Resource could not be found"}, status=404)
        conversation = Conversation(next(IDS), body["contact_id"], body["source_id"],
                                    body.get("additional_attributes") or {},
                                    body.get("status") or "open")
        self.conversations[conversation.id] = conversation
        self._in_background({**self._conversation_data(conversation),
                             "event": "conversation_created"})
        return web.json_response({"id": conversation.id, "account_id": ACCOUNT_ID,
                                  "inbox_id": INBOX_ID})

    async def _create_message(self, request: web.Request) -> web.Response:
        conversation = self.conversations.get(int(request.match_info["id"]))
        if conversation is None:
            return web.json_response({"error": "Resource could not be found"}, status=404)
        body = await request.json()
        kind = body.get("message_type") or "outgoing"
        sender = self.contacts[conversation.contact_id] if kind == "incoming" else {
            "id": 1, "name": "Gateway integration", "email": "", "type": "user"}
        message = self._add_message(conversation, str(body.get("content")), kind,
                                    bool(body.get("private")), sender)
        if kind == "incoming" and conversation.status == "resolved":
            conversation.status = "open"  # Message#reopen_conversation
        self._in_background(self._message_event(message))
        return web.json_response({**message, "message_type": 0 if kind == "incoming" else 1,
                                  "conversation_id": conversation.id})

    async def _list_messages(self, request: web.Request) -> web.Response:
        """MessagesController#index: the conversation's messages, oldest first, with
        message_type as the number Chatwoot's API gives (0 incoming, 1 outgoing)."""
        conversation = self.conversations.get(int(request.match_info["id"]))
        if conversation is None:
            return web.json_response({"error": "Resource could not be found"}, status=404)
        return web.json_response({"meta": {"contact": {}, "assignee": AGENT}, "payload": [
            {**m, "message_type": 0 if m["message_type"] == "incoming" else 1,
             "conversation_id": conversation.id} for m in conversation.messages]})

    async def _assign(self, request: web.Request) -> web.Response:
        conversation = self.conversations.get(int(request.match_info["id"]))
        body = await request.json()
        if conversation is None:
            return web.json_response({"error": "Resource could not be found"}, status=404)
        conversation.team_id = body.get("team_id")
        return web.json_response({"id": conversation.team_id,
                                  "name": TEAMS.get(conversation.team_id or 0, "")})

    # shapes (Message#webhook_data, Conversation#webhook_data)

    def _add_message(self, conversation: Conversation, content: str, kind: str,
                     private: bool, sender: Dict[str, Any]) -> Dict[str, Any]:
        message = {"id": next(IDS), "content": content, "message_type": kind,
                   "private": private, "content_type": "text", "content_attributes": {},
                   "source_id": None, "sender": sender,
                   "created_at": datetime.now(timezone.utc).isoformat(),
                   "conversation": conversation.id}
        conversation.messages.append(message)
        return message

    def _message_event(self, message: Dict[str, Any]) -> Dict[str, Any]:
        conversation = self.conversations[message["conversation"]]
        return {**message, "event": "message_created", "additional_attributes": {},
                "inbox": self._inbox(), "account": {"id": ACCOUNT_ID, "name": "Store"},
                "conversation": self._conversation_data(conversation)}

    def _conversation_data(self, conversation: Conversation) -> Dict[str, Any]:
        contact = self.contacts[conversation.contact_id]
        team = ({"id": conversation.team_id, "name": TEAMS.get(conversation.team_id, "")}
                if conversation.team_id else None)
        return {"id": conversation.id, "account_id": ACCOUNT_ID, "inbox_id": INBOX_ID,
                "status": conversation.status, "channel": "Channel::Api",
                "additional_attributes": conversation.additional_attributes,
                "custom_attributes": {}, "labels": [], "priority": None,
                "contact_inbox": {"source_id": conversation.source_id},
                "meta": {"sender": {**contact, "type": "contact"}, "assignee": AGENT,
                         "team": team, "hmac_verified": False},
                "timestamp": int(time.time()), "unread_count": 0}

    def _inbox(self) -> Dict[str, Any]:
        return {"id": INBOX_ID, "name": "Store support (API)"}

    def _in_background(self, payload: Dict[str, Any]) -> None:
        """Chatwoot queues webhooks (Sidekiq) and answers the API call at once."""
        if not self.webhook_url:
            return
        task = asyncio.get_running_loop().create_task(self.send_webhook(payload))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
