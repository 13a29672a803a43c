"""The helpdesk policy (policy/helpdesk.yml): how queues map onto an external
helpdesk's teams, checked against escalation.yml's teams and handoff.yml's
dispositions."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from actions.policy import EscalationPolicy
from bot.handoff.policy import HandoffPolicy
from common.policy_files import PolicyError, StrictModel, parse_yaml_model, policy_dir
from common.pydantic_v1 import confloat, conint, constr

TeamId = conint(ge=1)


class ChatwootPolicy(StrictModel):
    teams: Dict[str, TeamId]  # type: ignore[valid-type]
    resolved_disposition: str
    retry_seconds: confloat(gt=0) = 30.0  # type: ignore[valid-type]


Priority = conint(ge=1, le=4)  # Freshdesk's: 1 Low, 2 Medium, 3 High, 4 Urgent
Tier = conint(ge=1, le=3)


class FreshdeskPolicy(StrictModel):
    groups: Dict[str, TeamId]  # type: ignore[valid-type]
    priorities: Dict[Tier, Priority]  # type: ignore[valid-type]
    tags: List[constr(strip_whitespace=True, min_length=1, max_length=32)] = []  # type: ignore[valid-type]
    requester_phone: bool = True
    resolved_disposition: str
    retry_seconds: confloat(gt=0) = 30.0  # type: ignore[valid-type]


# a Zendesk tag: Zendesk keeps them lower case, without spaces
ZendeskTag = constr(regex=r"^[a-z0-9_\-:/.]{1,80}$")
# what the handoff can fill in a custom ticket field (dataCapture.ticketField.<id>)
TICKET_FIELD_VALUES = ("handoff", "reason", "rule", "tier", "queue", "order", "channel")


class ZendeskPolicy(StrictModel):
    # the tag a queue's tickets get; a Zendesk trigger routes on it to the group
    queue_tags: Dict[str, ZendeskTag]  # type: ignore[valid-type]
    # the tag a tier's tickets get; a Zendesk trigger sets the priority from it
    tier_tags: Dict[Tier, ZendeskTag]  # type: ignore[valid-type]
    tags: List[ZendeskTag] = []  # type: ignore[valid-type]
    # custom ticket fields to fill: what (one of TICKET_FIELD_VALUES) and the field's id
    ticket_fields: Dict[str, TeamId] = {}  # type: ignore[valid-type]
    resolved_disposition: str
    retry_seconds: confloat(gt=0) = 30.0  # type: ignore[valid-type]


class HelpdeskPolicy(StrictModel):
    version: conint(ge=1, le=1)  # type: ignore[valid-type]
    chatwoot: Optional[ChatwootPolicy] = None
    freshdesk: Optional[FreshdeskPolicy] = None
    zendesk: Optional[ZendeskPolicy] = None


def load_helpdesk_policy(escalation: EscalationPolicy, handoff: HandoffPolicy,
                         directory: Optional[Path] = None) -> HelpdeskPolicy:
    path = (directory or policy_dir()) / "helpdesk.yml"
    policy = parse_yaml_model(HelpdeskPolicy, path)
    if policy.chatwoot is not None:
        _check_chatwoot(policy.chatwoot, escalation, handoff, path)
    if policy.freshdesk is not None:
        _check_freshdesk(policy.freshdesk, escalation, handoff, path)
    if policy.zendesk is not None:
        _check_zendesk(policy.zendesk, escalation, handoff, path)
    return policy


def _check_chatwoot(chatwoot: ChatwootPolicy, escalation: EscalationPolicy,
                    handoff: HandoffPolicy, path: Path) -> None:
    queues = list(escalation.teams)
    unknown = [q for q in chatwoot.teams if q not in queues]
    if unknown:
        raise PolicyError(f"{path}: chatwoot.teams.{unknown[0]}: not a team of escalation.yml "
                          f"({', '.join(queues)})")
    missing = [q for q in queues if q not in chatwoot.teams]
    if missing:
        raise PolicyError(f"{path}: chatwoot.teams: no Chatwoot team for the queue "
                          f"{missing[0]!r}; every team of escalation.yml needs one")
    if chatwoot.resolved_disposition not in handoff.dispositions:
        raise PolicyError(f"{path}: chatwoot.resolved_disposition: "
                          f"{chatwoot.resolved_disposition!r} is not a disposition of "
                          f"handoff.yml ({', '.join(handoff.dispositions)})")


def _check_freshdesk(freshdesk: FreshdeskPolicy, escalation: EscalationPolicy,
                     handoff: HandoffPolicy, path: Path) -> None:
    queues = list(escalation.teams)
    unknown = [q for q in freshdesk.groups if q not in queues]
    if unknown:
        raise PolicyError(f"{path}: freshdesk.groups.{unknown[0]}: not a team of "
                          f"escalation.yml ({', '.join(queues)})")
    missing = [q for q in queues if q not in freshdesk.groups]
    if missing:
        raise PolicyError(f"{path}: freshdesk.groups: no Freshdesk group for the queue "
                          f"{missing[0]!r}; every team of escalation.yml needs one")
    tiers = [t for t in (1, 2, 3) if t not in freshdesk.priorities]
    if tiers:
        raise PolicyError(f"{path}: freshdesk.priorities: no priority for tier {tiers[0]}; "
                          "tiers 1, 2 and 3 each need one (1 Low to 4 Urgent)")
    if freshdesk.resolved_disposition not in handoff.dispositions:
        raise PolicyError(f"{path}: freshdesk.resolved_disposition: "
                          f"{freshdesk.resolved_disposition!r} is not a disposition of "
                          f"handoff.yml ({', '.join(handoff.dispositions)})")


def _check_zendesk(zendesk: ZendeskPolicy, escalation: EscalationPolicy,
                   handoff: HandoffPolicy, path: Path) -> None:
    queues = list(escalation.teams)
    unknown = [q for q in zendesk.queue_tags if q not in queues]
    if unknown:
        raise PolicyError(f"{path}: zendesk.queue_tags.{unknown[0]}: not a team of "
                          f"escalation.yml ({', '.join(queues)})")
    missing = [q for q in queues if q not in zendesk.queue_tags]
    if missing:
        raise PolicyError(f"{path}: zendesk.queue_tags: no tag for the queue {missing[0]!r}; "
                          "every team of escalation.yml needs one")
    tiers = [t for t in (1, 2, 3) if t not in zendesk.tier_tags]
    if tiers:
        raise PolicyError(f"{path}: zendesk.tier_tags: no tag for tier {tiers[0]}; "
                          "tiers 1, 2 and 3 each need one")
    fields = [f for f in zendesk.ticket_fields if f not in TICKET_FIELD_VALUES]
    if fields:
        raise PolicyError(f"{path}: zendesk.ticket_fields.{fields[0]}: not one of "
                          f"{', '.join(TICKET_FIELD_VALUES)}")
    if zendesk.resolved_disposition not in handoff.dispositions:
        raise PolicyError(f"{path}: zendesk.resolved_disposition: "
                          f"{zendesk.resolved_disposition!r} is not a disposition of "
                          f"handoff.yml ({', '.join(handoff.dispositions)})")
