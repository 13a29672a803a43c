"""SQL engines for every process: SQLite files (the embedded default) kept private and
tuned for one writer and many readers, PostgreSQL with timeouts; tables created once."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Engine


def create_store_engine(url: str) -> Engine:
    if url.startswith("postgres://"):  # the Heroku-style alias SQLAlchemy 1.4 dropped
        url = "postgresql://" + url[len("postgres://"):]
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        if not in_memory:
            keep_private(Path(parsed.database or ""))
        # files: a pool of connections (SQLAlchemy 2.0's default), one thread at a time each
        pool: dict[str, Any] = {} if in_memory else {"poolclass": sa.pool.QueuePool}
        engine = sa.create_engine(url, future=True, **pool, connect_args={
            "timeout": STORE_WAIT_SECONDS, "check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, future=True, pool_pre_ping=True,
                            connect_args=POSTGRESQL_TIMEOUTS)


# A server that does not answer fails a connection attempt after `connect_timeout` s,
# and (libpq's TCP keepalives) a query on a connection whose peer dropped off the
# network within about 25 s, instead of waiting for the kernel's two hours.
POSTGRESQL_TIMEOUTS = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
                       "keepalives_interval": 5, "keepalives_count": 3}
# The longest one call waits on its database before it fails: SQLite's busy timeout;
# on PostgreSQL the connect timeout plus the keepalives' 25 s.
STORE_WAIT_SECONDS = 30


def keep_private(database: Path) -> None:
    """Make a SQLite database file readable by its owner only (0600), creating it empty
    if missing: customers' conversations are in it. SQLite gives the -wal, -shm and
    -journal files it makes the database file's mode; those already there are fixed too."""
    database.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(database, os.O_CREAT | os.O_WRONLY, 0o600))
    for path in (database, *(Path(f"{database}{suffix}") for suffix in SQLITE_SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            path.chmod(0o600)


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")

# any fixed number: the advisory lock every process takes to create tables
SCHEMA_LOCK = 7_415_296


def create_tables(tables: sa.MetaData, engine: Engine,
                  only: Optional[list[sa.Table]] = None) -> None:
    """Create what is missing. Several processes starting at once on PostgreSQL take
    turns, or both would find a table missing and the second would fail creating it."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": SCHEMA_LOCK})
        tables.create_all(connection, tables=only)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across crashes in WAL mode
    # deleted rows are overwritten with zeros, so an erased customer leaves no copy in
    # the file's free space (bot/privacy.py)
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()
