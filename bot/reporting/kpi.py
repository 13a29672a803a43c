"""Operations KPIs per day and per channel, queue and contact reason, computed from
what the gateway stores (customers' turns, handoffs) and the intents Rasa's tracker
store recorded for the same conversations. docs/agents.md defines each one; the windows
are in policy/kpis.yml.

The computation is pure (lists in, rows out), so every definition is tested on
constructed histories; `load_history` reads those lists from the databases."""
from __future__ import annotations

import bisect
import csv
import io
import logging
import math
import statistics
import time
from collections import defaultdict
from dataclasses import astuple, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from actions.policy import check_intents
from bot.handoff.store import OPEN, handoffs
from bot.messaging.records import conversations, turns
from common.policy_files import StrictModel, parse_yaml_model, policy_dir
from common.pydantic_v1 import conint, validator
from common.sql import create_store_engine

log = logging.getLogger("bot.reporting.kpi")

UNSTATED = "unstated"
DIMENSIONS = ("all", "channel", "intent", "queue")
# The queue of a contact the bot kept to itself.
NO_QUEUE = "bot"


class KpiPolicy(StrictModel):
    contact_gap_minutes: conint(gt=0)  # type: ignore[valid-type]
    containment_window_hours: conint(gt=0)  # type: ignore[valid-type]
    repeat_window_days: conint(gt=0)  # type: ignore[valid-type]
    backlog_age_hours: List[conint(gt=0)]  # type: ignore[valid-type]
    not_reasons: List[str]
    reason_labels: Dict[str, str] = {}

    @validator("backlog_age_hours")
    def _ascending(cls, value: List[int]) -> List[int]:
        if not value or value != sorted(set(value)):
            raise ValueError("needs at least one bound, in ascending order")
        return value

    def label(self, reason: str) -> str:
        return self.reason_labels.get(reason, reason.replace("_", " "))

    def age_buckets(self) -> List[str]:
        bounds = self.backlog_age_hours
        between = [f"{a}-{b} h" for a, b in zip(bounds, bounds[1:], strict=False)]
        return [f"under {bounds[0]} h", *between, f"over {bounds[-1]} h"]


def load_kpi_policy(directory: Optional[Path] = None) -> KpiPolicy:
    path = (directory or policy_dir()) / "kpis.yml"
    policy = parse_yaml_model(KpiPolicy, path)
    check_intents(path, [*policy.not_reasons, *policy.reason_labels], allowed=[UNSTATED])
    return policy


# what the history is made of

@dataclass(frozen=True)
class CustomerTurn:
    conversation_id: str
    channel: str
    at: float


@dataclass(frozen=True)
class UserIntent:
    conversation_id: str
    at: float
    intent: str


@dataclass
class Contact:
    conversation_id: str
    channel: str
    start: float
    end: float
    reason: str = UNSTATED
    handoffs: List[Dict[str, Any]] = field(default_factory=list)
    # the next contact of the same customer on the same issue, if any
    next_same_issue_at: Optional[float] = None

    @property
    def queue(self) -> str:
        return self.handoffs[0]["queue"] if self.handoffs else NO_QUEUE

    def back_within(self, seconds: float) -> bool:
        return (self.next_same_issue_at is not None
                and self.next_same_issue_at - self.end <= seconds)

    def settled(self, seconds: float, now: float) -> bool:
        """Whether a window after it has passed, or the customer is already back."""
        return now - self.end >= seconds or self.back_within(seconds)


@dataclass
class History:
    contacts: List[Contact]
    handoffs: List[Dict[str, Any]]


def _reason(intent: str) -> str:
    """A retrieval intent such as faq/return_policy counts as return_policy."""
    return intent.rsplit("/", 1)[-1]


