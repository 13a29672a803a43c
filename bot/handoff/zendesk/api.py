"""The few calls of Sunshine Conversations' API v2 (https://developer.zendesk.com/api-reference/conversations/)
the Zendesk handoff makes, under `/v2/apps/{appId}`, authenticated with HTTP Basic: an
app API key's id as the user name and its secret as the password. Any failure (no
connection, 429, 5xx, a refusal) is SunshineError, with Retry-After when SunCo
throttled: the caller keeps the handoff and offers it again later. Errors say which
call failed and SunCo's error codes, never what was sent (their titles may quote it)."""
from __future__ import annotations

import asyncio
from typing import Any, Dict, Optional
from urllib.parse import quote

import aiohttp

from bot.handoff.helpdesk_target import HelpdeskError
from bot.settings import ZendeskSettings

TIMEOUT_SECONDS = 10
# SunCo's limit on a text message's length
TEXT_LENGTH = 4096


class SunshineError(HelpdeskError):
    """SunCo did not do what was asked; the message says why, without content."""


class SunshineApi:
    def __init__(self, settings: ZendeskSettings) -> None:
        self.settings = settings
        self.base = f"{settings.api_url}/v2/apps/{quote(settings.app_id, safe='')}"
        self._session: Optional[aiohttp.ClientSession] = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ensure_user(self, external_id: str, given_name: str) -> str:
        """The SunCo user with this externalId (made if new); its id."""
        try:
            made = await self._call("POST", "/users", {
                "externalId": external_id, "profile": {"givenName": given_name}})
        except SunshineError as error:
            if error.status != 409:  # 409 conflict: the user exists already
                raise
            made = await self._call("GET", f"/users/{quote(external_id, safe='')}")
        return _id(made, "user")

    async def create_conversation(self, user_id: str, display_name: str,
                                  metadata: Dict[str, Any]) -> str:
        """A personal conversation of the user's; its id."""
        made = await self._call("POST", "/conversations", {
            "type": "personal", "participants": [{"userId": user_id}],
            "displayName": display_name, "metadata": metadata})
        return _id(made, "conversation")

    async def post_message(self, conversation_id: str, author: Dict[str, Any], text: str,
                           metadata: Optional[Dict[str, Any]] = None) -> str:
        """A text message in the conversation, as the user or the business; its id."""
        body: Dict[str, Any] = {"author": author,
                                "content": {"type": "text", "text": text[:TEXT_LENGTH]}}
        if metadata:
            body["metadata"] = metadata
        made = await self._call("POST", f"/conversations/{quote(conversation_id, safe='')}"
                                "/messages", body)
        messages = made.get("messages")
        if not isinstance(messages, list) or not messages or not isinstance(
                messages[0], dict) or not isinstance(messages[0].get("id"), str):
            raise SunshineError("POST messages: the answer has no message id")
        return str(messages[0]["id"])

    async def pass_control(self, conversation_id: str, integration: str,
                           metadata: Dict[str, Any]) -> None:
        """The switchboard: make `integration` (id or name) the conversation's active one."""
        await self._call("POST", f"/conversations/{quote(conversation_id, safe='')}"
                         "/passControl",
                         {"switchboardIntegration": integration, "metadata": metadata})

    async def _call(self, method: str, path: str,
                    body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
                auth=aiohttp.BasicAuth(self.settings.key_id, self.settings.key_secret))
        what = f"{method} {_what(path)}"
        try:
            async with self._session.request(method, self.base + path,
                                             json=body) as response:
                if response.status >= 300:
                    raise SunshineError(f"{what}: HTTP {response.status}{await _why(response)}",
                                        response.status, _retry_after(response))
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
            raise SunshineError(f"{what}: {type(error).__name__}") from error
        if not isinstance(answer, dict):
            raise SunshineError(f"{what}: the answer is not a JSON object")
        return answer


def _id(answer: Dict[str, Any], kind: str) -> str:
    found = answer.get(kind)
    if not isinstance(found, dict) or not isinstance(found.get("id"), str) or not found["id"]:
        raise SunshineError(f"{kind}: the answer has no {kind} id")
    return str(found["id"])


def _what(path: str) -> str:
    """The call's resource without ids: "users", "conversations", "messages",
    "passControl"; the id of a user read back is not named either."""
    parts = [p for p in path.split("/") if p]
    named = [p for p in parts if p in ("users", "conversations", "messages", "passControl")]
    return named[-1] if named else "app"


def _retry_after(response: aiohttp.ClientResponse) -> float:
    value = response.headers.get("Retry-After", "")
    return float(value) if response.status == 429 and value.isdigit() else 0.0


async def _why(response: aiohttp.ClientResponse) -> str:
    """SunCo's error codes (`{"errors": [{"code", "title"}]}`), never the titles."""
    try:
        answer = await response.json(content_type=None)
    except (aiohttp.ClientError, ValueError):
        return ""
    errors = answer.get("errors") if isinstance(answer, dict) else None
    codes = [str(e["code"]) for e in errors or [] if isinstance(e, dict)
             and isinstance(e.get("code"), str)] if isinstance(errors, list) else []
    return f" ({'; '.join(codes)})" if codes else ""
