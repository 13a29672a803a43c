"""Times as the APIs and pages show them."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional


def iso(seconds: Optional[float]) -> Optional[str]:
    """Epoch seconds as ISO 8601 in UTC, to the second (`2026-12-03T18:00:00Z`)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds") \
        .replace("+00:00", "Z")
