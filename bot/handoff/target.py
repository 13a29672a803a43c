"""Where agents work a handoff: the handoff target. The gateway keeps the customer's
channel, the handoff record (SLA, CSAT, audit) and the bot's silence whatever the
target; a target only shows each handoff where the agents are and passes on what the
customer writes meanwhile. HANDOFF_TARGET chooses it (bot/services.py)."""
from __future__ import annotations

from typing import Protocol

from bot.handoff.store import Handoff
from connectors.message import Message


class HandoffTarget(Protocol):
    async def start(self) -> None:
        """Begin background work (retries); called once the gateway serves."""

    async def stop(self) -> None:
        ...

    async def opened(self, handoff: Handoff) -> None:
        """A new handoff, once the customer has been told they are queued."""

    async def customer_wrote(self, handoff: Handoff, message: Message) -> None:
        """The customer wrote while the handoff is open (already in the transcript)."""


class ConsoleTarget:
    """The project's own agent console: it reads the handoff records and the live
    events the desk publishes, so there is nothing more to pass on."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def opened(self, handoff: Handoff) -> None:
        pass

    async def customer_wrote(self, handoff: Handoff, message: Message) -> None:
        pass
