"""Talking to Rasa over HTTP, through its REST channel: the only way the gateway
reaches the bot (DESIGN.md). With several Rasa instances (RASA_URL lists them, comma
separated), each conversation goes to one of them, and to the next when that one
refuses connections; Rasa's lock store keeps any instance safe for any conversation."""
from __future__ import annotations

import asyncio
import contextlib
import zlib
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

import aiohttp

from connectors.message import Button, Reply


class BotUnavailable(Exception):
    """No answer from Rasa: the turn may have run (a timeout, a dropped connection, an
    error), so asking again could run it twice."""


class BotRefused(BotUnavailable):
    """Rasa did not run the turn: no instance took the connection, or Rasa answered 503,
    which keeps nothing of the failed turn (components/whole_turns.py). Asking again is
    safe."""


class BotBusy(BotUnavailable):
    """No request to Rasa came free within `bot_queue_seconds`: nothing was sent, but
    the message has waited long enough."""


class RasaClient:
    def __init__(self, rasa_urls: Tuple[str, ...], timeout_seconds: float,
                 in_flight: int = 8, queue_seconds: float = 120.0) -> None:
        if not rasa_urls:
            raise ValueError("at least one Rasa URL is needed")
        self.urls = tuple(f"{url}/webhooks/rest/webhook" for url in rasa_urls)
        # a burst waits here, not in Rasa, where it would run into the timeout
        self.slots = {url: asyncio.Semaphore(in_flight) for url in self.urls}
        self.slot_wait_seconds = queue_seconds
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: Optional[aiohttp.ClientSession] = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # A new connection for every turn: on a kept-alive one that Rasa closed (its
            # idle timeout, or a restart) a request fails without reaching Rasa, and
            # could not be told from a turn that ran, so it would not be asked again.
            self._session = aiohttp.ClientSession(
                timeout=self.timeout, connector=aiohttp.TCPConnector(force_close=True))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def ask_raw(self, sender: str, text: str,
                      metadata: Dict[str, Any]) -> List[Dict[str, Any]]:
        payload = {"sender": sender, "message": text, "metadata": metadata}
        for url in self._preferred(sender):
            try:
                async with self._slot(url), self.session.post(url, json=payload) as response:
                    if response.status == 503:
                        raise BotRefused("HTTP 503")
                    if response.status != 200:
                        raise BotUnavailable(f"HTTP {response.status}")
                    replies = await response.json()
            except aiohttp.ClientConnectorError as error:
                # nothing reached this instance, so the next one can take the turn
                unreachable = error
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
                raise BotUnavailable(type(error).__name__) from error
            if not isinstance(replies, list):
                raise BotUnavailable("answer is not a list")
            return replies
        raise BotRefused(type(unreachable).__name__) from unreachable

    @contextlib.asynccontextmanager
    async def _slot(self, url: str) -> AsyncIterator[None]:
        slot = self.slots[url]
        try:
            await asyncio.wait_for(slot.acquire(), self.slot_wait_seconds)
        except asyncio.TimeoutError:
            raise BotBusy(f"no request to Rasa free for {self.slot_wait_seconds:.0f} s") \
                from None
        try:
            yield
        finally:
            slot.release()

    def _preferred(self, sender: str) -> Tuple[str, ...]:
        """Every instance, starting at the conversation's own, so its turns meet a
        warm tracker cache and seldom wait on the lock store."""
        start = zlib.crc32(sender.encode()) % len(self.urls)
        return self.urls[start:] + self.urls[:start]

    async def ask(self, sender: str, text: str, metadata: Dict[str, Any]) -> List[Reply]:
        """The bot's replies. Raises BotRefused when asking again is safe, BotBusy when
        the message waited too long to be sent, and BotUnavailable when the turn may
        have run."""
        return [reply_from_rasa(raw) for raw in await self.ask_raw(sender, text, metadata)]


def reply_from_rasa(raw: Dict[str, Any]) -> Reply:
    """One item of Rasa's REST answer ({recipient_id, text, buttons, image, custom})."""
    buttons = tuple(Button(str(b.get("title", "")), str(b.get("payload", "")))
                    for b in raw.get("buttons") or [])
    return Reply(text=str(raw.get("text") or ""), buttons=buttons,
                 image_url=str(raw.get("image") or ""), custom=raw.get("custom"))
