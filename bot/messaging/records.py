"""What the gateway keeps in SQL: conversations, their transcript, outbound deliveries
with provider statuses, opt-outs, and (without Redis) the inbox with its dedupe keys.

The tables live in GATEWAY_DATABASE_URL, else DATABASE_URL, else var/gateway.db.
Calls are synchronous SQLAlchemy; async code runs them with `write` and `read`, on
worker threads of the records' own. Writes get one thread on SQLite, whose single
writer lock makes competing threads sleep in its busy handler (tens of ms); reads have
their own threads, so a webhook that reads (an opt-out) never queues behind writes.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    cast,
)

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.expression import ClauseElement

from common.sql import create_tables
from connectors.message import (
    Attachment,
    Button,
    Delivery,
    Message,
    Reply,
    StatusUpdate,
    TranscriptTurn,
)

Result = TypeVar("Result")

metadata = sa.MetaData()

conversations = sa.Table(
    "conversations", metadata,
    sa.Column("conversation_id", sa.String(200), primary_key=True),
    sa.Column("connector", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("sender", sa.String(160), nullable=False),
    sa.Column("store_address", sa.String(160), nullable=False, default=""),
    sa.Column("profile_name", sa.String(200), nullable=False, default=""),
    sa.Column("last_inbound_at", sa.Float, nullable=False),
    sa.Column("offered_options", sa.Text, nullable=False, default="[]"),
)

turns = sa.Table(
    "turns", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.String(200), nullable=False, index=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("extras", sa.Text, nullable=False, default="{}"),
    sa.Column("at", sa.Float, nullable=False),
)

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.String(200), nullable=False, index=True),
    sa.Column("connector", sa.String(32), nullable=False),
    sa.Column("provider_message_id", sa.String(200), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("template", sa.String(100), nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

opt_outs = sa.Table(
    "opt_outs", metadata,
    sa.Column("connector", sa.String(32), primary_key=True),
    sa.Column("address", sa.String(160), primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
)

seen_messages = sa.Table(
    "seen_messages", metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)

# Messages acknowledged to a provider and not yet done with, oldest first (bot/messaging/inbox.py):
# without Redis, the inbox itself, until each is processed; with Redis, those it could
# not take while Redis was down, until they are moved there.
inbox_spool = sa.Table(
    "inbox_spool", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)

# The statements every message runs are built once: building one with SQLAlchemy costs
# about twice what running it costs on SQLite (bench/results/gateway.md). Executed with
# a dict of values, an insert or update sets the columns the dict names.
_TOUCH_CONVERSATION = conversations.update().where(
    conversations.c.conversation_id == sa.bindparam("conversation"))
_ADD_TURNS = turns.insert()
_ADD_DELIVERIES = deliveries.insert()
_RENEW_EXPIRED_KEY = seen_messages.update().where(
    seen_messages.c.key == sa.bindparam("claimed"),
    seen_messages.c.expires_at < sa.bindparam("now"))
_UNSPOOL = inbox_spool.delete().where(inbox_spool.c.id == sa.bindparam("spool_id"))
_OPTED_OUT_AT = sa.select(opt_outs.c.at).where(
    opt_outs.c.connector == sa.bindparam("connector"),
    opt_outs.c.address == sa.bindparam("address"))
_CONVERSATION = sa.select(conversations).where(
    conversations.c.conversation_id == sa.bindparam("conversation"))

# Status callbacks can arrive out of order (read before delivered); never go back.
STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}

# What recording a customer's message sets in its conversation
_INBOUND_COLUMNS = ("connector", "channel", "sender", "store_address", "profile_name",
                    "last_inbound_at")


class DriverStatement:
    """A statement compiled once for a dialect and run straight on the DBAPI cursor.

    For the statements on the path of every message to the bot. In the gateway, after
    the pause between a customer's turns, recording a message and reading its handoff
    through SQLAlchemy's execution layer (its connection, events and result objects)
    took 2.6 ms, where SQLite needed about 0.4 ms; this way it takes 0.8 ms
    (bench/results/gateway.md). An insert or update sets the `columns` named."""

    def __init__(self, statement: ClauseElement, dialect: Dialect,
                 columns: Optional[Sequence[str]] = None, returning: bool = False) -> None:
        # compiled for executemany unless it returns rows: SQLAlchemy adds no RETURNING
        compiled = cast(SQLCompiler, statement.compile(
            dialect=dialect, column_keys=columns, for_executemany=not returning))
        self.sql = str(compiled)
        # the parameters in order where the driver's paramstyle is positional
        self.order: Optional[Sequence[str]] = compiled.positiontup
        # values the statement carries itself (a LIMIT, a compared constant)
        self.fixed = {name: bind.value for name, bind in compiled.binds.items()
                      if not bind.required}

    def run(self, cursor: Any, values: Mapping[str, Any]) -> Any:
        params = {**self.fixed, **values}
        cursor.execute(self.sql, params if self.order is None
                       else [params[name] for name in self.order])
        return cursor


@contextlib.contextmanager
def driver_cursor(engine: Engine) -> Iterator[Any]:
    """A DBAPI cursor on a pooled connection, in a transaction committed at the end.
    The driver's errors are raised as SQLAlchemy's (an OperationalError is an outage
    the inbox waits out), and a connection the error shows dead is not pooled again."""
    driver_error = _driver_error(engine)
    try:
        # SQLAlchemy 1.4 wraps a failed connect; 2.0 lets the driver's error through
        connection = engine.raw_connection()
    except driver_error as error:
        raise _sqlalchemy_error(engine, error) from error
    cursor = connection.cursor()
    try:
        yield cursor
        connection.commit()
    except driver_error as error:
        if engine.dialect.is_disconnect(error, connection.dbapi_connection, cursor):
            connection.invalidate(error)
        else:
            with contextlib.suppress(driver_error):
                connection.rollback()
        raise _sqlalchemy_error(engine, error) from error
    finally:
        with contextlib.suppress(driver_error):
            cursor.close()
        connection.close()


def _driver_error(engine: Engine) -> Any:
    """The base class of the driver's errors (DB-API's `Error`)."""
    dbapi = engine.dialect.dbapi
    assert dbapi is not None, "an engine's dialect has its driver loaded"
    return dbapi.Error


def _sqlalchemy_error(engine: Engine, error: Exception) -> sa.exc.StatementError:
    """The driver's error as SQLAlchemy raises it, without the statement or its
    parameters: they hold the customer's words."""
    return sa.exc.DBAPIError.instance(None, None, error, _driver_error(engine),
                                      dialect=engine.dialect)


