"""Talking to Rasa over HTTP, through its REST channel: the only way the gateway
reaches the bot (DESIGN.md)."""
from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional

import aiohttp

from connectors.message import Button, Reply


class BotUnavailable(Exception):
    """Rasa did not answer, answered with an error, or timed out."""


class RasaClient:
    def __init__(self, rasa_url: str, timeout_seconds: float,
                 action_health_url: str = "") -> None:
        self.url = f"{rasa_url}/webhooks/rest/webhook"
        self.action_health_url = action_health_url
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: Optional[aiohttp.ClientSession] = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def ask_raw(self, sender: str, text: str,
                      metadata: Dict[str, Any]) -> List[Dict[str, Any]]:
        payload = {"sender": sender, "message": text, "metadata": metadata}
        try:
            async with self.session.post(self.url, json=payload) as response:
                if response.status != 200:
                    raise BotUnavailable(f"HTTP {response.status}")
                replies = await response.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
            raise BotUnavailable(type(error).__name__) from error
        if not isinstance(replies, list):
            raise BotUnavailable("answer is not a list")
        return replies

    async def ask(self, sender: str, text: str, metadata: Dict[str, Any]) -> List[Reply]:
        """The bot's replies. Rasa answers an empty list when a custom action failed
        (it logs the error and goes on), so an empty answer while the action server is
        down means the bot could not do its work."""
        replies = await self.ask_raw(sender, text, metadata)
        if not replies and self.action_health_url and not await self._actions_up():
            raise BotUnavailable("the action server is down")
        return [reply_from_rasa(raw) for raw in replies]

    async def _actions_up(self) -> bool:
        try:
            async with self.session.get(self.action_health_url) as response:
                return response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False


def reply_from_rasa(raw: Dict[str, Any]) -> Reply:
    """One item of Rasa's REST answer ({recipient_id, text, buttons, image, custom})."""
    buttons = tuple(Button(str(b.get("title", "")), str(b.get("payload", "")))
                    for b in raw.get("buttons") or [])
    return Reply(text=str(raw.get("text") or ""), buttons=buttons,
                 image_url=str(raw.get("image") or ""), custom=raw.get("custom"))
