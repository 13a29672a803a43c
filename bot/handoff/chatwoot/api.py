"""The few calls of Chatwoot's Application API the handoff makes
(https://developers.chatwoot.com/api-reference, `/api/v1/accounts/{account_id}/…`),
authenticated by the `api_access_token` header. Any failure (no connection, 429, 5xx,
a refusal) is ChatwootError: the caller keeps the handoff and offers it again later."""
from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional

import aiohttp

from bot.handoff.helpdesk_target import HelpdeskError
from bot.settings import ChatwootSettings

TIMEOUT_SECONDS = 10


class ChatwootError(HelpdeskError):
    """Chatwoot did not do what was asked; the message says why, without content."""


class ChatwootApi:
    def __init__(self, settings: ChatwootSettings) -> None:
        self.settings = settings
        self.base = f"{settings.url}/api/v1/accounts/{settings.account_id}"
        self._session: Optional[aiohttp.ClientSession] = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def find_contact(self, identifier: str) -> Optional[int]:
        """The contact whose identifier is exactly this one (search matches parts too)."""
        found = await self._call("GET", "/contacts/search", params={"q": identifier})
        return next((int(c["id"]) for c in found.get("payload") or []
                     if c.get("identifier") == identifier), None)

    async def create_contact(self, name: str, identifier: str) -> int:
        created = await self._call("POST", "/contacts", {
            "inbox_id": self.settings.inbox_id, "name": name, "identifier": identifier})
        return int(created["payload"]["contact"]["id"])

    async def contact_inbox(self, contact_id: int, source_id: str) -> str:
        """The contact in our API inbox, under our own source id (created if new)."""
        made = await self._call("POST", f"/contacts/{contact_id}/contact_inboxes",
                                {"inbox_id": self.settings.inbox_id, "source_id": source_id})
        return str(made["source_id"])

    async def conversation_with(self, contact_id: int, reference: str) -> Optional[int]:
        """The contact's conversation in our inbox made for this handoff, if any."""
        found = await self._call("GET", f"/contacts/{contact_id}/conversations")
        return next((int(c["id"]) for c in found.get("payload") or []
                     if c.get("inbox_id") == self.settings.inbox_id
                     and (c.get("additional_attributes") or {}).get("handoff_reference")
                     == reference), None)

    async def create_conversation(self, contact_id: int, source_id: str,
                                  attributes: Dict[str, Any]) -> int:
        created = await self._call("POST", "/conversations", {
            "source_id": source_id, "inbox_id": self.settings.inbox_id,
            "contact_id": contact_id, "status": "open", "additional_attributes": attributes})
        return int(created["id"])

    async def message(self, conversation_id: int, content: str, incoming: bool = False,
                      private: bool = False) -> int:
        """A message from the customer (incoming) or a private note (outgoing)."""
        created = await self._call("POST", f"/conversations/{conversation_id}/messages", {
            "content": content, "message_type": "incoming" if incoming else "outgoing",
            "private": private})
        return int(created["id"])

    async def private_notes(self, conversation_id: int) -> List[str]:
        """What the conversation's private notes say, oldest first."""
        found = await self._call("GET", f"/conversations/{conversation_id}/messages")
        return [str(m.get("content") or "") for m in found.get("payload") or []
                if m.get("private")]

    async def assign_team(self, conversation_id: int, team_id: int) -> None:
        await self._call("POST", f"/conversations/{conversation_id}/assignments",
                         {"team_id": team_id})

    async def _call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None,
                    params: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
                headers={"api_access_token": self.settings.api_token})
        what = f"{method} {path.split('/')[1]}"
        try:
            async with self._session.request(method, self.base + path, json=body,
                                             params=params) as response:
                if response.status >= 300:
                    raise ChatwootError(f"{what}: HTTP {response.status}", response.status)
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
            raise ChatwootError(f"{what}: {type(error).__name__}") from error
        if not isinstance(answer, dict):
            raise ChatwootError(f"{what}: the answer is not a JSON object")
        return answer
