"""What every external helpdesk target does the same way (Chatwoot, Freshdesk, Zendesk): a
handoff is recorded for the helpdesk and pushed at once; what the helpdesk cannot take
(down, refusing, throttling) stays in the gateway's records, the handoff and the
customer's messages meanwhile, and is offered again every `retry_seconds` (no sooner
than a Retry-After the helpdesk gave) by one gateway at a time, oldest first. A
helpdesk's own part is making its conversation or ticket (`_create`), completing it
(`_describe`) and adding a customer's message to it (`_add_customer_message`)."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from typing import (
    Any,
    AsyncIterator,
    Coroutine,
    Dict,
    Generic,
    Hashable,
    List,
    Optional,
    Set,
    Tuple,
)

from bot.handoff.desk import HandoffDesk
from bot.handoff.helpdesk_links import HelpdeskLinks, RemoteId
from bot.handoff.packet import customer_text
from bot.handoff.store import Handoff
from connectors.message import Message

# how long one gateway may hold a handoff it is pushing before another may try
PUSH_LEASE_SECONDS = 60.0


class HelpdeskError(Exception):
    """The helpdesk did not do what was asked; the message says why, without content."""

    def __init__(self, why: str, status: int = 0, retry_after: float = 0.0) -> None:
        super().__init__(why)
        self.status = status  # the helpdesk's HTTP status; 0 when it gave none
        self.retry_after = retry_after  # seconds it asked us to wait (429), else 0


class HelpdeskTarget(Generic[RemoteId]):
    name = "the helpdesk"  # for the log: "Chatwoot"
    kind = "conversation"  # what a handoff becomes there

    def __init__(self, links: HelpdeskLinks[RemoteId], desk: HandoffDesk, retry_seconds: float,
                 log: logging.Logger) -> None:
        self.links: HelpdeskLinks[RemoteId] = links
        self.desk = desk
        self.retry_seconds = retry_seconds
        self.log = log
        self._retries: Optional[asyncio.Task[None]] = None
        # no call before this (desk clock): the helpdesk said Retry-After
        self._quiet_until = 0.0
        self._background: Set[asyncio.Task[None]] = set()
        # per key (a ticket, a conversation): its lock and how many wait for it
        self._locks: Dict[Hashable, Tuple[asyncio.Lock, List[int]]] = {}

    # the helpdesk's own part

    async def _create(self, handoff: Handoff) -> RemoteId:
        """Make the handoff's conversation or ticket there; its id."""
        raise NotImplementedError

    async def _describe(self, handoff: Handoff, remote_id: RemoteId) -> None:
        """Complete it (notes, team) once it exists."""
        raise NotImplementedError

    async def _add_customer_message(self, remote_id: RemoteId, content: str) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        """Release the API client."""

    # the HandoffTarget protocol

    async def start(self) -> None:
        self._retries = asyncio.create_task(self._retry_forever())

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._retries is not None:
            self._retries.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retries
            self._retries = None
        await self._close()

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Do the webhook's work soon, so the helpdesk's webhook is answered at once;
        `stop` cancels what is left of it."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @contextlib.asynccontextmanager
    async def one_at_a_time(self, key: Hashable) -> AsyncIterator[None]:
        """One piece of work on `key` (a ticket, a conversation) at a time in this
        process, so agents' replies keep their order."""
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                self._locks.pop(key, None)

    async def opened(self, handoff: Handoff) -> None:
        await self.desk.records.write(self.links.add, handoff["id"])
        if not self._quiet():
            await self.push(handoff["id"])

    async def customer_wrote(self, handoff: Handoff, message: Message) -> None:
        records = self.desk.records
        if await records.read(self.links.conversation_of, handoff["id"]) is None:
            return  # the helpdesk gets it with the transcript
        await records.write(self.links.hold, handoff["id"], customer_text(message))
        if not self._quiet():
            await self.send_held()

    # pushing

    async def send_held(self) -> bool:
        """The customers' held messages to the helpdesk, oldest first; False when it
        failed (the rest waits for the next try)."""
        records = self.desk.records
        while True:
            held = await records.write(self.links.next_held, self.desk.clock(),
                                       PUSH_LEASE_SECONDS)
            if held is None:
                return True
            held_id, remote_id, content = held
            try:
                await self._add_customer_message(remote_id, content)
            except HelpdeskError as error:
                if error.status == 404:  # deleted in the helpdesk
                    self.log.warning("%s %s %s is gone; a customer message for it is dropped "
                                     "(the gateway's transcript has it)",
                                     self.name, self.kind, remote_id)
                    await records.write(self.links.sent, held_id)
                    continue
                await records.write(self.links.unclaim, held_id)
                self._failed(error)
                self.log.warning("%s %s %s: a customer message is held (%s)",
                                 self.name, self.kind, remote_id, error)
                return False
            await records.write(self.links.sent, held_id)

    async def push(self, handoff_id: int) -> bool:
        """Give the helpdesk the handoff unless it has it or another gateway is at it;
        False when the helpdesk failed (the handoff waits for the next try)."""
        records = self.desk.records
        if not await records.write(self.links.claim, handoff_id, self.desk.clock(),
                                   PUSH_LEASE_SECONDS):
            return True
        handoff = await records.read(self.desk.store.get, handoff_id)
        if handoff is None:  # erased meanwhile
            return True
        try:
            remote_id = await self._remote(handoff)
            await self._describe(handoff, remote_id)
        except HelpdeskError as error:
            await records.write(self.links.release, handoff_id)
            self._failed(error)
            self.log.warning("H-%s: %s did not take the handoff (%s); kept, offered again "
                             "in %.0f s", handoff_id, self.name, error,
                             max(self.retry_seconds, error.retry_after))
            return False
        await records.write(self.links.completed, handoff_id)
        self.log.info("H-%s is %s %s %s", handoff_id, self.name, self.kind, remote_id)
        return True

    async def _remote(self, handoff: Handoff) -> RemoteId:
        """The handoff's conversation or ticket, made once: linked as soon as the
        helpdesk has it, so a later try completes it rather than making another."""
        known = await self.desk.records.read(self.links.conversation_of, handoff["id"])
        if known is not None:
            return known
        remote_id = await self._create(handoff)
        await self.desk.records.write(self.links.linked, handoff["id"], remote_id)
        return remote_id

    def _failed(self, error: HelpdeskError) -> None:
        if error.retry_after > 0:
            self._quiet_until = max(self._quiet_until, self.desk.clock() + error.retry_after)

    def _quiet(self) -> bool:
        return self.desk.clock() < self._quiet_until

    async def _retry_forever(self) -> None:
        while True:
            await asyncio.sleep(max(self.retry_seconds,
                                    self._quiet_until - self.desk.clock()))
            try:
                await self.retry_once()
            except Exception:  # noqa: BLE001 - the loop outlives a database hiccup
                self.log.exception("offering handoffs to %s again failed", self.name)

    async def retry_once(self) -> None:
        for handoff_id in await self.desk.records.read(self.links.waiting):
            if self._quiet() or not await self.push(handoff_id):
                break  # still failing: the rest waits for the next round
        if not self._quiet():
            await self.send_held()


def keyed_identifier(secret: str, conversation_id: str) -> str:
    """Ours for this customer conversation: keyed, so a phone number cannot be
    recovered from it by trying them all."""
    digest = hmac.new(secret.encode(), conversation_id.encode(), hashlib.sha256).hexdigest()
    return f"gw-{digest[:32]}"
