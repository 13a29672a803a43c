"""What signed webhooks of outside services (carriers: carriers.py; store platforms:
store_hooks.py) share: the raw body read with a bound, the signature compared in
constant time, a refusal logged without the body, and their events kept in a table of
the gateway's records before they are acknowledged (unique on provider and event id,
so a retry is acknowledged and not handled twice), then handled in the background,
oldest first, woken at once and swept every few minutes; an event whose handling fails
is tried again and set aside (logged) after MAX_ATTEMPTS tries; handled events are
kept a while, so that a late retry of one is still known.

The table needs the columns id, provider, event_id, state (pending | done), result,
attempts, received_at and updated_at; each kind adds its own."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Dict, List, Mapping, Optional

import sqlalchemy as sa
from aiohttp import web

from bot.messaging.records import GatewayRecords, insert_if_absent

MAX_BODY = 1024 * 1024
# how often kept events are looked at again (those waiting for business hours)
SWEEP_SECONDS = 300.0
BATCH = 50
# an event whose handling fails this many times is set aside (logged), not tried for ever
MAX_ATTEMPTS = 5
# handled events are kept this long, so that a service's retry of one is still known
KEEP_DONE_SECONDS = 30 * 86400
# the result of an event that waits, kept, for the next sweep (outside business hours)
WAITING = "outside_hours"


class Malformed(ValueError):
    pass


def signed(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


async def read_body(request: web.Request) -> bytes:
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY, len(body))
    return body


def refused(log: logging.Logger, provider: str,
            why: str = "signature missing or wrong") -> web.Response:
    log.warning("refused a %s webhook: %s", provider, why)
    return web.json_response({"ok": False, "error": why}, status=401)


class KeptEvents(ABC):
    """Events kept in `table` and handled in the background by `handle`."""

    # the background task's name, and what the log calls the events
    task_name = "kept-events"
    what = "events"

    def __init__(self, records: GatewayRecords, table: sa.Table, log: logging.Logger,
                 clock: Callable[[], float] = time.time,
                 sweep_seconds: float = SWEEP_SECONDS) -> None:
        self.records = records
        self.table = table
        self.log = log
        self.clock = clock
        self.sweep_seconds = sweep_seconds
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: Optional[asyncio.Task[None]] = None

    @property
    @abstractmethod
    def enabled(self) -> bool: ...

    @abstractmethod
    async def handle(self, row: Mapping[str, Any]) -> str:
        """Handle a kept event: its result; WAITING when it must wait, kept, for the
        next sweep (outside business hours)."""

    # -- keeping ----------------------------------------------------------------------

    def keep(self, provider: str, event_id: str, columns: Mapping[str, Any]) -> bool:
        """Keep a new event (on a records writer thread): False when it was kept before."""
        now = self.clock()
        with self.records.engine.begin() as db:
            return insert_if_absent(db, self.table, {
                "provider": provider, "event_id": event_id[:120], **columns,
                "state": "pending", "result": "", "attempts": 0,
                "received_at": now, "updated_at": now})

    def wake(self) -> None:
        self._wake.set()

    # -- handling ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None and self.enabled:
            self._stopping = False
            self._wake.set()  # what an earlier run kept and did not handle
            self._task = asyncio.create_task(self._work(), name=self.task_name)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, grace_seconds)

    async def _work(self) -> None:
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sweep_seconds)
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self.handle_pending()
            except Exception as error:  # the next wake or sweep tries again
                self.log.error("%s not told: %s", self.what, type(error).__name__)

    async def handle_pending(self) -> List[str]:
        """Handle the kept events, oldest first; the results."""
        await self.records.write(self._forget_handled)
        results: List[str] = []
        after = 0
        while batch := await self.records.read(self._pending, after):
            for row in batch:
                try:
                    result = await self.handle(row)
                    if result == WAITING:
                        await self.records.write(self.settle, row["id"], "pending", result)
                    else:
                        await self.records.write(self.settle, row["id"], "done", result)
                        self.log.info("%s event %s: %s", row["provider"], row["event_id"],
                                      result)
                    results.append(result)
                except Exception as error:  # this event's, not the others'
                    gave_up = row["attempts"] + 1 >= MAX_ATTEMPTS
                    self.log.error("%s event %s not told: %s%s", row["provider"],
                                   row["event_id"], type(error).__name__,
                                   "; set aside" if gave_up else "")
                    await self.records.write(self.settle, row["id"],
                                             "done" if gave_up else "pending", "failed")
                    results.append("failed")
                after = row["id"]
                if self._stopping:
                    return results
        return results

    def _forget_handled(self) -> None:
        e = self.table.c
        with self.records.engine.begin() as db:
            db.execute(self.table.delete().where(
                e.state == "done", e.updated_at < self.clock() - KEEP_DONE_SECONDS))

    def _pending(self, after: int) -> List[Dict[str, Any]]:
        e = self.table.c
        with self.records.engine.connect() as db:
            rows = db.execute(sa.select(self.table).where(
                e.state == "pending", e.id > after).order_by(e.id).limit(BATCH)).all()
        return [dict(row._mapping) for row in rows]

    def settle(self, event_row: int, state: str, result: str) -> None:
        """Only a pending event: of two gateways handling it at once, the first one's
        result stays (the outreach record let only one of them send)."""
        e = self.table.c
        with self.records.engine.begin() as db:
            db.execute(self.table.update().where(e.id == event_row,
                                                 e.state == "pending").values(
                state=state, result=result, attempts=e.attempts + 1,
                updated_at=self.clock()))
