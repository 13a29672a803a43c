"""How the store reaches a customer outside the chat: a one-time code goes to the email
on the customer's orders, never to the conversation that asked for it.

NOTIFY_URL chooses the way (docs/configuration.md):
- unset: the outbox, `var/outbox.jsonl` (readable by its owner only), for `make run`
  and demos, where there is no mail server: the developer reads the code there;
- `smtp://user:password@host:587` (STARTTLS when the server offers it) or
  `smtps://...`: email through the store's own mail server, from NOTIFY_FROM.
Neither sends text messages: a phone number on file is not sent a code."""
from __future__ import annotations

import json
import os
import smtplib
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from common.paths import var_dir

SMTP_TIMEOUT_SECONDS = 10


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
        return "@" in contact

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
        return "@" in contact

    def send(self, to: str, subject: str, text: str) -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, to, subject
        message.set_content(text)
        connect = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
        with connect(self.host, self.port, timeout=SMTP_TIMEOUT_SECONDS) as server:
            server.ehlo()
            if not self.tls and server.has_extn("starttls"):
                server.starttls()
                server.ehlo()
            if self.user:
                server.login(self.user, self.password)
            server.send_message(message)


def outbox_path() -> Path:
    """var/outbox.jsonl (VAR_DIR)."""
    return var_dir() / "outbox.jsonl"


def notifier_from_env() -> Notifier:
    url = os.environ.get("NOTIFY_URL", "")
    if not url:
        return Outbox(outbox_path())
    if urlsplit(url).scheme not in ("smtp", "smtps"):
        raise ValueError("NOTIFY_URL must be smtp://... or smtps://... (or unset: the outbox)")
    return Smtp(url, os.environ.get("NOTIFY_FROM") or f"no-reply@{urlsplit(url).hostname}")
