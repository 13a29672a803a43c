"""One customer to reach, one attempt, and the run's report."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import (
    Any,
    Dict,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from actions.store.types import (
    Customer,
)
from bot.outreach.policy import NOTHING_DUE, PRODUCT_KIND, PROMISE_KIND, REACHED, MonitorName
from connectors.message import Delivery

# What became of one customer the monitor wanted to message.
Result = Literal[
    "sent",              # the text reached the channel
    "template",          # WhatsApp outside the 24-hour window: the template instead
    "already_messaged",  # this order (alert) and exception were handled before
    "already_handled",   # this promise was handed to a person before
    "no_conversation",   # no conversation of this customer is known
    "opted_out",         # their last conversation opted out (or blocked the bot)
    "with_agent",        # a person has the conversation; the monitor keeps out
    "window_closed",     # WhatsApp via Twilio outside the window: no template there
    "outside_hours",     # outside business hours, nothing is sent
    "blocked",           # the channel refused to send (opted out meanwhile)
    "failed",            # every attempt failed; not tried again (at most once)
    "not_attempted",     # nothing was tried (channel off): tried again next run
]
RESULTS: Tuple[Result, ...] = ("sent", "template", "already_messaged", "already_handled",
                               "no_conversation", "opted_out", "with_agent", "window_closed",
                               "outside_hours", "blocked", "failed", "not_attempted")


@dataclass(frozen=True)
class Target:
    """A customer to message about one subject: the first of `kinds` not claimed yet
    is the message; the other unclaimed ones count as covered by it."""

    subject: str
    kinds: Tuple[str, ...]
    texts: Mapping[str, str]
    customer: Customer
    order_id: str
    sku: str = ""
    # a promise: the handoff (HandoffDesk.follow_up values) opened before the message
    handoff: Optional[Mapping[str, Any]] = None

    @property
    def label(self) -> str:
        if self.kinds[0] == PRODUCT_KIND:
            return f"{self.order_id} {self.sku}".strip()
        if self.kinds[0] == PROMISE_KIND:
            return f"{self.order_id} {self.subject}"
        return self.order_id


@dataclass(frozen=True)
class Attempt:
    label: str  # order id (with the SKU or claim id); never a contact
    kind: str
    result: Result
    handoff: str = ""  # a promise's handoff reference (H-12) once handed over


@dataclass
class RunReport:
    monitor: MonitorName
    at: float
    outside_hours: bool = False
    opens: str = ""  # when outside business hours: "today at 08:00"
    attempts: List[Attempt] = field(default_factory=list)
    lost: List[str] = field(default_factory=list)
    alerts: List[Dict[str, Any]] = field(default_factory=list)
    contacts: Dict[str, int] = field(default_factory=dict)
    nothing_due: Dict[str, List[str]] = field(default_factory=dict)  # promises

    def counts(self) -> Dict[str, int]:
        counted: Dict[str, int] = {result: 0 for result in RESULTS}
        for attempt in self.attempts:
            counted[attempt.result] += 1
        return counted

    def labels(self, result: Result) -> List[str]:
        return [a.label for a in self.attempts if a.result == result]

    def handed_over(self) -> List[str]:
        return [f"{a.label} ({a.handoff})" for a in self.attempts if a.handoff]

    def summary(self) -> str:
        """One line for the log: counts only."""
        counts = ", ".join(f"{result} {n}" for result, n in self.counts().items() if n)
        found = f"{len(self.attempts)} to reach ({counts or 'none'})"
        extra = f"; {len(self.alerts)} new alerts" if self.monitor == "products" else ""
        if self.monitor == "promises":
            found = f"{len(self.attempts)} due ({counts or 'none'}), " \
                    f"{len(self.handed_over())} handed to a person"
            extra = "".join(f"; {NOTHING_DUE[reason]} {len(ids)}"
                            for reason, ids in self.nothing_due.items() if ids)
        hours = (f"; outside business hours (open again {self.opens}), nothing sent"
                 if self.outside_hours else "")
        return f"monitor {self.monitor}: {found}{extra}{hours}"

    def lines(self) -> List[str]:
        """What `bot monitor` prints: counts, then which orders need a look."""
        lines = [self.summary()]
        for alert in self.alerts:
            lines.append(f"ALERT {alert['sku']} ({alert['product']}): {alert['contacts']} "
                         f"conversations in {alert['window_hours']} h "
                         f"(threshold {alert['threshold']})")
        if self.handed_over():
            lines.append(f"handed to a person: {_listed(self.handed_over())}")
        for result, meaning in (PROMISE_NOTED if self.monitor == "promises" else NOTED).items():
            labels = self.labels(result)
            if labels:
                lines.append(f"{meaning}: {_listed(labels)}")
        if self.lost:
            lines.append(f"declared lost by the carrier (left to people): {_listed(self.lost)}")
        return lines


# The results `bot monitor` lists order by order, with what they mean.
NOTED: Dict[Result, str] = {
    "no_conversation": "not messaged, no conversation of the customer is known",
    "opted_out": "not messaged, opted out",
    "with_agent": "not messaged, a person has the conversation",
    "window_closed": "not messaged, WhatsApp via Twilio outside the 24-hour window",
    "failed": "failed, not tried again (bot deliveries --status failed)",
    "not_attempted": "not sent, the channel is off here; tried again next run",
}
# The same for promises: whether a person has it, and whether the customer heard.
PROMISE_NOTED: Dict[Result, str] = {
    "no_conversation": "due, NOT handed over: no conversation of the customer is known "
                       "(a person must take it up; tried again next run)",
    "with_agent": "due, left to the person who has the conversation (handed over once "
                  "they resolve it, unless the promise is kept by then)",
    "opted_out": "handed over, the customer not messaged (opted out)",
    "window_closed": "handed over, the customer not messaged (WhatsApp via Twilio outside "
                     "the 24-hour window)",
    "failed": "handed over, the message to the customer failed",
    "not_attempted": "handed over, the customer not messaged (the channel is off here)",
}


def _listed(labels: Sequence[str], most: int = 30) -> str:
    shown = ", ".join(labels[:most])
    return f"{shown} and {len(labels) - most} more" if len(labels) > most else shown


def outcome(deliveries: Sequence[Delivery]) -> Result:
    if any(d.status in REACHED and not d.template for d in deliveries):
        return "sent"
    if any(d.status in REACHED for d in deliveries):
        return "template"
    if deliveries and all(d.status == "failed" and d.attempts == 0 for d in deliveries):
        return "not_attempted"
    if any(d.status == "blocked" for d in deliveries):
        return "blocked"
    return "failed"
