"""The operations dashboard: the page at /dashboard (agents sign in with their token, as
in the console), its data at GET /api/kpis?days=N and the daily KPIs of every group as
CSV at GET /api/kpis.csv?days=N. Definitions: docs/agents.md."""
from __future__ import annotations

import asyncio
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from datetime import date
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, cast
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy.engine import Engine

from bot.handoff.console import DESK, authenticated, bearer_agent
from bot.handoff.store import Agent
from bot.messaging.records import GatewayRecords
from bot.outreach.products import recent_alerts
from bot.reporting.kpi import (
    DIMENSIONS,
    KpiPolicy,
    Kpis,
    current_kpis,
    daily_csv,
    day_start,
    tracker_engine,
)
from bot.web import error_response
from common.sql import create_store_engine
from common.timefmt import iso

DASHBOARD_DIR = Path(__file__).parent / "dashboard_page"
MAX_DAYS = 366
CACHE_SECONDS = 60.0


class KpiSource:
    """The dashboard's figures. They are computed in a process of their own: reading and
    grouping a month of history takes seconds of CPU that, on a thread, would compete
    with the gateway's event loop for the GIL. Each result is kept for CACHE_SECONDS, and
    requests that arrive while it is computed wait for the same computation."""

    def __init__(self, records: GatewayRecords, gateway_url: str, tracker_url: str,
                 policy: KpiPolicy, zone: ZoneInfo) -> None:
        self.records, self.gateway_url, self.tracker_url = records, gateway_url, tracker_url
        self.policy, self.zone = policy, zone
        self._pool: Optional[ProcessPoolExecutor] = None
        self._cache: Dict[Tuple[str, int], Tuple[float, asyncio.Future[Any]]] = {}

    async def summary(self, days: int) -> Dict[str, Any]:
        summary: Dict[str, Any] = await self._cached("summary", days)
        since = day_start(date.fromisoformat(summary["days"][0]), self.zone)
        alerts = await self.records.read(recent_alerts, self.records.engine, since)
        return {**summary, "product_alerts": alerts}

    async def csv(self, days: int) -> Tuple[str, List[date]]:
        return cast(Tuple[str, List[date]], await self._cached("csv", days))

    async def _cached(self, kind: str, days: int) -> Any:
        now = time.monotonic()
        hit = self._cache.get((kind, days))
        if hit is None or now - hit[0] >= CACHE_SECONDS:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"),
                                                 initializer=_leave_interrupts_to_the_gateway)
            hit = (now, asyncio.get_running_loop().run_in_executor(
                self._pool, compute, kind, self.gateway_url, self.tracker_url, self.policy,
                self.zone.key, days))
            self._cache[(kind, days)] = hit
        try:
            return await asyncio.shield(hit[1])
        except Exception:
            self._cache.pop((kind, days), None)  # the next request tries again
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


# in the KPI process

_ENGINES: Dict[str, Engine] = {}


def _leave_interrupts_to_the_gateway() -> None:
    """Ctrl-C reaches the whole process group; the gateway shuts this process down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _engine(url: str, make: Callable[[str], Optional[Engine]]) -> Optional[Engine]:
    """The process's engines, each made once (the tracker's once Rasa has created it)."""
    if url not in _ENGINES:
        engine = make(url)
        if engine is None:
            return None
        _ENGINES[url] = engine
    return _ENGINES[url]


def compute(kind: str, gateway_url: str, tracker_url: str, policy: KpiPolicy, zone_key: str,
            day_count: int) -> Any:
    """The dashboard's summary, or its CSV and days, as of now."""
    gateway = cast(Engine, _engine(gateway_url, create_store_engine))
    kpis, days = current_kpis(gateway, _engine(tracker_url, tracker_engine), policy,
                              ZoneInfo(zone_key), day_count)
    if kind == "csv":
        return daily_csv(kpis, days), days
    return summary_of(kpis, days)


def summary_of(kpis: Kpis, days: List[date]) -> Dict[str, Any]:
    label = kpis.policy.label
    return {
        "zone": kpis.zone.key, "as_of": iso(kpis.now),
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
        "backlog_ageing": {"buckets": kpis.policy.age_buckets(),
                           "queues": kpis.backlog_ageing()},
        "worst_breaches": [_handoff(h, kpis.now) for h in kpis.worst_breaches()],
        "oldest_open": [_handoff(h, kpis.now) for h in kpis.oldest_open()],
    }


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


async def _close_source(app: web.Application) -> None:
    app[SOURCE].close()


def install_dashboard(app: web.Application, source: KpiSource) -> None:
    """After the agent console, whose tokens it accepts."""
    app[SOURCE] = source
    # aiosignal's generics disagree with aiohttp 3.9's annotation of on_cleanup
    app.on_cleanup.append(_close_source)  # type: ignore[arg-type, unused-ignore]
    app.router.add_get("/api/kpis", kpis_json)
    app.router.add_get("/api/kpis.csv", kpis_csv)
    app.router.add_get("/dashboard", dashboard_page)
    app.router.add_static("/dashboard/", DASHBOARD_DIR)
