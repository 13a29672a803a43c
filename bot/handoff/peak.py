"""Peak mode: on while policy/peak.yml has `enabled: true`, or while an admin has
switched it on (the switch lives in the gateway's database, so every gateway follows
it). While it is on, new handoffs get the surge SLA targets, the bot is told in each
message's metadata (`peak`) so it keeps to its templated flows, and the console and
dashboard show the banner. Each process reads the switch at most every
REFRESH_SECONDS, and at once after a change it made itself."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Optional

import sqlalchemy as sa

from actions.policy import PeakPolicy
from bot.handoff.store import HandoffStore
from bot.handoff.store import metadata as handoff_metadata
from bot.messaging.records import GatewayRecords
from common.sql import create_tables

REFRESH_SECONDS = 5.0

peak_switch = sa.Table(
    "peak_switch", handoff_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("switched_on", sa.Boolean, nullable=False),
    sa.Column("changed_by", sa.String(64), nullable=False),
    sa.Column("changed_at", sa.Float, nullable=False),
    sa.Column("note", sa.Text, nullable=False, default=""),
)


@dataclass(frozen=True)
class PeakState:
    on: bool
    by_config: bool
    switched_on: bool
    changed_by: Optional[str]
    changed_at: Optional[float]
    note: str
    banner: str

    def as_json(self) -> Dict[str, Any]:
        return asdict(self)


class PeakConfigured(Exception):
    """Switching off is refused while policy/peak.yml keeps peak mode on."""


class PeakMode:
    def __init__(self, policy: PeakPolicy, records: GatewayRecords, store: HandoffStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy, self.records, self.store, self.clock = policy, records, store, clock
        create_tables(handoff_metadata, records.engine, only=[peak_switch])
        self._state: Optional[PeakState] = None
        self._read_at = float("-inf")

    async def state(self) -> PeakState:
        if self._state is None or time.monotonic() - self._read_at >= REFRESH_SECONDS:
            self._state = await self.records.read(self._read)
            self._read_at = time.monotonic()
        return self._state

    async def is_on(self) -> bool:
        return (await self.state()).on

    async def surge_targets(self) -> Optional[Dict[str, int]]:
        """The first-response targets per channel while peak mode is on."""
        return self.policy.first_response_seconds if await self.is_on() else None

    async def switch(self, on: bool, actor: str, note: str) -> PeakState:
        if not on and self.policy.enabled:
            raise PeakConfigured("peak mode is on in policy/peak.yml (enabled: true); "
                                 "set it to false there to leave peak mode")
        await self.records.write(self._write, on, actor, note)
        self._state, self._read_at = await self.records.read(self._read), time.monotonic()
        return self._state

    def _write(self, on: bool, actor: str, note: str) -> None:
        now = self.clock()
        with self.records.engine.begin() as conn:
            conn.execute(peak_switch.delete())
            conn.execute(peak_switch.insert().values(id=1, switched_on=on, changed_by=actor,
                                                     changed_at=now, note=note))
        self.store.audit(actor, "peak_on" if on else "peak_off", None, {"note": note}, now)

    def _read(self) -> PeakState:
        with self.records.engine.connect() as conn:
            row = conn.execute(sa.select(peak_switch)).first()
        switched = bool(row and row.switched_on)
        return PeakState(on=self.policy.enabled or switched, by_config=self.policy.enabled,
                         switched_on=switched, changed_by=row.changed_by if row else None,
                         changed_at=row.changed_at if row else None,
                         note=row.note if row else "", banner=self.policy.banner)