def build_history(customer_turns: Iterable[CustomerTurn], intents: Iterable[UserIntent],
                  handoff_rows: Iterable[Dict[str, Any]], policy: KpiPolicy) -> History:
    """Contacts from the turns, each with its reason and its handoffs, and the link to
    the customer's next contact on the same issue."""
    by_conversation = _split_contacts(customer_turns, policy.contact_gap_minutes * 60)
    for intent in sorted(intents, key=lambda i: i.at):
        contact = _contact_at(by_conversation.get(intent.conversation_id, []), intent.at)
        reason = _reason(intent.intent)
        if contact is not None and contact.reason == UNSTATED \
                and reason not in policy.not_reasons:
            contact.reason = reason
    rows = sorted(handoff_rows, key=lambda h: h["created_at"])
    for handoff in rows:
        contact = _contact_at(by_conversation.get(handoff["conversation_id"], []),
                              handoff["created_at"])
        if contact is not None:
            contact.handoffs.append(handoff)
    for contacts in by_conversation.values():
        _link_same_issue(contacts)
    every = sorted((c for cs in by_conversation.values() for c in cs), key=lambda c: c.start)
    return History(every, rows)


def _split_contacts(customer_turns: Iterable[CustomerTurn],
                    gap: float) -> Dict[str, List[Contact]]:
    contacts: Dict[str, List[Contact]] = defaultdict(list)
    for turn in sorted(customer_turns, key=lambda t: t.at):
        own = contacts[turn.conversation_id]
        if own and turn.at - own[-1].end <= gap:
            own[-1].end = turn.at
        else:
            own.append(Contact(turn.conversation_id, turn.channel, turn.at, turn.at))
    return contacts


def _contact_at(contacts: List[Contact], at: float) -> Optional[Contact]:
    """The contact under way at that time: the last one started by then."""
    index = bisect.bisect_right(contacts, at, key=lambda c: c.start)
    return contacts[index - 1] if index else None


def _link_same_issue(contacts: List[Contact]) -> None:
    for index, contact in enumerate(contacts):
        if contact.reason == UNSTATED:
            continue  # no stated issue to be the same
        later = (c for c in contacts[index + 1:] if c.reason == contact.reason)
        contact.next_same_issue_at = next((c.start for c in later), None)


# the KPIs

@dataclass
class KpiRow:
    """The KPIs of one day (or of the whole period) for one group."""
    day: str
    dimension: str
    key: str
    conversations: int
    automation_rate: Optional[float]
    handoffs: int
    handoff_rate: Optional[float]
    first_response_p50_s: Optional[float]
    first_response_p90_s: Optional[float]
    sla_attainment: Optional[float]
    resolution_p50_s: Optional[float]
    resolution_p90_s: Optional[float]
    backlog: int
    repeat_contact_rate: Optional[float]
    csat_average: Optional[float]
    csat_response_rate: Optional[float]

    @classmethod
    def columns(cls) -> List[str]:
        return list(cls.__dataclass_fields__)


