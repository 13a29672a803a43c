"""The bot's request for a person, as the action server sends it to the gateway: a
custom bot message `{"handoff": HandoffRequest}` among the turn's replies. The gateway
reads it as untrusted JSON (every key may be missing or of another type)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict


class HandoffCustomer(TypedDict):
    name: str
    verified: bool  # the customer proved who they are for `order_id`
    contact: str    # as the customer gave it; the gateway masks it for display


class HandoffSummary(TypedDict):
    what_happened: str
    next: str       # what the person should do
    eta: str        # when the team replies, as the customer was told


class HandoffRequest(TypedDict):
    reason_code: str
    rule: str       # the escalation rule of policy/escalation.yml
    tier: int
    queue: str      # the rule's team
    order_id: Optional[str]
    customer: HandoffCustomer
    summary: HandoffSummary
    slots: Dict[str, Any]
    actions_attempted: List[str]


def is_handoff(custom: Any) -> bool:
    """Whether a custom bot message carries the bot's request for a person."""
    return isinstance(custom, dict) and isinstance(custom.get("handoff"), dict)
