"""A local server that answers as Sunshine Conversations' API v2 documents
(https://developer.zendesk.com/api-reference/conversations/) for the routes the Zendesk
handoff uses, under /v2/apps/{appId}: HTTP Basic with an app key's id and secret (else
401 `{"errors": [{"code": "unauthorized", "title": ...}]}`), users (409 `conflict`
when the externalId exists), personal conversations, messages, and the switchboard's
passControl, offerControl and releaseControl; errors as SunCo's `{"errors": [...]}`.

Its switchboard has two integrations: the gateway's (`BOT`, the default, active on new
conversations) and Zendesk's Agent Workspace (`AGENT_WORKSPACE`). When control passes
to the Agent Workspace a `Ticket` is made as Zendesk makes it: its messages from the
metadata's `first_message_id` (else the last 10), tags and fields from the
`dataCapture.` keys. Every message and switchboard change is sent to `webhook_url` as
SunCo's v2 webhook (`{"app", "webhook", "events"}`) with the `X-API-Key` header.

Tests act as the Agent Workspace with `agent_reply`, `solve` (control released to the
bot) and `reopen` (control passed back); send a delivery again with `redeliver`; take
SunCo down with `down` (503), `unreachable` (connection refused) or `throttle` (429
with Retry-After)."""
from __future__ import annotations

import asyncio
import base64
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Set, Tuple

import aiohttp
from aiohttp import web

from tests.provider_api import free_port

APP_ID = "5f1a2b3c4d5e6f7a8b9c0d1e"
KEY_ID = "app_5f1a2b3c4d5e6f7a8b9c0d1f"
KEY_SECRET = "sunco-key-secret-for-tests"
SECRET = "sunco-webhook-secret-for-tests"
SECRET_HEADER = "X-API-Key"
WEBHOOK_ID = "5f1a2b3c4d5e6f7a8b9c0d20"
BOT = {"id": "5f1a2b3c4d5e6f7a8b9c0d21", "name": "store-support-bot",
       "integrationId": "5f1a2b3c4d5e6f7a8b9c0d22", "integrationType": "custom"}
AGENT_WORKSPACE = {"id": "5f1a2b3c4d5e6f7a8b9c0d23", "name": "zd-agentWorkspace",
                   "integrationId": "5f1a2b3c4d5e6f7a8b9c0d24",
                   "integrationType": "zd:agentWorkspace"}
INTEGRATIONS = (BOT, AGENT_WORKSPACE)
TEXT_LENGTH = 4096
METADATA_BYTES = 4096
DEFAULT_TICKET_MESSAGES = 10


def new_id() -> str:
    return secrets.token_hex(12)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class ApiError(Exception):
    def __init__(self, status: int, code: str, title: str) -> None:
        super().__init__(title)
        self.status, self.code, self.title = status, code, title


@dataclass
class Ticket:
    """What Zendesk's Agent Workspace made of a conversation passed to it."""

    conversation_id: str
    messages: List[Dict[str, Any]]
    metadata: Dict[str, Any]

    @property
    def tags(self) -> List[str]:
        return str(self.metadata.get("dataCapture.systemField.tags", "")).split()

    def texts(self) -> List[Tuple[str, str]]:
        return [(m["author"]["type"], m["content"]["text"]) for m in self.messages]


@dataclass
class Conversation:
    id: str
    user_id: str
    fields: Dict[str, Any]
    messages: List[Dict[str, Any]] = field(default_factory=list)
    active: Dict[str, str] = field(default_factory=lambda: dict(BOT))
    tickets: List[Ticket] = field(default_factory=list)

    def texts(self, author_type: str) -> List[str]:
        return [m["content"]["text"] for m in self.messages
                if m["author"]["type"] == author_type]

    @property
    def ticket(self) -> Optional[Ticket]:
        return self.tickets[-1] if self.tickets else None


