"""policy/handoff.yml: the shipped file is valid, mistakes are named, SLA targets and
business hours come out as a team lead reads them."""
from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from actions.policy import load_policy
from bot.handoff.policy import HandoffPolicy, describe_opening, describe_wait, load_handoff_policy
from bot.handoff.store import Agent
from common.paths import REPO_ROOT
from common.policy_files import PolicyError

POLICY_DIR = REPO_ROOT / "policy"


@pytest.fixture
def policy() -> HandoffPolicy:
    return load_handoff_policy(load_policy())


def edited(tmp_path: Path, change: dict) -> Path:
    shutil.copytree(POLICY_DIR, tmp_path / "policy")
    path = tmp_path / "policy" / "handoff.yml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(data))
    return tmp_path / "policy"


def test_default_targets_per_channel_and_shorter_for_higher_tiers(policy: HandoffPolicy) -> None:
    assert policy.first_response_seconds("general", "webchat", 1) == 90
    for channel in ("whatsapp", "sms", "telegram"):
        assert policy.first_response_seconds("general", channel, 1) == 15 * 60
    assert policy.first_response_seconds("general", "telegram", 2) < 15 * 60
    assert policy.first_response_seconds("general", "telegram", 3) < \
        policy.first_response_seconds("general", "telegram", 2)


def test_a_queue_target_replaces_the_channel_target(tmp_path: Path) -> None:
    directory = edited(tmp_path, {"sla.queue_first_response_seconds":
                                  {"payments_fraud": {"webchat": 30}}})
    policy = load_handoff_policy(load_policy(directory), directory)
    assert policy.first_response_seconds("payments_fraud", "webchat", 1) == 30
    assert policy.first_response_seconds("general", "webchat", 1) == 90


@pytest.mark.parametrize("change, named", [
    ({"sla.first_response_seconds": {"webchat": 90}}, "sla.first_response_seconds"),
    ({"sla.tier_factor": {1: 1.0, 2: 2.0, 3: 0.5}}, "sla.tier_factor"),
    ({"business_hours.timezone": "Mars/Olympus"}, "business_hours.timezone"),
    ({"business_hours.days": {"mon": "18:00-09:00"}}, "business_hours.days"),
    ({"business_hours.days": {"someday": "09:00-17:00"}}, "business_hours.days"),
    ({"texts.queued": "You are {number} in line"}, "texts.queued"),
    ({"csat.options": ["fine"]}, "csat.options"),
    ({"bot_unavailable": {"queue": "sales", "tier": 1}}, "queue 'sales'"),
    ({"sla.queue_first_response_seconds": {"nobody": {"sms": 10}}}, "queue 'nobody'"),
    ({"agent_token_days": -1}, "agent_token_days"),
    ({"agent_token_days": "a month"}, "agent_token_days"),
    ({"slots_shown_whole": "order_id"}, "slots_shown_whole"),
])
def test_mistakes_are_refused_naming_the_key(tmp_path: Path, change: dict, named: str) -> None:
    directory = edited(tmp_path, change)
    with pytest.raises(PolicyError, match="handoff.yml") as raised:
        load_handoff_policy(load_policy(directory), directory)
    assert named in str(raised.value)


def test_agent_tokens_expire_after_the_policy_days_counted_from_issue(
        policy: HandoffPolicy) -> None:
    days = 86400
    alice = Agent("alice", ("general",), 3, token_issued_at=1000.0)
    assert policy.agent_token_days == 30
    assert not policy.token_expired(alice, 1000.0 + 30 * days - 1)
    assert policy.token_expired(alice, 1000.0 + 30 * days)
    assert not policy.copy(update={"agent_token_days": 0}).token_expired(alice, 1e10)
    assert not policy.token_expired(Agent("admin", ("general",), 0, admin=True), 1e10)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_business_hours_give_the_next_opening(policy: HandoffPolicy) -> None:
    hours = policy.business_hours.copy(update={"days": {
        "mon": "09:00-17:00", "tue": "09:00-17:00", "sat": "10:00-12:00"}})
    monday_noon = utc("2026-11-23T12:00:00")
    assert hours.next_open(monday_noon) == monday_noon
    assert hours.next_open(utc("2026-11-23T07:00:00")) == utc("2026-11-23T09:00:00")
    assert hours.next_open(utc("2026-11-23T17:00:00")) == utc("2026-11-24T09:00:00")
    # Tuesday evening: closed until Saturday morning
    assert hours.next_open(utc("2026-11-24T20:00:00")) == utc("2026-11-28T10:00:00")


def test_business_hours_in_the_store_time_zone(policy: HandoffPolicy) -> None:
    hours = policy.business_hours.copy(update={"timezone": "America/New_York",
                                               "days": {"mon": "09:00-17:00"}})
    # 13:00 UTC on a Monday in November is 08:00 in New York: opens at 14:00 UTC
    assert hours.next_open(utc("2026-11-23T13:00:00")) == utc("2026-11-23T14:00:00")


def test_waits_and_openings_read_naturally() -> None:
    assert describe_wait(20) == "about 1 minute"
    assert describe_wait(61) == "about 2 minutes"
    assert describe_wait(3 * 3600 + 1) == "about 4 hours"
    now = utc("2026-11-23T20:00:00")
    assert describe_opening(utc("2026-11-24T08:00:00"), now, "UTC") == "tomorrow at 08:00"
    assert describe_opening(utc("2026-11-26T08:00:00"), now, "UTC") == "on Thursday at 08:00"
