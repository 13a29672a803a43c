"""The weekly review in the terminal (`bot report --days 7`): the KPIs per day, per
channel, contact reason and queue, handoff reasons, the backlog's ageing, the worst SLA
breaches and the oldest open handoffs."""
from __future__ import annotations

from datetime import date, datetime
from typing import List, Optional, Sequence

from bot.reporting.kpi import KpiRow, Kpis

COLUMNS = ("conv", "automated", "handoffs", "handoff %", "1st resp p50", "p90", "SLA met",
           "resolved p50", "p90", "backlog", "repeat", "CSAT", "CSAT resp")


def percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def cells(row: KpiRow) -> List[str]:
    return [str(row.conversations), percent(row.automation_rate), str(row.handoffs),
            percent(row.handoff_rate), duration(row.first_response_p50_s),
            duration(row.first_response_p90_s), percent(row.sla_attainment),
            duration(row.resolution_p50_s), duration(row.resolution_p90_s), str(row.backlog),
            percent(row.repeat_contact_rate),
            "-" if row.csat_average is None else f"{row.csat_average:.1f}",
            percent(row.csat_response_rate)]


def table(title: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return f"{title}\n  (none)\n"
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)
                       for i, (v, w) in enumerate(zip(r, widths, strict=True)))
             for r in [head, *rows]]
    return "\n".join([title, *("  " + line.rstrip() for line in lines)]) + "\n"


def weekly_review(kpis: Kpis, days: Sequence[date]) -> str:
    label = kpis.policy.label
    as_of = datetime.fromtimestamp(kpis.now, kpis.zone).strftime("%Y-%m-%d %H:%M")
    per_day = [[r.day, *cells(r)] for r in kpis.daily(days)]
    per_day += [["whole period", *cells(r)] for r in kpis.period(days)]
    parts = [f"Support review {days[0]}..{days[-1]} ({kpis.zone.key}), as of {as_of}\n",
             table("Per day", ("day", *COLUMNS), per_day)]
    for dimension, title, name in (("channel", "By channel", str),
                                   ("intent", "By contact reason", label),
                                   ("queue", "By queue", str)):
        parts.append(table(f"{title} (whole period)", (dimension, *COLUMNS),
                           [[name(r.key), *cells(r)] for r in kpis.period(days, dimension)]))
    parts.append(table("Handoffs by reason", ("reason", "handoffs", "of conversations"),
                       [[reason, str(n), percent(share)]
                        for reason, n, share in kpis.handoff_reasons(days)]))
    parts.append(table("Top contact reasons", ("reason", "conversations"),
                       [[label(reason), str(n)] for reason, n in kpis.top_reasons(days)]))
    buckets = kpis.policy.age_buckets()
    parts.append(table("Backlog now, by age", ("queue", *buckets),
                       [[queue, *(str(counts[b]) for b in buckets)]
                        for queue, counts in sorted(kpis.backlog_ageing().items())]))
    parts.append(table("Worst SLA breaches", ("handoff", "queue", "channel", "late by", "status"),
                       [[f"H-{h['id']}", h["queue"], h["channel"],
                         duration(h["overdue_seconds"]), h["status"]]
                        for h in kpis.worst_breaches()]))
    parts.append(table("Oldest open handoffs", ("handoff", "queue", "channel", "age", "status"),
                       [[f"H-{h['id']}", h["queue"], h["channel"],
                         duration(kpis.now - h["created_at"]), h["status"]]
                        for h in kpis.oldest_open()]))
    return "\n".join(parts)
