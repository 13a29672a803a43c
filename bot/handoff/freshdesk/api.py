"""The few calls of Freshdesk's API v2 (https://developers.freshdesk.com/api/) the
handoff makes, authenticated with HTTP Basic: an agent's API key as the user name and
"X" as the password. Any failure (no connection, 429, 5xx, a refusal) is
FreshdeskError, with Retry-After when Freshdesk throttled: the caller keeps the
handoff and offers it again later. Errors say which call failed and Freshdesk's
error codes and fields, never what was sent."""
from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional

import aiohttp

from bot.handoff.helpdesk_target import HelpdeskError
from bot.settings import FreshdeskSettings

TIMEOUT_SECONDS = 10
OPEN, PENDING, RESOLVED, CLOSED = 2, 3, 4, 5
SOURCE_CHAT = 7  # a ticket's source: 1 Email, 2 Portal, 3 Phone, 7 Chat, ...
REPLY = 0  # a conversation's source: 0 a reply, 2 a note
PAGE_SIZE = 100


class FreshdeskError(HelpdeskError):
    """Freshdesk did not do what was asked; the message says why, without content."""


class FreshdeskApi:
    def __init__(self, settings: FreshdeskSettings) -> None:
        self.settings = settings
        self.base = f"{settings.api_url}/api/v2"
        self._session: Optional[aiohttp.ClientSession] = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def create_ticket(self, fields: Dict[str, Any]) -> Dict[str, Any]:
        """POST /tickets; the ticket Freshdesk made (id, requester_id, ...)."""
        return await self._object("POST", "/tickets", fields)

    async def ticket(self, ticket_id: int) -> Dict[str, Any]:
        return await self._object("GET", f"/tickets/{ticket_id}")

    async def note(self, ticket_id: int, body: str, private: bool, incoming: bool = False,
                   user_id: Optional[int] = None) -> int:
        """A note: private for agents, or public and incoming as from the requester."""
        fields: Dict[str, Any] = {"body": body, "private": private, "incoming": incoming}
        if user_id is not None:
            fields["user_id"] = user_id
        return int((await self._object("POST", f"/tickets/{ticket_id}/notes", fields))["id"])

    async def conversations(self, ticket_id: int) -> List[Dict[str, Any]]:
        """Every reply and note of the ticket, oldest first."""
        found: List[Dict[str, Any]] = []
        page = 1
        while True:
            answer = await self._call("GET", f"/tickets/{ticket_id}/conversations",
                                      params={"page": str(page), "per_page": str(PAGE_SIZE)})
            if not isinstance(answer, list):
                raise FreshdeskError("GET conversations: the answer is not a list")
            found.extend(c for c in answer if isinstance(c, dict))
            if len(answer) < PAGE_SIZE:
                return found
            page += 1

    async def _object(self, method: str, path: str,
                      body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        answer = await self._call(method, path, body)
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), int):
            raise FreshdeskError(f"{method} {_what(path)}: the answer is not an object "
                                 "with an id")
        return answer

    async def _call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None,
                    params: Optional[Dict[str, str]] = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
                auth=aiohttp.BasicAuth(self.settings.api_key, "X"))
        what = f"{method} {_what(path)}"
        try:
            async with self._session.request(method, self.base + path, json=body,
                                             params=params) as response:
                if response.status >= 300:
                    raise FreshdeskError(
                        f"{what}: HTTP {response.status}{await _why(response)}",
                        response.status, _retry_after(response))
                return await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
            raise FreshdeskError(f"{what}: {type(error).__name__}") from error


def _what(path: str) -> str:
    """The call's resource, without ids: "tickets", "notes", "conversations"."""
    parts = [p for p in path.split("/") if p and not p.isdigit()]
    return parts[-1] if parts else path


def _retry_after(response: aiohttp.ClientResponse) -> float:
    value = response.headers.get("Retry-After", "")
    return float(value) if response.status == 429 and value.isdigit() else 0.0


async def _why(response: aiohttp.ClientResponse) -> str:
    """Freshdesk's error code and the fields it names (never their values or messages,
    which may quote what was sent)."""
    try:
        answer = await response.json(content_type=None)
    except (aiohttp.ClientError, ValueError):
        return ""
    if not isinstance(answer, dict):
        return ""
    codes = [str(answer["code"])] if isinstance(answer.get("code"), str) else []
    for error in answer.get("errors") or []:
        if isinstance(error, dict):
            codes.append(f"{error.get('field')}: {error.get('code')}")
    return f" ({'; '.join(codes)})" if codes else ""
