"""What a log line may say about a customer: never a full address or message text."""
from __future__ import annotations

import logging
import re
from typing import Any


def mask(address: str) -> str:
    """'+15551234567' -> '+1******4567'; 'whatsapp:+4915…' keeps its scheme."""
    scheme, _, rest = address.rpartition(":")
    if len(rest) <= 6:
        return f"{scheme}:***" if scheme else "***"
    visible = 4 if len(rest) > 8 else 2
    hidden = rest[:2] + "*" * max(0, len(rest) - 2 - visible) + rest[-visible:]
    return f"{scheme}:{hidden}" if scheme else hidden


def loggable_error(error: object) -> str:
    """A provider error as a log line may carry it: the status and code before the
    first colon. Providers' texts can quote the phone number; records keep them whole."""
    return str(error).split(":", 1)[0]


# What a log line must never carry whole, whoever wrote it (our code masks what it logs;
# this also covers libraries and Rasa): emails, phone numbers (international with +,
# or grouped 3-3-4), and street addresses (a number, words, a street type). An email
# may be URL-encoded (a query string in an HTTP client's log line: "search=a%40b.com").
_EMAIL = re.compile(r"[\w.+-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+\d[\d ().-]{6,}\d|\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b")
_STREET = re.compile(
    r"\b\d{1,5}\s+(?:[A-Za-z]+\s+){1,4}(?:street|st|road|rd|avenue|ave|lane|ln|drive|dr|"
    r"boulevard|blvd|way|court|ct|place|pl|terrace|close|square)\b\.?", re.IGNORECASE)


def redact(text: str) -> str:
    for pattern, label in ((_EMAIL, "[email]"), (_PHONE, "[phone]"), (_STREET, "[address]")):
        text = pattern.sub(label, text)
    return text


def install_log_redaction() -> None:
    """Every log record of this process is redacted as it is made, before any handler
    or formatter sees it (also the traceback's text). Installed once per process: in
    the gateway's CLI, the action server (actions/__init__.py) and Rasa
    (components/__init__.py)."""
    make = logging.getLogRecordFactory()
    if getattr(make, "redacts", False):
        return

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            record.msg, record.args = redact(record.getMessage()), None
        except (TypeError, ValueError):  # a malformed call; logging reports it as usual
            return record
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    redacted_record.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacted_record)
