"""The escalation policy (policy/escalation.yml) and the FAQ knowledge file
(policy/knowledge.yml), loaded and validated once, with errors that name the key."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import (
    Any,
    Dict,
    List,
    Literal,
    NamedTuple,
    Optional,
    Set,
)

import phonenumbers

from common.paths import REPO_ROOT
from common.policy_files import (
    PolicyError,
    StrictModel,
    check_text,
    parse_yaml_model,
    policy_dir,
    read_yaml,
)
from common.pydantic_v1 import Field, root_validator, validator

Remedy = Literal["replacement", "refund", "store_credit"]
REQUIRED_RULES = (
    "customer_request",
    "bot_not_understanding",
    "identity_not_verified",
    "not_eligible",
    "order_change_request",
    "payment_problem",
    "complaint",
    "refund_above_threshold",
    "remedy_above_threshold",
    "not_received_high_value",
    "repeat_contact",
    "stop_the_line_refund_before_return",
    "fraud_address_mismatch",
    "fraud_repeat_claims",
    "chargeback",
    "legal_threat",
    "safety_incident",
    "unclassified_trigger",
    "stop_the_line_empty_box",
    "stop_the_line_shared_address",
    "store_refused",
    "made_by_people",
    "order_on_hold",
    "write_unconfirmed",
    "promise_due",
)
# The claims whose opening promised the customer something by a date (domain.yml
# utter_trace_opened, utter_claim_opened), and the window of `windows` that sets it.
PROMISE_WINDOWS = {"trace": "trace_wait_days", "not_received": "claim_update_days"}
FAQ_TOPICS = (
    "return_policy",
    "delivery_options",
    "delivery_time",
    "payment_methods",
    "cancellation_fee",
    "invoice",
    "account_help",
    "product_question",
)


# what customers write on (a Message.channel): SLA targets are set for each
CHANNELS = ("webchat", "whatsapp", "sms", "telegram", "rest")


def add_business_days(start: datetime, days: int) -> datetime:
    current = start
    while days > 0:
        current += timedelta(days=1)
        if current.weekday() < 5:
            days -= 1
    return current


class Thresholds(StrictModel):
    refund_auto_approve_max: Decimal
    high_value_order: Decimal
    remedy_auto_max: Decimal

    @validator("*")
    def _positive(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value


class Windows(StrictModel):
    # the delivery time the shop promises, counted from the order: a platform's promised
    # date (Shopify and WooCommerce keep none; the demo store keeps one per order)
    delivery_days: int = 5
    return_days: int
    repeat_contact_days: int
    repeat_claims_days: int
    stuck_after_days_without_scan: int
    trace_wait_days: int
    claim_update_days: int

    @validator("*")
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be a whole number of days greater than 0")
        return value


class Limits(StrictModel):
    fallbacks_before_human: int
    prior_claims_for_review: int
    accounts_per_address_for_review: int

    @validator("*")
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value


class Identity(StrictModel):
    """What proves a customer's identity to the bot, for how long, and how many wrong
    proofs a conversation session, a sender and an order get."""

    verification_ttl_minutes: float = Field(30, gt=0)
    default_phone_region: str
    order_number_letter: str = "A"
    failures_window_hours: int
    attempts_per_session: int
    attempts_per_sender: int
    attempts_per_order: int
    slowdown_seconds: float
    orders_listed: int
    code_valid_minutes: float = Field(gt=0)
    code_wrong_tries: int = Field(gt=0)
    codes_per_email_per_hour: int = Field(gt=0)
    codes_per_session: int = Field(gt=0)
    code_subject: str
    code_text: str

    @validator("code_text")
    def _code_placeholders(cls, value: str) -> str:
        return check_text(value, ("code", "minutes"), ("code",))

    @validator("default_phone_region")
    def _known_region(cls, value: str) -> str:
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"'{value}' is not a region code phone numbers know (e.g. US, "
                             "GB, DE)")
        return value

    @validator("order_number_letter")
    def _one_letter(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]", value):
            raise ValueError("must be one capital letter, like A")
        return value

    @validator("failures_window_hours", "attempts_per_session", "attempts_per_sender",
               "attempts_per_order")
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @validator("slowdown_seconds")
    def _short_pause(cls, value: float) -> float:
        # the bot answers within Rasa's turn; the gateway waits 10 s for it
        if not 0 <= value <= 5:
            raise ValueError("must be between 0 and 5 seconds")
        return value

    @validator("orders_listed")
    def _list_size(cls, value: int) -> int:
        if not 1 <= value <= 10:
            raise ValueError("must be from 1 to 10 (a WhatsApp list holds 10)")
        return value


class Refunds(StrictModel):
    days_to_show: int
    # on a platform that asks (WooCommerce's api_refund): whether the bot's refunds move
    # the money through the order's payment gateway, or are only recorded for the shop
    # to pay back by hand
    through_payment_gateway: bool = True


class Writes(StrictModel):
    confirm_within_minutes: float = Field(gt=0)


class OrderCache(StrictModel):
    # how long an order read from a store platform (Shopify, WooCommerce) is kept for the
    # next turns (actions/store/cache.py); 0: every turn reads the platform
    ttl_seconds: int = Field(60, ge=0, le=3600)


class SeveralRequests(StrictModel):
    min_confidence: float = Field(gt=0, lt=1)


class Remedies(StrictModel):
    damaged_item: List[Remedy]
    wrong_item: List[Remedy]
    lost: List[Remedy]

    @validator("*")
    def _not_empty(cls, value: List[str]) -> List[str]:
        if not value:
            raise ValueError("must list at least one remedy")
        return value


class Tier(StrictModel):
    team_reply: str


class Rule(StrictModel):
    reason: str
    tier: int
    team: str
    next_step: str
    # what the customer is told (a response of domain.yml)
    response: str = "utter_escalated"
    # stop the line: the bot makes no write on the order until a person resolves it
    hold_order: bool = False

    @validator("tier")
    def _tier_range(cls, value: int) -> int:
        if value not in (1, 2, 3):
            raise ValueError(f"must be 1, 2 or 3, got {value}")
        return value

    @validator("reason")
    def _reason_code(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", value):
            raise ValueError("must be a snake_case reason code")
        return value


class Trigger(NamedTuple):
    """A trigger phrase found in a message: its rule, and where the phrase is."""

    rule: str
    start: int
    end: int


class EscalationPolicy(StrictModel):
    version: Literal[1]
    currency: str
    thresholds: Thresholds
    windows: Windows
    limits: Limits
    identity: Identity
    writes: Writes
    several_requests: SeveralRequests
    refunds: Refunds
    remedies: Remedies
    order_cache: OrderCache = OrderCache(ttl_seconds=60)
    repeat_contact_issues: List[str]
    trigger_phrases: Dict[str, List[str]]
    trigger_negations: List[str]
    teams: Dict[str, str]
    tiers: Dict[int, Tier]
    rules: Dict[str, Rule]

    @root_validator(skip_on_failure=True)
    def _complete(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        missing = [name for name in REQUIRED_RULES if name not in values["rules"]]
        if missing:
            raise ValueError(f"rules: missing {', '.join(missing)}")
        for name, rule in values["rules"].items():
            if rule.team not in values["teams"]:
                raise ValueError(f"rules.{name}.team: '{rule.team}' is not one of the teams "
                                 f"({', '.join(values['teams'])})")
        if sorted(values["tiers"]) != [1, 2, 3]:
            raise ValueError("tiers: must define exactly tiers 1, 2 and 3")
        for name, phrases in values["trigger_phrases"].items():
            if name not in values["rules"]:
                raise ValueError(f"trigger_phrases.{name}: no rule of that name in rules")
            if not phrases or any(not p.strip() for p in phrases):
                raise ValueError(f"trigger_phrases.{name}: must be a list of non-empty phrases")
        responses = domain_responses()
        for name, rule in values["rules"].items():
            if rule.response not in responses:
                raise ValueError(f"rules.{name}.response: no response '{rule.response}' in "
                                 "domain.yml")
        return values

    def rule(self, name: str) -> Rule:
        return self.rules[name]

    def promised_by(self, claim_kind: str, opened: datetime) -> date:
        """The day the bot promised to act by when it opened a claim of this kind (a
        trace: replace a parcel that has not moved; a not-received claim: an answer):
        what the customer was told, and when the monitor follows it up."""
        days = getattr(self.windows, PROMISE_WINDOWS[claim_kind])
        return add_business_days(opened, days).date()

    def trigger(self, text: str) -> Optional[Trigger]:
        """The first rule (in the file's order) whose trigger phrase the message says
        without a negation just before it in the same clause, and where it says it: "I
        don't want a chargeback" fires nothing, "I will sue" fires legal_threat."""
        text = (text or "").replace("\u2019", "'")
        negations = {word.lower() for word in self.trigger_negations}
        for rule_name, pattern in _trigger_patterns(self).items():
            for found in pattern.finditer(text):
                if not _negated(text[:found.start()], negations):
                    return Trigger(rule_name, found.start(), found.end())
        return None


class Knowledge(StrictModel):
    """FAQ answers, one per topic; `{placeholders}` are filled from the policy."""

    answers: Dict[str, str]

    @validator("answers")
    def _every_topic(cls, value: Dict[str, str]) -> Dict[str, str]:
        missing = [topic for topic in FAQ_TOPICS if not value.get(topic, "").strip()]
        if missing:
            raise ValueError(f"missing answers for {', '.join(missing)}")
        return value

    def answer(self, topic: str, policy: EscalationPolicy) -> str:
        return self.answers[topic].strip().format(**policy_facts(policy))


class PeakTexts(StrictModel):
    busy: str
    self_service: str
    still_need_person: str


class PeakPolicy(StrictModel):
    """Peak mode (policy/peak.yml): surge SLA targets, the reasons the bot keeps to its
    templated flows, and the banner. Whether it is on is decided by the gateway, which
    tells the bot in each message's metadata (`peak`)."""

    enabled: bool
    banner: str
    first_response_seconds: Dict[str, int]
    templated_reasons: List[str]
    self_service_buttons: Dict[str, str]
    texts: PeakTexts

    @validator("first_response_seconds")
    def _every_channel(cls, value: Dict[str, int]) -> Dict[str, int]:
        if sorted(value) != sorted(CHANNELS) or any(v <= 0 for v in value.values()):
            raise ValueError(f"needs exactly the channels {', '.join(CHANNELS)}, each a "
                             "positive number of seconds")
        return value

    @root_validator(skip_on_failure=True)
    def _answerable(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        buttons = values["self_service_buttons"]
        unanswerable = [r for r in values["templated_reasons"]
                        if r not in FAQ_TOPICS and r not in buttons]
        if unanswerable:
            raise ValueError(f"templated_reasons {', '.join(unanswerable)} are neither FAQ "
                             "topics nor have a self_service_buttons entry")
        return values


def policy_facts(policy: EscalationPolicy) -> Dict[str, Any]:
    """The policy values that customer-facing texts may quote."""
    return {
        "currency": policy.currency,
        "return_days": policy.windows.return_days,
        "refund_days": policy.refunds.days_to_show,
        "refund_auto_approve_max": policy.thresholds.refund_auto_approve_max,
    }


# How many words before a trigger phrase a negation cancels it: "I don't want a
# chargeback" (3) but not "I don't know why it caught fire" (4).
NEGATION_REACH_WORDS = 3


def _negated(before: str, negations: Set[str]) -> bool:
    """Whether the clause before a phrase ends in a negation within reach."""
    clause = re.split(r"[.,;:!?]|\bbut\b", before, flags=re.IGNORECASE)[-1]
    words = re.findall(r"[\w']+", clause.lower())[-NEGATION_REACH_WORDS:]
    return any(word in negations or word.endswith("n't") for word in words)


def _trigger_patterns(policy: EscalationPolicy) -> Dict[str, re.Pattern[str]]:
    return {
        rule: re.compile(
            r"\b(?:" + "|".join(re.escape(p.strip()) for p in phrases) + r")\b", re.IGNORECASE
        )
        for rule, phrases in policy.trigger_phrases.items()
    }


def load_policy(directory: Optional[Path] = None) -> EscalationPolicy:
    return parse_yaml_model(EscalationPolicy, (directory or policy_dir()) / "escalation.yml")


def load_knowledge(
    directory: Optional[Path] = None, policy: Optional[EscalationPolicy] = None
) -> Knowledge:
    path = (directory or policy_dir()) / "knowledge.yml"
    knowledge = parse_yaml_model(Knowledge, path)
    facts = policy_facts(policy or load_policy(directory))
    for topic, text in knowledge.answers.items():
        try:
            text.format(**facts)
        except (KeyError, IndexError, ValueError) as error:
            raise PolicyError(f"{path}: answers.{topic}: unknown placeholder {error}") from error
    return knowledge


def domain_intents(domain: Path = REPO_ROOT / "domain.yml") -> List[str]:
    return list(read_yaml(domain)["intents"])


@lru_cache(maxsize=1)
def domain_responses(domain: Path = REPO_ROOT / "domain.yml") -> Set[str]:
    return set(read_yaml(domain)["responses"])


def check_intents(path: Path, named: Any, allowed: Any = ()) -> None:
    """Intents a policy file names must be the domain's (or `allowed`)."""
    unknown = sorted(set(named) - set(domain_intents()) - set(allowed))
    if unknown:
        raise PolicyError(f"{path}: no such intents in domain.yml: {', '.join(unknown)}")


def load_peak_policy(directory: Optional[Path] = None) -> PeakPolicy:
    path = (directory or policy_dir()) / "peak.yml"
    peak = parse_yaml_model(PeakPolicy, path)
    check_intents(path, [*peak.templated_reasons, *peak.self_service_buttons])
    return peak


@lru_cache(maxsize=1)
def current_peak_policy() -> PeakPolicy:
    return load_peak_policy()


@lru_cache(maxsize=1)
def current_policy() -> EscalationPolicy:
    return load_policy()


@lru_cache(maxsize=1)
def current_knowledge() -> Knowledge:
    return load_knowledge(policy=current_policy())
