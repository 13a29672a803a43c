"""The operations dashboard: the page at /dashboard (agents sign in with their token, as
in the console), its data at GET /api/kpis?days=N and the daily KPIs of every group as
CSV at GET /api/kpis.csv?days=N. Definitions: README "KPIs"."""
from __future__ import annotations

import time
from dataclasses import asdict
from datetime import date
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, cast
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy.engine import Engine

from bot.agent_console import DESK, authenticated, bearer_agent, error_response
from bot.handoff.desk import iso
from bot.handoff.store import Agent
from bot.kpi import (
    DIMENSIONS,
    KpiPolicy,
    Kpis,
    csv_rows,
    current_kpis,
    day_start,
    tracker_engine,
)
from bot.monitor import recent_alerts
from bot.records import GatewayRecords
from bot.settings import REPO_ROOT

DASHBOARD_DIR = REPO_ROOT / "bot" / "static" / "dashboard"
MAX_DAYS = 366
CACHE_SECONDS = 60.0
Result = TypeVar("Result")


class KpiSource:
    """Computes the KPIs on the records' reader threads: reading a month of history
    and grouping it is too slow for the event loop."""

    def __init__(self, records: GatewayRecords, tracker_url: str, policy: KpiPolicy,
                 zone: ZoneInfo) -> None:
        self.records, self.tracker_url, self.policy, self.zone = (
            records, tracker_url, policy, zone)
        self._tracker: Optional[Engine] = None
        self._cache: Dict[Tuple[str, int], Tuple[float, Any]] = {}

    def _cached(self, kind: str, days: int, compute: Callable[[int], Result]) -> Result:
        """What was computed less than CACHE_SECONDS ago: every open dashboard asks each
        minute, and a month of history takes seconds to read and group."""
        now = time.monotonic()
        hit = self._cache.get((kind, days))
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return cast(Result, hit[1])
        value = compute(days)
        self._cache[(kind, days)] = (now, value)
        return value

    def _kpis(self, days: int) -> Tuple[Kpis, List[date]]:
        if self._tracker is None:  # Rasa creates its store on its first message
            self._tracker = tracker_engine(self.tracker_url)
        return current_kpis(self.records.engine, self._tracker, self.policy, self.zone, days)

    async def summary(self, days: int) -> Dict[str, Any]:
        return await self.records.read(self._cached, "summary", days, self._summary)

    async def csv(self, days: int) -> Tuple[str, List[date]]:
        return await self.records.read(self._cached, "csv", days, self._csv)

    def _summary(self, day_count: int) -> Dict[str, Any]:
        kpis, days = self._kpis(day_count)
        label = self.policy.label
        return {
            "zone": self.zone.key, "as_of": iso(kpis.now),
            "days": [d.isoformat() for d in days],
            "daily": [asdict(r) for r in kpis.daily(days)],
            "period": {dimension: [{**asdict(r), "label": label(r.key)
                                   if dimension == "intent" else r.key}
                                  for r in kpis.period(days, dimension)]
                       for dimension in DIMENSIONS},
            "handoff_reasons": [{"reason": reason, "handoffs": n, "share": share}
                                for reason, n, share in kpis.handoff_reasons(days)],
            "top_reasons": [{"reason": reason, "label": label(reason), "conversations": n}
                            for reason, n in kpis.top_reasons(days)],
            "backlog_ageing": {"buckets": self.policy.age_buckets(),
                               "queues": kpis.backlog_ageing()},
            "worst_breaches": [_handoff(h, kpis.now) for h in kpis.worst_breaches()],
            "oldest_open": [_handoff(h, kpis.now) for h in kpis.oldest_open()],
            "product_alerts": recent_alerts(self.records.engine, day_start(days[0], self.zone)),
        }

    def _csv(self, day_count: int) -> Tuple[str, List[date]]:
        kpis, days = self._kpis(day_count)
        return csv_rows(row for dimension in DIMENSIONS
                        for row in kpis.daily(days, dimension)), days


def _handoff(handoff: Dict[str, Any], now: float) -> Dict[str, Any]:
    return {"id": handoff["id"], "reference": f"H-{handoff['id']}", "queue": handoff["queue"],
            "channel": handoff["channel"], "status": handoff["status"],
            "reason_code": handoff["reason_code"], "created_at": iso(handoff["created_at"]),
            "age_seconds": now - handoff["created_at"],
            "overdue_seconds": handoff.get("overdue_seconds")}


SOURCE = web.AppKey("kpi_source", KpiSource)


def _days(request: web.Request) -> int:
    try:
        days = int(request.query.get("days", "14"))
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_DAYS:
        raise error_response(web.HTTPBadRequest, f"days must be a number from 1 to {MAX_DAYS}")
    return days


@authenticated
async def kpis_json(request: web.Request, agent: Agent) -> Dict[str, Any]:
    summary = await request.app[SOURCE].summary(_days(request))
    peak = request.app[DESK].peak
    return {**summary, "peak": (await peak.state()).as_json() if peak else None}


async def kpis_csv(request: web.Request) -> web.Response:
    await bearer_agent(request)
    text, days = await request.app[SOURCE].csv(_days(request))
    name = f"kpis-{days[0].isoformat()}-{days[-1].isoformat()}.csv"
    return web.Response(text=text, content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def dashboard_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(DASHBOARD_DIR / "index.html")


def install_dashboard(app: web.Application, source: KpiSource) -> None:
    """After the agent console, whose tokens it accepts."""
    app[SOURCE] = source
    app.router.add_get("/api/kpis", kpis_json)
    app.router.add_get("/api/kpis.csv", kpis_csv)
    app.router.add_get("/dashboard", dashboard_page)
    app.router.add_static("/dashboard/", DASHBOARD_DIR)