@dataclass
class SunshineServer:
    """Start with `await server.start()`; point it at the gateway with `webhook_url`."""

    webhook_url: str = ""
    url: str = ""
    secret: str = SECRET
    users: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    conversations: Dict[str, Conversation] = field(default_factory=dict)
    # every API call: (method, path, HTTP status answered)
    calls: List[Tuple[str, str, int]] = field(default_factory=list)
    # the webhooks sent: (their body, the gateway's answer status)
    deliveries: List[Tuple[bytes, int]] = field(default_factory=list)
    is_down: bool = False
    throttled: int = 0
    retry_after: int = 0
    throttled_path: str = ""
    throttle_after: int = 0
    _port: int = 0
    _runner: Optional[web.AppRunner] = None
    _session: Optional[aiohttp.ClientSession] = None
    _background: Set[asyncio.Task] = field(default_factory=set)

    async def start(self) -> SunshineServer:
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
        """Every API call answered 503."""
        self.is_down = is_down

    def throttle(self, retry_after: int, times: int = 1, only: str = "",
                 after: int = 0) -> None:
        """The next `times` calls (whose path ends with `only`, once `after` of them
        were answered) answered 429 with Retry-After."""
        self.throttled, self.retry_after, self.throttled_path = times, retry_after, only
        self.throttle_after = after

    async def unreachable(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def reachable(self) -> None:
        app = web.Application(middlewares=[self._auth])
        base = "/v2/apps/{app}"
        app.router.add_post(f"{base}/users", self._create_user)
        app.router.add_get(base + "/users/{user}", self._user)
        app.router.add_post(f"{base}/conversations", self._create_conversation)
        app.router.add_post(base + "/conversations/{id}/messages", self._post_message)
        for action in ("passControl", "offerControl", "releaseControl"):
            app.router.add_post(base + "/conversations/{id}/" + action, self._switchboard)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self._port).start()

    def conversation_for(self, reference: str) -> Optional[Conversation]:
        """The conversation whose metadata names the handoff (H-12)."""
        return next((c for c in self.conversations.values()
                     if c.fields["metadata"].get("handoff_reference") == reference), None)

    # what the Agent Workspace does

    async def agent_reply(self, conversation_id: str, text: str,
                          name: str = "Maya") -> Dict[str, Any]:
        """An agent answers in the ticket: a business message from the Agent Workspace."""
        conversation = self.conversations[conversation_id]
        message = self._message(conversation, {"type": "business", "displayName": name},
                                {"type": "text", "text": text}, AGENT_WORKSPACE, {})
        await self._fire(conversation, "conversation:message", {"message": message})
        return message

    async def solve(self, conversation_id: str) -> int:
        """The ticket is solved: Zendesk releases control to the default integration."""
        conversation = self.conversations[conversation_id]
        conversation.active = dict(BOT)
        return await self._fire(conversation, "switchboard:releaseControl",
                                {"reason": "ticketClosed"})

    async def reopen(self, conversation_id: str) -> int:
        """The ticket is reopened: control passes to the Agent Workspace again."""
        conversation = self.conversations[conversation_id]
        conversation.active = dict(AGENT_WORKSPACE)
        return await self._fire(conversation, "switchboard:passControl", {"metadata": {}})

    async def redeliver(self, index: int = -1) -> int:
        """SunCo sends a delivery again (it was not acknowledged in time)."""
        return await self.send_webhook(self.deliveries[index][0])

    async def send_webhook(self, body: bytes,
                           headers: Optional[Dict[str, str]] = None) -> int:
        assert self._session is not None and self.webhook_url
        sent = {"Content-Type": "application/json", **(
            headers if headers is not None else {SECRET_HEADER: self.secret})}
        async with self._session.post(self.webhook_url, data=body, headers=sent) as answer:
            self.deliveries.append((body, answer.status))
            return answer.status

    def envelope(self, events: List[Dict[str, Any]]) -> bytes:
        return json.dumps({"app": {"id": APP_ID},
                           "webhook": {"id": WEBHOOK_ID, "version": "v2"},
                           "events": events}).encode()

    async def _fire(self, conversation: Conversation, kind: str,
                    payload: Dict[str, Any]) -> int:
        if not self.webhook_url:
            return 0
        event = {"id": new_id(), "createdAt": now_iso(), "type": kind, "payload": {
            "conversation": {"id": conversation.id, "type": "personal",
                             "activeSwitchboardIntegration": dict(conversation.active)},
            **payload}}
        return await self.send_webhook(self.envelope([event]))

    def _in_background(self, conversation: Conversation, kind: str,
                       payload: Dict[str, Any]) -> None:
        """SunCo sends webhooks after answering the API call."""
        if not self.webhook_url:
            return
        task = asyncio.get_running_loop().create_task(self._fire(conversation, kind, payload))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # the API

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response = await self._answer(request, handler)
        self.calls.append((request.method, request.path, response.status))
        return response

    async def _answer(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.is_down:
            return web.Response(status=503, text="Service Unavailable")
        expected = "Basic " + base64.b64encode(f"{KEY_ID}:{KEY_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _error(ApiError(401, "unauthorized", "Authorization is required"))
        if self.throttled and request.path.endswith(self.throttled_path) \
                and self.throttle_after:
            self.throttle_after -= 1
        elif self.throttled and request.path.endswith(self.throttled_path):
            self.throttled -= 1
            return web.json_response({"errors": [{"code": "too_many_requests",
                                                  "title": "Rate limit exceeded"}]},
                                     status=429, headers={"Retry-After": str(self.retry_after)})
        if request.match_info.get("app") != APP_ID:
            return _error(ApiError(404, "app_not_found", "App not found"))
        try:
            return await handler(request)
        except ApiError as error:
            return _error(error)

    async def _body(self, request: web.Request) -> Dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as error:
            raise ApiError(400, "bad_request", "Invalid JSON") from error
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "Invalid JSON")
        return body

    def _find_user(self, key: str) -> Optional[Dict[str, Any]]:
        return self.users.get(key) or next(
            (u for u in self.users.values() if u["externalId"] == key), None)

    async def _create_user(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        external = body.get("externalId")
        if not isinstance(external, str) or not external:
            raise ApiError(400, "bad_request", "externalId is required")
        if self._find_user(external) is not None:
            raise ApiError(409, "conflict", "User already exists with this externalId")
        user = {"id": new_id(), "externalId": external, "signedUpAt": now_iso(),
                "profile": {"givenName": None, "surname": None, "email": None,
                            "avatarUrl": None, "locale": "en-US",
                            **(body.get("profile") or {})},
                "metadata": body.get("metadata") or {}, "identities": []}
        self.users[user["id"]] = user
        return web.json_response({"user": user}, status=201)

    async def _user(self, request: web.Request) -> web.Response:
        user = self._find_user(request.match_info["user"])
        if user is None:
            raise ApiError(404, "user_not_found", "User not found")
        return web.json_response({"user": user})

    async def _create_conversation(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body.get("type") not in ("personal", "sdkGroup"):
            raise ApiError(400, "bad_request", "type must be personal or sdkGroup")
        participants = body.get("participants")
        if not isinstance(participants, list) or len(participants) != 1 \
                or not isinstance(participants[0], dict):
            raise ApiError(400, "bad_request", "a personal conversation has one participant")
        key = participants[0].get("userId") or participants[0].get("userExternalId")
        user = self._find_user(key) if isinstance(key, str) else None
        if user is None:
            raise ApiError(404, "user_not_found", "User not found")
        metadata = body.get("metadata") or {}
        _check_flat(metadata)
        conversation = Conversation(new_id(), user["id"], {
            "type": body["type"], "displayName": body.get("displayName"),
            "metadata": metadata, "isDefault": False, "lastUpdatedAt": now_iso()})
        self.conversations[conversation.id] = conversation
        return web.json_response({"conversation": self._conversation_data(conversation)},
                                 status=201)

    def _conversation(self, request: web.Request) -> Conversation:
        conversation = self.conversations.get(request.match_info["id"])
        if conversation is None:
            raise ApiError(404, "conversation_not_found", "Conversation not found")
        return conversation

    async def _post_message(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        body = await self._body(request)
        author, content = body.get("author"), body.get("content")
        if not isinstance(author, dict) or author.get("type") not in ("user", "business"):
            raise ApiError(400, "bad_request", "author.type must be user or business")
        if author["type"] == "user":
            key = author.get("userId") or author.get("userExternalId")
            user = self._find_user(key) if isinstance(key, str) else None
            if user is None or user["id"] != conversation.user_id:
                raise ApiError(400, "bad_request", "the user is not a participant")
            author = {"type": "user", "userId": user["id"],
                      "displayName": user["profile"].get("givenName")}
        if not isinstance(content, dict) or content.get("type") != "text" \
                or not isinstance(content.get("text"), str) or not content["text"].strip():
            raise ApiError(400, "bad_request", "content.text is required")
        if len(content["text"]) > TEXT_LENGTH:
            raise ApiError(400, "bad_request", "content.text is too long")
        metadata = body.get("metadata") or {}
        _check_flat(metadata)
        message = self._message(conversation, author, content, BOT, metadata)
        if conversation.ticket is not None and conversation.active == AGENT_WORKSPACE:
            conversation.ticket.messages.append(message)
        self._in_background(conversation, "conversation:message", {"message": message})
        return web.json_response({"messages": [message]}, status=201)

    async def _switchboard(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        action = request.path.rsplit("/", 1)[-1]
        body = await self._body(request)
        metadata = body.get("metadata") or {}
        _check_flat(metadata)
        if action == "releaseControl":
            conversation.active = dict(BOT)
            self._in_background(conversation, "switchboard:releaseControl",
                                {"reason": body.get("reason")})
            return web.json_response({})
        wanted = body.get("switchboardIntegration")
        target = next((i for i in INTEGRATIONS if wanted in (i["id"], i["name"])), None)
        if wanted == "next":
            target = AGENT_WORKSPACE if conversation.active == BOT else BOT
        if target is None:
            raise ApiError(400, "bad_request", "switchboardIntegration not found")
        if action == "offerControl":
            self._in_background(conversation, "switchboard:offerControl",
                                {"metadata": metadata})
            return web.json_response({})
        conversation.active = dict(target)
        if target == AGENT_WORKSPACE:
            conversation.tickets.append(Ticket(conversation.id, self._ticket_messages(
                conversation, metadata.get("first_message_id")), metadata))
        self._in_background(conversation, "switchboard:passControl", {"metadata": metadata})
        return web.json_response({})

    # shapes

    def _ticket_messages(self, conversation: Conversation,
                         first: Any) -> List[Dict[str, Any]]:
        """From `first_message_id` on; without it, the last 10 (Zendesk's default)."""
        ids = [m["id"] for m in conversation.messages]
        if isinstance(first, str) and first in ids:
            return list(conversation.messages[ids.index(first):])
        return list(conversation.messages[-DEFAULT_TICKET_MESSAGES:])

    def _message(self, conversation: Conversation, author: Dict[str, Any],
                 content: Dict[str, Any], integration: Dict[str, str],
                 metadata: Dict[str, Any]) -> Dict[str, Any]:
        source = ({"type": "zd:agentWorkspace", "integrationId":
                   AGENT_WORKSPACE["integrationId"]} if integration == AGENT_WORKSPACE
                  else {"type": "api:conversations"})
        message = {"id": new_id(), "received": now_iso(), "author": author,
                   "content": content, "source": source, "metadata": metadata}
        conversation.messages.append(message)
        return message

    def _conversation_data(self, conversation: Conversation) -> Dict[str, Any]:
        return {"id": conversation.id, **conversation.fields,
                "activeSwitchboardIntegration": dict(conversation.active),
                "pendingSwitchboardIntegration": None}


def _check_flat(metadata: Any) -> None:
    if not isinstance(metadata, dict) or not all(
            isinstance(v, str | int | float | bool) for v in metadata.values()):
        raise ApiError(400, "bad_request", "metadata must be a flat object")
    if len(json.dumps(metadata).encode()) > METADATA_BYTES:
        raise ApiError(400, "bad_request", "metadata is limited to 4KB")


def _error(error: ApiError) -> web.Response:
    return web.json_response({"errors": [{"code": error.code, "title": error.title}]},
                             status=error.status)
