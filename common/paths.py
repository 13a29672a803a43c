"""Where the project is, and where it keeps its runtime data."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def var_dir() -> Path:
    """VAR_DIR, else var/ in the repository: databases, logs, secrets, the outbox."""
    return Path(os.environ.get("VAR_DIR", REPO_ROOT / "var"))
