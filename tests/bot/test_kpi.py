"""Every KPI definition (README "KPIs") on constructed histories with known answers:
what a contact is and its reason, containment, repeat contacts, handoff rate, human
first response and SLA attainment, resolution time, backlog and its ageing, CSAT,
days in the teams' time zone, and the groups by channel, intent and queue."""
from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any, Dict, List, Optional, Sequence
from zoneinfo import ZoneInfo

import pytest

from bot.reporting.kpi import (
    CustomerTurn,
    History,
    KpiRow,
    Kpis,
    UserIntent,
    build_history,
    load_kpi_policy,
    percentile,
)
from common.policy_files import PolicyError

POLICY = load_kpi_policy()
UTC = ZoneInfo("UTC")
HOUR, DAY = 3600.0, 86400.0
# Monday 2026-11-02 00:00 UTC; "now" is four weeks later, so every window has passed
T0 = datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp()
LATER = T0 + 28 * DAY


def turns(conversation: str, *hours: float, channel: str = "telegram") -> List[CustomerTurn]:
    return [CustomerTurn(conversation, channel, T0 + h * HOUR) for h in hours]


def said(conversation: str, hour: float, *intents: str) -> List[UserIntent]:
    return [UserIntent(conversation, T0 + hour * HOUR + 1 + n, i) for n, i in enumerate(intents)]


def handoff(id: int, conversation: str, hour: float, *, first: Optional[float] = None,
            resolved: Optional[float] = None, csat: Optional[int] = None,
            due_minutes: float = 15, queue: str = "general",
            reason: str = "customer_request", channel: str = "telegram") -> Dict[str, Any]:
    """Times in minutes after the opening."""
    created = T0 + hour * HOUR
    return {"id": id, "conversation_id": conversation, "channel": channel, "queue": queue,
            "reason_code": reason, "created_at": created,
            "sla_due_at": created + due_minutes * 60,
            "first_response_at": created + first * 60 if first is not None else None,
            "resolved_at": created + resolved * 60 if resolved is not None else None,
            "status": "resolved" if resolved is not None else ("active" if first else "waiting"),
            "csat_score": csat}


def history(customer_turns: Sequence[CustomerTurn], intents: Sequence[UserIntent] = (),
            handoffs: Sequence[Dict[str, Any]] = ()) -> History:
    return build_history(customer_turns, intents, handoffs, POLICY)


def kpis(h: History, now: float = LATER, zone: ZoneInfo = UTC) -> Kpis:
    return Kpis(h, POLICY, zone, now)


def whole(h: History, now: float = LATER, dimension: str = "all",
          days: int = 28) -> Dict[str, KpiRow]:
    first = date(2026, 11, 2)
    period = [date.fromordinal(first.toordinal() + n) for n in range(days)]
    return {row.key: row for row in kpis(h, now).period(period, dimension)}


def test_a_silence_longer_than_the_gap_starts_a_new_contact() -> None:
    h = history(turns("tg:1", 0, 0.5, 1.4, 3.0) + turns("tg:2", 0.2))
    assert [(c.conversation_id, c.start, c.end) for c in h.contacts] == [
        ("tg:1", T0, T0 + 1.4 * HOUR), ("tg:2", T0 + 0.2 * HOUR, T0 + 0.2 * HOUR),
        ("tg:1", T0 + 3 * HOUR, T0 + 3 * HOUR)]


def test_the_reason_is_the_first_intent_that_is_a_reason() -> None:
    h = history(turns("tg:1", 0) + turns("tg:2", 0) + turns("tg:3", 0),
                said("tg:1", 0, "greet", "order_status", "refund_request")
                + said("tg:2", 0, "greet", "human_handoff")
                + said("tg:3", 0, "faq/return_policy"))
    assert {c.conversation_id: c.reason for c in h.contacts} == {
        "tg:1": "order_status", "tg:2": "unstated", "tg:3": "return_policy"}


