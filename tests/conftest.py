"""Shared fixtures: the store systems on SQLite and on PostgreSQL, seeded relative to `now`.

A test that takes `store` runs twice, `[sqlite]` and `[postgresql]`. PostgreSQL is
`postgresql://postgres@127.0.0.1:5432/test` or TEST_DATABASE_URL; each test session
works in a private schema of that database, so parallel runs don't collide. When the
server cannot be reached the PostgreSQL variants are skipped, with the reason.
"""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from actions.store.seed import seed_demo_store
from actions.store.sql import Store, open_store

POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def now() -> datetime:
    """The time the demo data is seeded relative to: the wall clock at session start
    (UTC, whole seconds), so code that reads the clock agrees with the seeded dates."""
    return datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """POSTGRES_URL confined to a fresh schema, dropped at the end of the session."""
    schema = f"pytest_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, future=True, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL} ({reason}); start it "
                    "(pg_ctlcluster <version> main start) or set TEST_DATABASE_URL")
    url = sa.engine.make_url(POSTGRES_URL).update_query_dict(
        {"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each backend: a SQLite file in tmp_path, or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(store_url: str, now: datetime) -> Iterator[Store]:
    """The store on an empty schema (dropped and recreated), seeded relative to `now`."""
    opened = open_store(store_url)
    opened.reset_schema()
    seed_demo_store(opened, now)
    yield opened
    opened.close()


REPO_ROOT = Path(__file__).resolve().parent.parent
RASA = REPO_ROOT / ".venv" / "bin" / "rasa"


@pytest.fixture(scope="session")
def trained_model() -> Path:
    """The model for the current data: `rasa train` reuses the newest model when the
    data's fingerprint is unchanged, so the suite trains at most once."""
    import subprocess

    subprocess.run([str(RASA), "train", "--quiet"], cwd=REPO_ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return max((REPO_ROOT / "models").glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
