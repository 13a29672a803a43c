"""How the store reaches a customer outside the chat: a one-time code goes to the email
or phone number on the customer's orders, never to the conversation that asked for it.

NOTIFY_URL chooses the way for emails (docs/configuration.md):
- unset: the outbox, `var/outbox.jsonl` (readable by its owner only), for `make run`
  and demos, where there is no mail server: the developer reads the code there, for
  an email or a phone number alike;
- `smtp://user:password@host:587` (STARTTLS when the server offers it) or
  `smtps://...`: email through the store's own mail server, from NOTIFY_FROM.
NOTIFY_SMS_FROM (the store's own number, E.164) sends codes to phone numbers as text
messages through Twilio's Messages API (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN,
TWILIO_API_BASE_URL, the SMS channel's credentials). With a mail server and no
NOTIFY_SMS_FROM, a phone number on file is not sent a code."""
from __future__ import annotations

import json
import os
import smtplib
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Optional, Protocol, Sequence
from urllib.parse import unquote, urlsplit

import requests

from common.paths import var_dir

SEND_TIMEOUT_SECONDS = 10


class NotSent(Exception):
    """The way refused or could not take the message (a mail server or SMS API down)."""


def is_email(contact: str) -> bool:
    return "@" in contact


def is_phone(contact: str) -> bool:
    """An E.164 number, as actions.identity.normalize_contact writes phone numbers."""
    return contact.startswith("+") and contact[1:].isdigit()


class Notifier(Protocol):
    def reaches(self, contact: str) -> bool:
        """Whether this way can reach the contact (an email or an E.164 number)."""
        ...

    def send(self, to: str, subject: str, text: str) -> None: ...


class Outbox:
    """Messages kept as JSON lines in a file only its owner can read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def reaches(self, contact: str) -> bool:
        return is_email(contact) or is_phone(contact)

    def send(self, to: str, subject: str, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8") as outbox:
            outbox.write(json.dumps({"to": to, "subject": subject, "text": text,
                                     "at": time.time()}) + "\n")


class Smtp:
    """Email through a mail server (smtplib)."""

    def __init__(self, url: str, sender: str) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme == "smtps"
        self.host, self.port = parts.hostname or "localhost", parts.port or (
            465 if self.tls else 587)
        self.user, self.password = unquote(parts.username or ""), unquote(parts.password or "")
        self.sender = sender

    def reaches(self, contact: str) -> bool:
        return is_email(contact)

    def send(self, to: str, subject: str, text: str) -> None:
        try:
            self._send(to, subject, text)
        except (OSError, smtplib.SMTPException) as error:
            raise NotSent(f"mail server: {type(error).__name__}") from error

    def _send(self, to: str, subject: str, text: str) -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, to, subject
        message.set_content(text)
        connect = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
        with connect(self.host, self.port, timeout=SEND_TIMEOUT_SECONDS) as server:
            server.ehlo()
            if not self.tls and server.has_extn("starttls"):
                server.starttls()
                server.ehlo()
            if self.user:
                server.login(self.user, self.password)
            server.send_message(message)


@dataclass(frozen=True)
class TwilioSms:
    """Text messages from the store's own number through Twilio's Messages API."""

    account_sid: str
    auth_token: str
    sender: str
    base_url: str = "https://api.twilio.com"

    def reaches(self, contact: str) -> bool:
        return is_phone(contact)

    def send(self, to: str, subject: str, text: str) -> None:
        """An SMS has no subject: the text says what the code is for."""
        url = f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        try:
            answer = requests.post(url, data={"To": to, "From": self.sender, "Body": text},
                                   auth=(self.account_sid, self.auth_token),
                                   timeout=SEND_TIMEOUT_SECONDS)
        except requests.RequestException as error:
            raise NotSent(f"Twilio: {type(error).__name__}") from error
        if not answer.ok:
            raise NotSent(f"Twilio answered {answer.status_code}")


@dataclass(frozen=True)
class Ways:
    """Every way the store has; a message goes by the first that reaches its contact."""

    ways: Sequence[Notifier]

    def reaches(self, contact: str) -> bool:
        return self._way(contact) is not None

    def send(self, to: str, subject: str, text: str) -> None:
        way = self._way(to)
        if way is None:
            raise NotSent("no way reaches this contact")
        way.send(to, subject, text)

    def _way(self, contact: str) -> Optional[Notifier]:
        return next((way for way in self.ways if way.reaches(contact)), None)


def outbox_path() -> Path:
    """var/outbox.jsonl (VAR_DIR)."""
    return var_dir() / "outbox.jsonl"


def notifier_from_env() -> Notifier:
    """The SMS way first (when NOTIFY_SMS_FROM is set), then the email way."""
    sms = sms_from_env()
    email = email_from_env()
    return Ways((sms, email)) if sms else email


def email_from_env() -> Notifier:
    url = os.environ.get("NOTIFY_URL", "")
    if not url:
        return Outbox(outbox_path())
    if urlsplit(url).scheme not in ("smtp", "smtps"):
        raise ValueError("NOTIFY_URL must be smtp://... or smtps://... (or unset: the outbox)")
    return Smtp(url, os.environ.get("NOTIFY_FROM") or f"no-reply@{urlsplit(url).hostname}")


def sms_from_env() -> Optional[TwilioSms]:
    sender = os.environ.get("NOTIFY_SMS_FROM", "")
    if not sender:
        return None
    if not is_phone(sender):
        raise ValueError("NOTIFY_SMS_FROM must be the store's number in E.164, like +14155550100")
    sid, token = os.environ.get("TWILIO_ACCOUNT_SID", ""), os.environ.get("TWILIO_AUTH_TOKEN", "")
    if not (sid and token):
        raise ValueError("NOTIFY_SMS_FROM sends codes through Twilio: set TWILIO_ACCOUNT_SID "
                         "and TWILIO_AUTH_TOKEN")
    return TwilioSms(sid, token, sender,
                     os.environ.get("TWILIO_API_BASE_URL", "https://api.twilio.com").rstrip("/"))