def test_containment_needs_no_handoff_and_no_return_on_the_same_issue_within_72_hours(
        ) -> None:
    h = history(
        turns("tg:kept", 0) + turns("tg:back", 0, 48) + turns("tg:late", 0, 100)
        + turns("tg:other", 0, 10) + turns("tg:human", 0),
        said("tg:kept", 0, "order_status") + said("tg:back", 0, "order_status")
        + said("tg:back", 48, "order_status") + said("tg:late", 0, "refund_status")
        + said("tg:late", 100, "refund_status") + said("tg:other", 0, "order_status")
        + said("tg:other", 10, "invoice") + said("tg:human", 0, "complaint"),
        [handoff(1, "tg:human", 0, first=5, resolved=30)])
    row = whole(h)["all"]
    # 8 contacts: contained are kept, back's second, late's two, other's two = 6;
    # back's first (came back in 48 h) and human (handed off) are not
    assert row.conversations == 8
    assert row.automation_rate == pytest.approx(6 / 8)
    assert row.handoffs == 1 and row.handoff_rate == pytest.approx(1 / 8)


def test_a_contact_is_not_counted_as_automated_until_its_window_has_passed() -> None:
    h = history(turns("tg:1", 0) + turns("tg:2", 0), said("tg:1", 0, "order_status"),
                [handoff(1, "tg:2", 0)])
    row = whole(h, now=T0 + 24 * HOUR)["all"]
    # tg:1 may still come back; tg:2 was handed off, so it is decided
    assert row.automation_rate == 0.0
    assert whole(h, now=T0 + 73 * HOUR)["all"].automation_rate == pytest.approx(1 / 2)


def test_repeat_contacts_are_the_same_customer_on_the_same_issue_within_7_days() -> None:
    h = history(turns("tg:a", 0, 120) + turns("tg:b", 0, 200) + turns("tg:c", 0, 24)
                + turns("tg:d", 0, 24),
                said("tg:a", 0, "not_received") + said("tg:a", 120, "not_received")
                + said("tg:b", 0, "not_received") + said("tg:b", 200, "not_received")
                + said("tg:c", 0, "invoice") + said("tg:c", 24, "order_status")
                + said("tg:d", 0, "greet") + said("tg:d", 24, "greet"))
    row = whole(h)["all"]
    # only tg:a's first contact: b came back after 8 days, c on another issue, d unstated
    assert row.conversations == 8
    assert row.repeat_contact_rate == pytest.approx(1 / 8)
    # a return after 5 days is a repeat, but no longer counts against containment
    assert row.automation_rate == 1.0


def test_nearest_rank_percentiles() -> None:
    assert percentile([240, 60, 600, 120, 180], 0.5) == 180
    assert percentile([240, 60, 600, 120, 180], 0.9) == 600
    assert percentile([7], 0.9) == 7 and percentile([], 0.5) is None


def test_first_response_sla_attainment_resolution_and_csat() -> None:
    conversations = [f"tg:{n}" for n in range(7)]
    h = history([t for c in conversations for t in turns(c, 0)], [], [
        handoff(1, "tg:0", 0, first=1, resolved=30, csat=5),
        handoff(2, "tg:1", 0, first=2, resolved=90, csat=3),
        handoff(3, "tg:2", 0, first=3, resolved=60),
        handoff(4, "tg:3", 0, first=4),
        handoff(5, "tg:4", 0, first=10, due_minutes=5),  # answered late
        handoff(6, "tg:5", 0),  # never answered, long overdue
        handoff(7, "tg:6", 0, due_minutes=60 * 24 * 40),  # not due yet
    ])
    row = whole(h)["all"]
    assert (row.first_response_p50_s, row.first_response_p90_s) == (180, 600)
    assert row.sla_attainment == pytest.approx(4 / 6)
    assert (row.resolution_p50_s, row.resolution_p90_s) == (3600, 5400)
    assert row.csat_average == 4 and row.csat_response_rate == pytest.approx(2 / 3)
    assert row.backlog == 4  # the ones not resolved, open now


def test_the_backlog_at_each_day_end_and_its_ageing_now() -> None:
    h = history(turns("tg:1", 0) + turns("tg:2", 30) + turns("tg:3", 47),
                [], [handoff(1, "tg:1", 0, first=5, resolved=50 * 60),
                     handoff(2, "tg:2", 30), handoff(3, "tg:3", 47)])
    days = [date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)]
    daily = kpis(h, now=T0 + 47.5 * HOUR).daily(days)
    # 1 is open from Monday 00:00 until Wednesday 02:00; 2 from Tuesday; 3 from 23:00
    assert [r.backlog for r in daily] == [1, 3, 2]
    assert kpis(h, now=T0 + 47.5 * HOUR).backlog_ageing() == {
        "general": {"under 1 h": 1, "1-4 h": 0, "4-24 h": 1, "over 24 h": 0}}


