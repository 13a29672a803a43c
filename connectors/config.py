"""Channel policy (policy/channels.yml) as typed, validated settings, and the channel
credentials from the environment. A channel without its credentials is off."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from common.policy_files import StrictModel
from common.pydantic_v1 import confloat, conint
from connectors.outbound import Rate, RetryPolicy


class RetrySettings(StrictModel):
    attempts: conint(ge=1, le=20)  # type: ignore[valid-type]
    base_delay_seconds: confloat(gt=0, le=60)  # type: ignore[valid-type]
    max_delay_seconds: confloat(gt=0, le=600)  # type: ignore[valid-type]

    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.attempts, self.base_delay_seconds, self.max_delay_seconds)


class RateSettings(StrictModel):
    per_second: confloat(gt=0)  # type: ignore[valid-type]
    burst: conint(ge=1)  # type: ignore[valid-type]

    def rate(self) -> Rate:
        return Rate(self.per_second, self.burst)


class Rates(StrictModel):
    twilio_sms_per_sender: RateSettings
    twilio_whatsapp_per_sender: RateSettings
    whatsapp_per_number: RateSettings
    whatsapp_per_recipient: RateSettings
    telegram_per_chat: RateSettings
    telegram_overall: RateSettings


class Template(StrictModel):
    name: str
    language: str


class WhatsAppSettings(StrictModel):
    window_closed_template: Template


class Texts(StrictModel):
    bot_unavailable: str
    too_many_messages: str


class InboundLimit(StrictModel):
    messages: conint(ge=1)  # type: ignore[valid-type]
    per_seconds: confloat(gt=0, le=86400)  # type: ignore[valid-type]


class ChannelPolicy(StrictModel):
    version: conint(ge=1, le=1)  # type: ignore[valid-type]
    retry: RetrySettings
    dedupe_hours: confloat(gt=0)  # type: ignore[valid-type]
    bot_retry_seconds: confloat(ge=0, le=3600)  # type: ignore[valid-type]
    bot_requests_in_flight: conint(ge=1, le=1000)  # type: ignore[valid-type]
    bot_queue_seconds: confloat(gt=0, le=3600)  # type: ignore[valid-type]
    inbound_limit: InboundLimit
    rates: Rates
    whatsapp: WhatsAppSettings
    texts: Texts


@dataclass(frozen=True)
class TwilioCredentials:
    account_sid: str
    auth_token: str
    api_base_url: str


@dataclass(frozen=True)
class WhatsAppCredentials:
    app_secret: str
    verify_token: str
    access_token: str
    phone_number_id: str
    api_base_url: str


@dataclass(frozen=True)
class TelegramCredentials:
    bot_token: str
    secret_token: str
    api_base_url: str


@dataclass(frozen=True)
class ChannelCredentials:
    """Which channels are on, from the environment. None means off, and `missing`
    says which variables would turn each one on."""

    twilio: Optional[TwilioCredentials]
    whatsapp: Optional[WhatsAppCredentials]
    telegram: Optional[TelegramCredentials]
    public_base_url: str

    @staticmethod
    def missing(env: Mapping[str, str]) -> dict[str, list[str]]:
        return {channel: [name for name in names if not env.get(name)]
                for channel, names in REQUIRED.items()}


REQUIRED = {
    "twilio": ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"],
    "whatsapp": ["WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN", "WHATSAPP_ACCESS_TOKEN",
                 "WHATSAPP_PHONE_NUMBER_ID"],
    "telegram": ["TELEGRAM_BOT_TOKEN", "TELEGRAM_SECRET_TOKEN"],
}


def credentials_from_env(env: Mapping[str, str]) -> ChannelCredentials:
    def on(channel: str) -> bool:
        return all(env.get(name) for name in REQUIRED[channel])

    def base(name: str, default: str) -> str:
        return env.get(name, default).rstrip("/")

    return ChannelCredentials(
        twilio=TwilioCredentials(
            env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"],
            base("TWILIO_API_BASE_URL", "https://api.twilio.com"),
        ) if on("twilio") else None,
        whatsapp=WhatsAppCredentials(
            env["WHATSAPP_APP_SECRET"], env["WHATSAPP_VERIFY_TOKEN"],
            env["WHATSAPP_ACCESS_TOKEN"], env["WHATSAPP_PHONE_NUMBER_ID"],
            base("WHATSAPP_API_BASE_URL", "https://graph.facebook.com/v21.0"),
        ) if on("whatsapp") else None,
        telegram=TelegramCredentials(
            env["TELEGRAM_BOT_TOKEN"], env["TELEGRAM_SECRET_TOKEN"],
            base("TELEGRAM_API_BASE_URL", "https://api.telegram.org"),
        ) if on("telegram") else None,
        public_base_url=env.get("PUBLIC_BASE_URL", "").rstrip("/"),
    )
