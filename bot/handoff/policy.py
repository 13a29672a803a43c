"""Handoff policy (policy/handoff.yml) as typed, validated settings: SLA targets,
business hours, dispositions, CSAT and what the customer is told."""
from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from actions.policy import CHANNELS, EscalationPolicy
from bot.handoff.store import Agent
from common.policy_files import PolicyError, StrictModel, check_text, parse_yaml_model, policy_dir
from common.pydantic_v1 import conint, validator

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOURS = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
PLACEHOLDERS = ("reference", "team", "position", "wait", "opens")


class Sla(StrictModel):
    first_response_seconds: Dict[str, conint(gt=0)]  # type: ignore[valid-type]
    queue_first_response_seconds: Dict[str, Dict[str, conint(gt=0)]] = {}  # type: ignore[valid-type]
    tier_factor: Dict[int, float]

    @validator("first_response_seconds")
    def _every_channel(cls, value: Dict[str, int]) -> Dict[str, int]:
        missing = [c for c in CHANNELS if c not in value]
        unknown = [c for c in value if c not in CHANNELS]
        if missing or unknown:
            raise ValueError(f"needs exactly the channels {', '.join(CHANNELS)}")
        return value

    @validator("tier_factor")
    def _every_tier(cls, value: Dict[int, float]) -> Dict[int, float]:
        if sorted(value) != [1, 2, 3] or any(not 0 < f <= 1 for f in value.values()):
            raise ValueError("needs tiers 1, 2 and 3, each a factor above 0 and at most 1")
        return value


class BusinessHours(StrictModel):
    timezone: str
    days: Dict[str, str]

    @validator("timezone")
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}") from error
        return value

    @validator("days")
    def _hours(cls, value: Dict[str, str]) -> Dict[str, str]:
        for day, hours in value.items():
            if day not in WEEKDAYS:
                raise ValueError(f"{day!r} is not one of {', '.join(WEEKDAYS)}")
            match = HOURS.match(hours)
            if not match or _minutes(match, 1) >= _minutes(match, 3) or _minutes(match, 3) > 1440:
                raise ValueError(f"{day}: {hours!r} is not like '09:00-17:30'")
        return value

    def opening(self, day: str) -> Optional[Tuple[time, time]]:
        hours = self.days.get(day)
        if hours is None:
            return None
        match = HOURS.match(hours)
        assert match  # validated
        return _clock(_minutes(match, 1)), _clock(_minutes(match, 3))

    def next_open(self, now: datetime) -> datetime:
        """`now` when open, else the next opening (UTC); `now` when never open."""
        zone = ZoneInfo(self.timezone)
        local = now.astimezone(zone)
        for offset in range(8):
            day = local.date() + timedelta(days=offset)
            opening = self.opening(WEEKDAYS[day.weekday()])
            if opening is None:
                continue
            start = datetime.combine(day, opening[0], zone)
            end = datetime.combine(day, opening[1], zone) if opening[1] != time.max else \
                datetime.combine(day + timedelta(days=1), time(0), zone)
            if local < end:
                return max(now, start.astimezone(timezone.utc))
        return now


def _minutes(match: re.Match[str], group: int) -> int:
    return int(match.group(group)) * 60 + int(match.group(group + 1))


def _clock(minutes: int) -> time:
    return time.max if minutes == 1440 else time(minutes // 60, minutes % 60)


class QueueTier(StrictModel):
    queue: str
    tier: conint(ge=1, le=3)  # type: ignore[valid-type]


class WaitEstimate(StrictModel):
    sample: conint(ge=1)  # type: ignore[valid-type]
    min_sample: conint(ge=1)  # type: ignore[valid-type]


class Csat(StrictModel):
    answer_within_hours: conint(gt=0)  # type: ignore[valid-type]
    options: List[str]

    @validator("options")
    def _scale(cls, value: List[str]) -> List[str]:
        if not 2 <= len(value) <= 10 or any(not 0 < len(o) <= 20 for o in value):
            raise ValueError("needs 2 to 10 options of at most 20 characters")
        return value


class Texts(StrictModel):
    queued: str
    queued_after_hours: str
    still_waiting: str
    handback: str
    csat_question: str
    csat_thanks: str

    @validator("*")
    def _known_placeholders(cls, value: str) -> str:
        return check_text(value, PLACEHOLDERS)


class HandoffPolicy(StrictModel):
    version: conint(ge=1, le=1)  # type: ignore[valid-type]
    sla: Sla
    business_hours: BusinessHours
    bot_unavailable: QueueTier
    wait_estimate: WaitEstimate
    still_waiting_every_seconds: conint(ge=0)  # type: ignore[valid-type]
    default_capacity: conint(ge=1)  # type: ignore[valid-type]
    # defaults, so a policy directory written before these keys still loads
    agent_token_days: conint(ge=0) = 30  # type: ignore[valid-type]
    slots_shown_whole: List[str] = ["order_id", "request", "remedy", "next_request"]
    dispositions: List[str]
    csat: Csat
    texts: Texts

    def token_expired(self, agent: Agent, now: float) -> bool:
        """Whether the agent's token is past `agent_token_days` (0: tokens never expire;
        the admin token has no issue time and never expires)."""
        issued = agent.token_issued_at
        days = self.agent_token_days
        return bool(days) and issued is not None and now >= issued + days * 86400

    def first_response_seconds(self, queue: str, channel: str, tier: int,
                               surge: Optional[Mapping[str, int]] = None) -> float:
        """The target of a new handoff; `surge`: peak mode's targets per channel, which
        replace the channel's and queue's own."""
        by_channel = {**self.sla.first_response_seconds,
                      **self.sla.queue_first_response_seconds.get(queue, {})}
        if surge is not None:
            by_channel = dict(surge)
        base = by_channel.get(channel, max(by_channel.values()))
        return base * self.sla.tier_factor[tier]

    def check_queues(self, queues: Dict[str, str], path: Path) -> None:
        """Queues named here must be teams of escalation.yml."""
        named = [*self.sla.queue_first_response_seconds, self.bot_unavailable.queue]
        unknown = [q for q in named if q not in queues]
        if unknown:
            raise PolicyError(f"{path}: queue {unknown[0]!r} is not a team of escalation.yml "
                              f"({', '.join(queues)})")


def load_handoff_policy(escalation: EscalationPolicy,
                        directory: Optional[Path] = None) -> HandoffPolicy:
    path = (directory or policy_dir()) / "handoff.yml"
    policy = parse_yaml_model(HandoffPolicy, path)
    policy.check_queues(escalation.teams, path)
    return policy


def describe_wait(seconds: float) -> str:
    """An honest, rounded-up duration a customer can read."""
    minutes = max(1, int(-(-seconds // 60)))
    if minutes < 60:
        return "about 1 minute" if minutes == 1 else f"about {minutes} minutes"
    hours = -(-minutes // 60)
    return "about 1 hour" if hours == 1 else f"about {hours} hours"


def describe_opening(opens: datetime, now: datetime, zone: str) -> str:
    local, today = opens.astimezone(ZoneInfo(zone)), now.astimezone(ZoneInfo(zone)).date()
    if local.date() == today:
        return f"today at {local:%H:%M}"
    if local.date() == today + timedelta(days=1):
        return f"tomorrow at {local:%H:%M}"
    return f"on {local:%A} at {local:%H:%M}"
