"""What a log line may say about a customer: never a full address or message text."""
from __future__ import annotations


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