def percentile(values: Sequence[float], fraction: float) -> Optional[float]:
    """Nearest rank: the smallest value with at least that fraction at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _share(part: int, whole: int) -> Optional[float]:
    return part / whole if whole else None


def kpi_row(day: str, dimension: str, key: str, contacts: Sequence[Contact],
            created: Sequence[Dict[str, Any]], open_at_end: int, policy: KpiPolicy,
            now: float) -> KpiRow:
    """`contacts` started in the group and day; `created`: its handoffs opened then;
    `open_at_end`: its handoffs still open when the day ended."""
    contained_window = policy.containment_window_hours * 3600
    repeat_window = policy.repeat_window_days * 86400
    settled = [c for c in contacts if c.handoffs or c.settled(contained_window, now)]
    contained = [c for c in settled if not c.handoffs and not c.back_within(contained_window)]
    repeat_settled = [c for c in contacts if c.settled(repeat_window, now)]
    answered = [h for h in created if h["first_response_at"] is not None]
    first_responses = [h["first_response_at"] - h["created_at"] for h in answered]
    due = [h for h in created if h["first_response_at"] is not None or h["sla_due_at"] <= now]
    resolved = [h for h in created if h["resolved_at"] is not None]
    resolutions = [h["resolved_at"] - h["created_at"] for h in resolved]
    scores = [h["csat_score"] for h in resolved if h["csat_score"] is not None]
    return KpiRow(
        day=day, dimension=dimension, key=key, conversations=len(contacts),
        automation_rate=_share(len(contained), len(settled)),
        handoffs=len(created),
        handoff_rate=_share(sum(1 for c in contacts if c.handoffs), len(contacts)),
        first_response_p50_s=percentile(first_responses, 0.5),
        first_response_p90_s=percentile(first_responses, 0.9),
        sla_attainment=_share(sum(1 for h in due if _met_sla(h)), len(due)),
        resolution_p50_s=percentile(resolutions, 0.5),
        resolution_p90_s=percentile(resolutions, 0.9),
        backlog=open_at_end,
        repeat_contact_rate=_share(sum(1 for c in repeat_settled if c.back_within(repeat_window)),
                                   len(repeat_settled)),
        csat_average=statistics.fmean(scores) if scores else None,
        csat_response_rate=_share(len(scores), len(resolved)),
    )


def _met_sla(handoff: Dict[str, Any]) -> bool:
    answered = handoff["first_response_at"]
    return answered is not None and answered <= handoff["sla_due_at"]


def _open_at(handoff: Dict[str, Any], moment: float) -> bool:
    resolved = handoff["resolved_at"]
    return handoff["created_at"] < moment and (resolved is None or resolved >= moment)


Grouper = Callable[[Contact], str]
Item = TypeVar("Item")
# Every time zone's offset from UTC is a whole number of quarter hours.
QUARTER_HOUR = 900


def _bucket(items: Iterable[Item], key: Callable[[Item], str]) -> Dict[str, List[Item]]:
    grouped: Dict[str, List[Item]] = defaultdict(list)
    for item in items:
        grouped[key(item)].append(item)
    return grouped


class Kpis:
    """The KPIs of a history, in the teams' time zone, as of `now`."""

    def __init__(self, history: History, policy: KpiPolicy, zone: ZoneInfo,
                 now: float) -> None:
        self.history, self.policy, self.zone, self.now = history, policy, zone, now
        self.contact_of: Dict[int, Contact] = {
            h["id"]: c for c in history.contacts for h in c.handoffs}
        self._days: Dict[int, date] = {}
        self._contacts_by_day: Optional[Dict[date, List[Contact]]] = None
        self._created_by_day: Optional[Dict[date, List[Dict[str, Any]]]] = None
        self._open_by_day: Dict[date, List[Dict[str, Any]]] = {}

    def day_of(self, moment: float) -> date:
        """The teams' day of a moment, looked up once per quarter hour, not per moment."""
        block = int(moment // QUARTER_HOUR)
        day = self._days.get(block)
        if day is None:
            day = self._days[block] = datetime.fromtimestamp(
                block * QUARTER_HOUR, self.zone).date()
        return day

    def day_end(self, day: date) -> float:
        return day_start(day + timedelta(days=1), self.zone)

    def key_of(self, dimension: str) -> Callable[[Dict[str, Any]], str]:
        """The group of a handoff along a dimension."""
        def key(handoff: Dict[str, Any]) -> str:
            if dimension == "all":
                return "all"
            if dimension == "intent":
                contact = self.contact_of.get(handoff["id"])
                return contact.reason if contact else UNSTATED
            return str(handoff[dimension])
        return key

    def contact_key(self, dimension: str) -> Grouper:
        if dimension == "all":
            return lambda contact: "all"
        if dimension == "intent":
            return lambda contact: contact.reason
        if dimension == "queue":
            return lambda contact: contact.queue
        return lambda contact: contact.channel

    def daily(self, days: Sequence[date], dimension: str = "all") -> List[KpiRow]:
        if self._contacts_by_day is None or self._created_by_day is None:
            self._contacts_by_day = self._by_day(self.history.contacts, lambda c: c.start)
            self._created_by_day = self._by_day(self.history.handoffs,
                                                lambda h: h["created_at"])
        rows: List[KpiRow] = []
        for day in days:
            rows += self._grouped(
                day.isoformat(), dimension, self._contacts_by_day.get(day, []),
                self._created_by_day.get(day, []), self._open_at_end(day))
        return rows

    def _open_at_end(self, day: date) -> List[Dict[str, Any]]:
        if day not in self._open_by_day:
            end = self.day_end(day)
            self._open_by_day[day] = [h for h in self.history.handoffs if _open_at(h, end)]
        return self._open_by_day[day]

    def _by_day(self, items: Iterable[Item], moment: Callable[[Item], float]
                ) -> Dict[date, List[Item]]:
        grouped: Dict[date, List[Item]] = defaultdict(list)
        for item in items:
            grouped[self.day_of(moment(item))].append(item)
        return grouped

    def period(self, days: Sequence[date], dimension: str = "all") -> List[KpiRow]:
        """The whole period as one row per group; the backlog is the one open now."""
        return self._grouped(
            f"{days[0].isoformat()}..{days[-1].isoformat()}", dimension,
            [c for c in self.history.contacts if self._within(days, c.start)],
            [h for h in self.history.handoffs if self._within(days, h["created_at"])],
            [h for h in self.history.handoffs if h["status"] in OPEN])

    def _within(self, days: Sequence[date], moment: float) -> bool:
        return days[0] <= self.day_of(moment) <= days[-1]

    def _grouped(self, label: str, dimension: str, contacts: List[Contact],
                 created: List[Dict[str, Any]], still_open: List[Dict[str, Any]]) -> List[KpiRow]:
        by_contact = _bucket(contacts, self.contact_key(dimension))
        handoff_key = self.key_of(dimension)
        by_created, by_open = _bucket(created, handoff_key), _bucket(still_open, handoff_key)
        return [kpi_row(label, dimension, key, by_contact.get(key, []), by_created.get(key, []),
                        len(by_open.get(key, [])), self.policy, self.now)
                for key in sorted({*by_contact, *by_created, *by_open})]

    def handoff_reasons(self, days: Sequence[date]) -> List[Tuple[str, int, Optional[float]]]:
        """(reason code, handoffs, share of the period's conversations), most first."""
        contacts = sum(1 for c in self.history.contacts if self._within(days, c.start))
        counts: Dict[str, int] = defaultdict(int)
        for handoff in self.history.handoffs:
            if self._within(days, handoff["created_at"]):
                counts[handoff["reason_code"]] += 1
        return [(reason, count, _share(count, contacts))
                for reason, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def top_reasons(self, days: Sequence[date]) -> List[Tuple[str, int]]:
        """Contact reasons by how many conversations they brought, most first."""
        counts: Dict[str, int] = defaultdict(int)
        for contact in self.history.contacts:
            if self._within(days, contact.start):
                counts[contact.reason] += 1
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))

    def backlog_ageing(self) -> Dict[str, Dict[str, int]]:
        """Open handoffs now, per queue, counted by age bucket."""
        bounds = [h * 3600 for h in self.policy.backlog_age_hours]
        names = self.policy.age_buckets()
        ageing: Dict[str, Dict[str, int]] = {}
        for handoff in self.history.handoffs:
            if handoff["status"] not in OPEN:
                continue
            age = self.now - handoff["created_at"]
            bucket = names[sum(1 for bound in bounds if age >= bound)]
            counts = ageing.setdefault(handoff["queue"], dict.fromkeys(names, 0))
            counts[bucket] += 1
        return ageing

    def worst_breaches(self, limit: int = 10) -> List[Dict[str, Any]]:
        """Handoffs answered late or not yet past their due time, the latest first."""
        late = []
        for handoff in self.history.handoffs:
            answered = handoff["first_response_at"]
            overdue = (answered if answered is not None else self.now) - handoff["sla_due_at"]
            if overdue > 0 and (answered is not None or handoff["status"] in OPEN):
                late.append({**handoff, "overdue_seconds": overdue})
        return sorted(late, key=lambda h: -h["overdue_seconds"])[:limit]

    def oldest_open(self, limit: int = 10) -> List[Dict[str, Any]]:
        open_now = [h for h in self.history.handoffs if h["status"] in OPEN]
        return sorted(open_now, key=lambda h: h["created_at"])[:limit]