class GatewayRecords:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(metadata, engine)
        self.inbound_since_purge = 0
        dialect = engine.dialect
        self._claim_key = DriverStatement(
            _insert_ignoring_conflicts(seen_messages, dialect.name), dialect)
        self._renew_expired_key = DriverStatement(_RENEW_EXPIRED_KEY, dialect, ["expires_at"])
        self._touch_conversation = DriverStatement(_TOUCH_CONVERSATION, dialect,
                                                   _INBOUND_COLUMNS)
        self._add_conversation = DriverStatement(
            conversations.insert(), dialect,
            ["conversation_id", "offered_options", *_INBOUND_COLUMNS])
        self._add_customer_turn = DriverStatement(
            _ADD_TURNS, dialect, ["conversation_id", "role", "text", "extras", "at"])
        # the new row's id: SQLite's cursor knows it, PostgreSQL's is asked with RETURNING
        self._spool_returns_id = dialect.name != "sqlite"
        self._spool_message = DriverStatement(
            inbox_spool.insert().returning(inbox_spool.c.id) if self._spool_returns_id
            else inbox_spool.insert(), dialect, ["message", "at"],
            returning=self._spool_returns_id)
        self._unspool_message = DriverStatement(_UNSPOOL, dialect)
        writers = 1 if engine.dialect.name == "sqlite" else 8
        self.writers = ThreadPoolExecutor(writers, thread_name_prefix="records-write")
        self.readers = ThreadPoolExecutor(4, thread_name_prefix="records-read")

    async def write(self, method: Callable[..., Result], *args: Any) -> Result:
        """Run a method that writes, without blocking the event loop."""
        return await _run(self.writers, method, *args)

    async def read(self, method: Callable[..., Result], *args: Any) -> Result:
        """Run a method that only reads, without blocking the event loop."""
        return await _run(self.readers, method, *args)

    def close(self) -> None:
        self.writers.shutdown(wait=True)
        self.readers.shutdown(wait=True)
        self.engine.dispose()

    # conversations and transcript

    def record_inbound(self, message: Message) -> None:
        """Record the message in its conversation."""
        values = {
            "connector": message.connector, "channel": message.channel,
            "sender": message.sender, "store_address": message.store_address,
            "profile_name": message.profile_name, "last_inbound_at": message.received_at,
        }
        with driver_cursor(self.engine) as cursor:
            conversation = message.conversation_id
            if not self._touch_conversation.run(
                    cursor, {"conversation": conversation, **values}).rowcount:
                self._add_conversation.run(cursor, {
                    "conversation_id": conversation, "offered_options": "[]", **values})
            self._add_customer_turn.run(cursor, {
                "conversation_id": conversation, "role": "customer",
                "text": message.text, "at": message.received_at,
                "extras": json.dumps({"attachments": [asdict(a) for a in message.attachments]})})

    def _first_sighting(self, cursor: Any, key: str, ttl_seconds: float) -> bool:
        """Claim a dedupe key; False when it is already held and not expired."""
        now = time.time()
        expires = now + ttl_seconds
        if self._claim_key.run(cursor, {"key": key, "expires_at": expires}).rowcount:
            return True
        return bool(self._renew_expired_key.run(
            cursor, {"claimed": key, "now": now, "expires_at": expires}).rowcount)

    def _purge_expired_keys_now_and_then(self, every: int = 500) -> None:
        self.inbound_since_purge += 1
        if self.inbound_since_purge >= every:
            self.inbound_since_purge = 0
            with self.engine.begin() as db:
                db.execute(seen_messages.delete().where(seen_messages.c.expires_at < time.time()))

    def record_sent(self, conversation_id: str, connector: str, replies: Sequence[Reply],
                    outcomes: Sequence[Delivery], role: str = "bot",
                    handed_over_at: Optional[float] = None) -> None:
        """The replies as transcript turns, and what became of each provider message.

        The turns take the time they were handed to the channel: the customer may read
        and answer them before the channel returns, and that answer must come after."""
        now = time.time()
        at = now if handed_over_at is None else handed_over_at
        turn_rows = [{"conversation_id": conversation_id, "role": role, "text": reply.text,
                      "extras": json.dumps({"buttons": [asdict(b) for b in reply.buttons],
                                            "image_url": reply.image_url}), "at": at}
                     for reply in replies]
        delivery_rows = [{"conversation_id": conversation_id, "connector": connector,
                          "provider_message_id": outcome.provider_message_id,
                          "status": outcome.status, "error": outcome.error,
                          "attempts": outcome.attempts, "template": outcome.template,
                          "created_at": now, "updated_at": now} for outcome in outcomes]
        with self.engine.begin() as db:
            if turn_rows:
                db.execute(_ADD_TURNS, turn_rows)
            if delivery_rows:
                db.execute(_ADD_DELIVERIES, delivery_rows)

    def transcript(self, conversation_id: str) -> List[TranscriptTurn]:
        with self.engine.connect() as db:
            # by time: a customer turn is written when it is processed, which can be
            # after bot replies to earlier messages, but it keeps its arrival time
            rows = db.execute(sa.select(turns).where(turns.c.conversation_id == conversation_id)
                              .order_by(turns.c.at, turns.c.id)).all()
        return [_turn(row) for row in rows]

    def issued_payloads(self, conversation_id: str, recent: int = 10) -> List[str]:
        """The button payloads of the conversation's latest turns that the gateway sent
        (the bot's, an agent's): the only `/intent` texts a customer may send."""
        query = (sa.select(turns.c.extras).where(turns.c.conversation_id == conversation_id,
                                                 turns.c.role != "customer")
                 .order_by(turns.c.at.desc(), turns.c.id.desc()).limit(recent))
        with self.engine.connect() as db:
            extras = [json.loads(row.extras or "{}") for row in db.execute(query)]
        return [button["payload"] for extra in extras for button in extra.get("buttons", [])]

    def conversation(self, conversation_id: str) -> Optional[Dict[str, Any]]:
        with self.engine.connect() as db:
            row = db.execute(_CONVERSATION, {"conversation": conversation_id}).first()
        return dict(row._mapping) if row else None

    def remember_options(self, conversation_id: str, buttons: Sequence[Button]) -> None:
        with self.engine.begin() as db:
            db.execute(_TOUCH_CONVERSATION, {
                "conversation": conversation_id,
                "offered_options": json.dumps([asdict(b) for b in buttons])})

    def offered_options(self, conversation_id: str) -> List[Button]:
        row = self.conversation(conversation_id)
        return [Button(**b) for b in json.loads(row["offered_options"])] if row else []

    # deliveries

    def record_status(self, update: StatusUpdate) -> bool:
        """Apply a provider status to our delivery; False when we never sent it."""
        match = sa.and_(deliveries.c.connector == update.connector,
                        deliveries.c.provider_message_id == update.provider_message_id)
        with self.engine.begin() as db:
            current = db.execute(sa.select(deliveries.c.status).where(match)).scalar()
            if current is None:
                return False
            if STATUS_RANK.get(update.status, 0) > STATUS_RANK.get(current, 0):
                db.execute(deliveries.update().where(match).values(
                    status=update.status, error=update.error, updated_at=update.at))
            return True

    def deliveries(self, status: Optional[str] = None, limit: int = 100) -> List[Dict[str, Any]]:
        query = sa.select(deliveries).order_by(deliveries.c.id.desc()).limit(limit)
        if status:
            query = query.where(deliveries.c.status == status)
        with self.engine.connect() as db:
            return [dict(row._mapping) for row in db.execute(query)]

    # the inbox

    def spool(self, encoded_message: str, dedupe_key: Optional[str] = None,
              dedupe_seconds: float = 0.0) -> Optional[int]:
        """Keep a message; its id, to `unspool` it when done. With a `dedupe_key`, first
        claim that in the same transaction: None, and nothing kept, for a provider's
        retry, and never a key claimed without its message kept."""
        self._purge_expired_keys_now_and_then()
        with driver_cursor(self.engine) as cursor:
            if dedupe_key is not None and not self._first_sighting(
                    cursor, dedupe_key, dedupe_seconds):
                return None
            self._spool_message.run(cursor, {"message": encoded_message, "at": time.time()})
            return int(cursor.fetchone()[0] if self._spool_returns_id else cursor.lastrowid)

    def spooled(self, limit: int, after_id: int = 0) -> List[Tuple[int, str]]:
        """The oldest kept messages after `after_id`, with their ids to `unspool` them."""
        query = sa.select(inbox_spool.c.id, inbox_spool.c.message).where(
            inbox_spool.c.id > after_id).order_by(inbox_spool.c.id).limit(limit)
        with self.engine.connect() as db:
            return [(row.id, row.message) for row in db.execute(query)]

    def unspool(self, spool_id: int) -> None:
        with driver_cursor(self.engine) as cursor:
            self._unspool_message.run(cursor, {"spool_id": spool_id})

    # opt-outs

    def set_opted_out(self, connector: str, address: str, opted_out: bool) -> None:
        key = sa.and_(opt_outs.c.connector == connector, opt_outs.c.address == address)
        with self.engine.begin() as db:
            db.execute(opt_outs.delete().where(key))
            if opted_out:
                db.execute(opt_outs.insert().values(connector=connector, address=address,
                                                    at=time.time()))

    def opted_out_since(self, connector: str, address: str) -> Optional[float]:
        with self.engine.connect() as db:
            at = db.execute(_OPTED_OUT_AT, {"connector": connector, "address": address}).scalar()
            return float(at) if at is not None else None


async def _run(executor: ThreadPoolExecutor, method: Callable[..., Result],
               *args: Any) -> Result:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(method, *args))


def insert_if_absent(db: Connection, table: sa.Table, values: Mapping[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING (SQLite or PostgreSQL): True when inserted."""
    return bool(db.execute(_insert_ignoring_conflicts(table, db.dialect.name), values).rowcount)


@functools.cache
def _insert_ignoring_conflicts(table: sa.Table, dialect: str) -> Insert:
    if dialect == "sqlite":
        return sqlite_insert(table).on_conflict_do_nothing()
    return postgresql_insert(table).on_conflict_do_nothing()


def _turn(row: Any) -> TranscriptTurn:
    extras = json.loads(row.extras or "{}")
    return TranscriptTurn(
        role=row.role, text=row.text, at=row.at,
        buttons=tuple(Button(**b) for b in extras.get("buttons", [])),
        image_url=extras.get("image_url", ""),
        attachments=tuple(Attachment(**a) for a in extras.get("attachments", [])),
    )
