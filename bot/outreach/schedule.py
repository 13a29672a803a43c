"""Outreach on a schedule inside the gateway (`bot monitor` runs it once: bot/services.py)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from pathlib import Path
from typing import (
    Dict,
    List,
    Tuple,
)

from actions.store.types import StoreSystems
from bot.outreach.policy import MONITORS, MonitorName, MonitorPolicy
from bot.outreach.run import Outreach
from bot.router import Router

log = logging.getLogger("bot.outreach")


class Monitor:
    """Runs the enabled monitors every `every_minutes`, each in its own task. A failed
    run is logged (without personal data) and the next one comes as planned; `stop`
    lets a run under way finish its sends for up to `grace_seconds`."""

    def __init__(self, outreach: Outreach, first_run_after_seconds: float = 30.0) -> None:
        self.outreach = outreach
        self.first_run_after = first_run_after_seconds
        self._stopping = asyncio.Event()
        self._tasks: List[asyncio.Task[None]] = []
        self.runs: Dict[MonitorName, int] = {name: 0 for name in MONITORS}

    @classmethod
    def for_router(cls, router: Router, shop: StoreSystems,
                   policy: MonitorPolicy) -> Monitor:
        return cls(Outreach.for_router(router, shop, policy))

    def enabled(self) -> List[Tuple[MonitorName, float]]:
        policy = self.outreach.policy
        schedule: List[Tuple[MonitorName, float]] = []
        for name in MONITORS:
            settings = getattr(policy, name)
            if settings.enabled:
                schedule.append((name, settings.every_minutes * 60.0))
        return schedule

    async def start(self) -> None:
        if self._tasks:
            return
        self._stopping.clear()
        for name, every in self.enabled():
            log.info("monitor %s: every %.0f minutes", name, every / 60)
            self._tasks.append(asyncio.create_task(self._every(name, every),
                                                   name=f"monitor-{name}"))

    async def stop(self, grace_seconds: float = 10.0) -> None:
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _every(self, name: MonitorName, seconds: float) -> None:
        if await self._stopped_within(self.first_run_after):
            return
        while True:
            try:
                await self.outreach.run(name)
            except Exception as error:  # a run's failure must not end the schedule
                log.error("monitor %s run failed: %s at %s; next run in %.0f s", name,
                          type(error).__name__, _where(error), seconds)
            self.runs[name] += 1
            if await self._stopped_within(seconds):
                return

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()


def _where(error: BaseException) -> str:
    """Where it was raised: file and line, no values (an SQL error's message can quote
    a phone number)."""
    frames = traceback.extract_tb(error.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