def test_days_are_the_teams_days() -> None:
    # 23:30 UTC on Monday is already Tuesday in Berlin
    h = history(turns("tg:1", 23.5))
    first, second = date(2026, 11, 2), date(2026, 11, 3)
    in_utc = kpis(h).daily([first, second])
    in_berlin = kpis(h, zone=ZoneInfo("Europe/Berlin")).daily([first, second])
    assert [(r.day, r.conversations) for r in in_utc] == [("2026-11-02", 1)]
    assert [(r.day, r.conversations) for r in in_berlin] == [("2026-11-03", 1)]


def test_groups_by_channel_intent_and_queue() -> None:
    h = history(turns("tg:1", 0) + turns("wa:2", 0, channel="whatsapp")
                + turns("wa:3", 0, channel="whatsapp"),
                said("tg:1", 0, "order_status") + said("wa:2", 0, "order_status")
                + said("wa:3", 0, "refund_status"),
                [handoff(1, "wa:3", 0, first=2, queue="returns_refunds", channel="whatsapp",
                         reason="refund_dispute")])
    by_channel = whole(h, dimension="channel")
    assert {k: (r.conversations, r.handoffs) for k, r in by_channel.items()} == {
        "telegram": (1, 0), "whatsapp": (2, 1)}
    by_intent = whole(h, dimension="intent")
    assert {k: (r.conversations, r.handoff_rate) for k, r in by_intent.items()} == {
        "order_status": (2, 0.0), "refund_status": (1, 1.0)}
    by_queue = whole(h, dimension="queue")
    assert {k: (r.conversations, r.handoffs, r.first_response_p50_s)
            for k, r in by_queue.items()} == {"bot": (2, 0, None),
                                              "returns_refunds": (1, 1, 120)}


def test_reasons_breaches_and_the_oldest_open() -> None:
    h = history(turns("tg:1", 0, 2) + turns("tg:2", 1) + turns("tg:3", 5),
                said("tg:1", 0, "order_status") + said("tg:1", 2, "order_status")
                + said("tg:2", 1, "refund_status") + said("tg:3", 5, "order_status"),
                [handoff(1, "tg:1", 2, first=40, reason="customer_request"),
                 handoff(2, "tg:2", 1, reason="fraud_signal"),
                 handoff(3, "tg:3", 5, first=20, resolved=30, reason="customer_request")])
    k, days = kpis(h, now=T0 + 6 * HOUR), [date(2026, 11, 2)]
    assert k.top_reasons(days) == [("order_status", 3), ("refund_status", 1)]
    assert k.handoff_reasons(days) == [("customer_request", 2, 0.5), ("fraud_signal", 1, 0.25)]
    breaches = k.worst_breaches()
    # 2 is 4 h 45 min late and still waiting; 1 was answered 25 min late; 3, 5 min late
    assert [(b["id"], b["overdue_seconds"]) for b in breaches] == [
        (2, 4.75 * HOUR), (1, 25 * 60), (3, 5 * 60)]
    assert [o["id"] for o in k.oldest_open()] == [2, 1]


def test_the_policy_names_only_intents_of_the_domain(tmp_path: Any) -> None:
    (tmp_path / "kpis.yml").write_text(
        "contact_gap_minutes: 60\ncontainment_window_hours: 72\nrepeat_window_days: 7\n"
        "backlog_age_hours: [1, 4]\nnot_reasons: [greet, smalltalk]\n")
    with pytest.raises(PolicyError, match="smalltalk"):
        load_kpi_policy(tmp_path)
    (tmp_path / "kpis.yml").write_text(
        "contact_gap_minutes: 0\ncontainment_window_hours: 72\nrepeat_window_days: 7\n"
        "backlog_age_hours: [4, 1]\nnot_reasons: []\n")
    with pytest.raises(PolicyError, match="contact_gap_minutes.*backlog_age_hours"):
        load_kpi_policy(tmp_path)