def recent_days(now: float, zone: ZoneInfo, count: int) -> List[date]:
    """The last `count` days up to today, in the teams' time zone, oldest first."""
    today = datetime.fromtimestamp(now, zone).date()
    return [today - timedelta(days=n) for n in reversed(range(count))]


def day_start(day: date, zone: ZoneInfo) -> float:
    return datetime.combine(day, datetime.min.time(), zone).timestamp()


def daily_csv(kpis: Kpis, days: Sequence[date]) -> str:
    """The daily KPIs of every group, as CSV (what `bot report --csv` and the dashboard's
    download give)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(KpiRow.columns())
    for dimension in DIMENSIONS:
        for row in kpis.daily(days, dimension):
            writer.writerow(["" if v is None else v for v in astuple(row)])
    return out.getvalue()


# reading the history

def current_kpis(gateway: Engine, tracker: Optional[Engine], policy: KpiPolicy,
                 zone: ZoneInfo, day_count: int,
                 now: Optional[float] = None) -> Tuple[Kpis, List[date]]:
    """The KPIs of the last `day_count` days, today included."""
    now = time.time() if now is None else now
    days = recent_days(now, zone, day_count)
    history = load_history(gateway, tracker, day_start(days[0], zone), policy)
    return Kpis(history, policy, zone, now), days


def load_history(gateway: Engine, tracker: Optional[Engine], since: float,
                 policy: KpiPolicy) -> History:
    """Everything from `since`, and back to the oldest handoff still open (so the
    backlog and its reasons are complete)."""
    handoff_rows = _handoffs(gateway, since)
    start = min([since] + [h["created_at"] for h in handoff_rows])
    return build_history(_customer_turns(gateway, start),
                         _intents(tracker, start) if tracker is not None else [],
                         handoff_rows, policy)


def _handoffs(engine: Engine, since: float) -> List[Dict[str, Any]]:
    c = handoffs.c
    query = sa.select(c.id, c.conversation_id, c.channel, c.queue, c.reason_code, c.status,
                      c.created_at, c.sla_due_at, c.first_response_at, c.resolved_at,
                      c.csat_score).where(sa.or_(c.created_at >= since, c.status.in_(OPEN)))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def _customer_turns(engine: Engine, since: float) -> List[CustomerTurn]:
    query = (sa.select(turns.c.conversation_id, conversations.c.channel, turns.c.at)
             .join(conversations, conversations.c.conversation_id == turns.c.conversation_id)
             .where(turns.c.role == "customer", turns.c.at >= since))
    with engine.connect() as conn:
        return [CustomerTurn(*row) for row in conn.execute(query)]


def tracker_engine(url: str) -> Optional[Engine]:
    """Rasa's tracker store; None while its SQLite file does not exist yet."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        log.warning("no Rasa tracker store at %s yet: contact reasons are all %s",
                    parsed.database, UNSTATED)
        return None
    return create_store_engine(url)


# Rasa's SQL tracker store keeps every event in this table (rasa/core/tracker_store.py,
# SQLTrackerStore.SQLEvent); the sender id is the gateway's conversation id.
tracker_events = sa.Table(
    "events", sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sender_id", sa.String(255), nullable=False, index=True),
    sa.Column("type_name", sa.String(255), nullable=False),
    sa.Column("timestamp", sa.Float),
    sa.Column("intent_name", sa.String(255)),
    sa.Column("action_name", sa.String(255)),
    sa.Column("data", sa.Text),
)


def _intents(engine: Engine, since: float) -> List[UserIntent]:
    if not sa.inspect(engine).has_table("events"):
        log.warning("no Rasa tracker events yet: contact reasons are all %s", UNSTATED)
        return []
    e = tracker_events.c
    query = sa.select(e.sender_id, e.timestamp, e.intent_name).where(
        e.type_name == "user", e.timestamp >= since, e.intent_name.is_not(None))
    with engine.connect() as conn:
        return [UserIntent(*row) for row in conn.execute(query)]
