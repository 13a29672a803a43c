"""The outreach policy (policy/monitor.yml) and its vocabulary: what is sent, to whom, when."""
from __future__ import annotations

from pathlib import Path
from typing import (
    Literal,
    Optional,
    Tuple,
)

from actions.store.types import (
    OrderStatus,
)
from common.policy_files import PolicyError, StrictModel, check_text, parse_yaml_model, policy_dir
from common.pydantic_v1 import conint, validator
from connectors.config import ChannelPolicy

MonitorName = Literal["shipments", "products", "promises"]
MONITORS: Tuple[MonitorName, ...] = ("shipments", "products", "promises")
SHIPMENT_PLACEHOLDERS = ("first_name", "order_id", "carrier", "tracking_number",
                         "tracking_url", "promised_date", "eta", "last_scan",
                         "days_without_scan")


BUYER_PLACEHOLDERS = ("first_name", "order_id", "product", "sku")
PROMISE_PLACEHOLDERS = ("first_name", "order_id", "claim_id", "carrier", "tracking_number",
                        "tracking_url", "opened_on", "due", "last_scan")


# An order on hold: the customer hears that a person looks at it, and nothing promised.
ON_HOLD_PLACEHOLDERS = ("first_name", "order_id")
NEXT_STEP_PLACEHOLDERS = (*PROMISE_PLACEHOLDERS, "hold_rule")
# The exceptions of a shipment, most specific first: when both apply, one message.
SHIPMENT_KINDS = ("no_scan", "late")
# monitor_outreach.kind of a delivery exception the carrier reported (a tracking
# webhook: bot/outreach/carriers.py); it covers the shipment kinds that apply then
CARRIER_KIND = "carrier"
# what the carrier's text may name besides the shipment's facts
CARRIER_PLACEHOLDERS = (*SHIPMENT_PLACEHOLDERS, "carrier_status")
PRODUCT_KIND = "product"
# monitor_outreach.kind of a promise handed to a person; its subject is the claim id
PROMISE_KIND = "promise"
PROMISE_RULE = "promise_due"  # policy/escalation.yml
# A promise claimed this long ago whose handoff never opened (the run died in between)
# is claimed again: unlike a message, a promise must not be lost by a crash.
STALE_PROMISE_CLAIM_SECONDS = 600
# Buyers who have (or are about to have) the product; not cancelled or returned orders.
BUYER_STATUSES = (OrderStatus.SHIPPED, OrderStatus.DELIVERED)
PHONE_CONNECTORS = ("whatsapp", "twilio")
REACHED = ("sent", "delivered", "read")


class ShipmentTexts(StrictModel):
    late: str
    no_scan: str
    # the carrier reported a delivery exception (a tracking service's webhook)
    carrier_exception: str

    @validator("late", "no_scan")
    def _placeholders(cls, value: str) -> str:
        return check_text(value, SHIPMENT_PLACEHOLDERS, ("order_id",))

    @validator("carrier_exception")
    def _carrier_placeholders(cls, value: str) -> str:
        return check_text(value, CARRIER_PLACEHOLDERS, ("order_id",))


class ShipmentSettings(StrictModel):
    enabled: bool
    every_minutes: conint(ge=1)  # type: ignore[valid-type]
    late_after_days: conint(ge=1)  # type: ignore[valid-type]
    no_scan_days: conint(ge=1)  # type: ignore[valid-type]
    look_back_days: conint(ge=1)  # type: ignore[valid-type]
    texts: ShipmentTexts


class ProductTexts(StrictModel):
    buyers: str

    @validator("*")
    def _placeholders(cls, value: str) -> str:
        return check_text(value, BUYER_PLACEHOLDERS)


class ProductSettings(StrictModel):
    enabled: bool
    every_minutes: conint(ge=1)  # type: ignore[valid-type]
    # one contact is not a pattern
    threshold: conint(ge=2)  # type: ignore[valid-type]
    window_hours: conint(ge=1, le=24 * 31)  # type: ignore[valid-type]
    message_buyers: bool
    buyers_within_days: conint(ge=1)  # type: ignore[valid-type]
    texts: ProductTexts


class PromiseTexts(StrictModel):
    """What the customer hears when their promise is handed to a person, by claim kind
    (PROMISE_WINDOWS), or when the order is on hold."""

    trace: str
    not_received: str
    on_hold: str

    @validator("trace", "not_received")
    def _placeholders(cls, value: str) -> str:
        return check_text(value, PROMISE_PLACEHOLDERS, ("order_id",))

    @validator("on_hold")
    def _nothing_promised(cls, value: str) -> str:
        return check_text(value, ON_HOLD_PLACEHOLDERS, ("order_id",))


class PromiseNextSteps(StrictModel):
    """The handoff's next step: which promise, and what keeps it."""

    trace: str
    not_received: str
    on_hold: str

    @validator("*")
    def _placeholders(cls, value: str) -> str:
        return check_text(value, NEXT_STEP_PLACEHOLDERS, ("claim_id",))


class PromiseSettings(StrictModel):
    enabled: bool
    every_minutes: conint(ge=1)  # type: ignore[valid-type]
    look_back_days: conint(ge=1)  # type: ignore[valid-type]
    texts: PromiseTexts
    next_steps: PromiseNextSteps


class MonitorPolicy(StrictModel):
    version: Literal[1]
    only_in_business_hours: bool
    whatsapp_window_closed_template: str
    shipments: ShipmentSettings
    products: ProductSettings
    promises: PromiseSettings

    def check_channels(self, channels: ChannelPolicy, path: Path) -> None:
        """Outside WhatsApp's window the connector sends the template of channels.yml;
        naming another one here would promise what is not sent."""
        sent = channels.whatsapp.window_closed_template.name
        if self.whatsapp_window_closed_template != sent:
            raise PolicyError(
                f"{path}: whatsapp_window_closed_template: "
                f"{self.whatsapp_window_closed_template!r} is not the template the WhatsApp "
                f"connector sends outside the 24-hour window ({sent!r}, from "
                "policy/channels.yml whatsapp.window_closed_template); name that one")


def load_monitor_policy(channels: ChannelPolicy,
                        directory: Optional[Path] = None) -> MonitorPolicy:
    path = (directory or policy_dir()) / "monitor.yml"
    policy = parse_yaml_model(MonitorPolicy, path)
    policy.check_channels(channels, path)
    return policy


# Why a promise needs nothing now, as `bot monitor promises` counts them.
NOTHING_DUE = {"not_yet": "not due yet", "moved": "void, the parcel moved",
               "kept": "kept, a replacement or refund exists"}
