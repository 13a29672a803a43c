"""Privacy: everything we hold about one customer, exported or erased in one place, and
nothing kept longer than policy/privacy.yml allows (docs/privacy.md).

A *contact* names the customer as we know them:
- a conversation id as stored, `<connector>:<sender>` (`telegram:4242`,
  `twilio:whatsapp:+14155550101`, `webchat:…`, `rest:…`; anything with a ':' and no
  '@'): that conversation;
- an email or a phone number (read as `identity.default_phone_region` reads it): every
  conversation from that phone (SMS, WhatsApp), every conversation that proved it or
  asked a code for it (Rasa's slots `verified_contact` and `code_sent_to`, the contact
  log, the codes), and the contact log's rows, codes and outbox emails for it.

Where it is held: the gateway's database (conversations, transcript, deliveries,
opt-outs, spooled messages, handoffs with their notes, outreach and product alerts),
the store's database (contact log, one-time codes, and the bot's write audit, whose
conversation is anonymised: the write on the merchant's order stays the merchant's
record), Rasa's tracker store (every event of the conversation) and var/outbox.jsonl.
Who exported, erased or purged is audited with a hash of the contact, never the contact.

On SQLite every connection deletes with `secure_delete` (actions/store/sql.py) and an
erase ends with a checkpoint that empties the write-ahead log: no copy stays in a file.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, FrozenSet, Iterator, List, Optional

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.engine import Connection, Engine

from actions.identity import normalize_contact
from actions.notify import outbox_path
from actions.policy import EscalationPolicy
from actions.store import sql as store_tables
from actions.store.sql import default_url
from bot.handoff import store as handoff_tables
from bot.handoff.chatwoot import links as chatwoot_tables
from bot.handoff.console import authenticated
from bot.handoff.desk import Forbidden, Invalid
from bot.handoff.freshdesk import links as freshdesk_tables
from bot.handoff.store import Agent, HandoffStore
from bot.handoff.zendesk import links as zendesk_tables
from bot.messaging.inbox import decode
from bot.messaging.records import (
    GatewayRecords,
    conversations,
    deliveries,
    inbox_spool,
    opt_outs,
    turns,
)
from bot.messaging.records import metadata as records_metadata
from bot.outreach.directory import sender_phone
from bot.outreach.policy import PHONE_CONNECTORS
from bot.outreach.tables import alerts as monitor_alerts
from bot.outreach.tables import metadata as monitor_metadata
from bot.outreach.tables import outreach as monitor_outreach
from bot.reporting.kpi import tracker_events
from bot.settings import Settings
from bot.web import json_object
from common.policy_files import PolicyError, StrictModel, parse_yaml_model, policy_dir
from common.pydantic_v1 import conint
from common.sql import create_store_engine, create_tables

log = logging.getLogger("bot.privacy")

# what an anonymised conversation id becomes where the row itself stays
ERASED = "erased"
# Rasa's slots that hold an email or phone number the conversation proved or asked a code for
CONTACT_SLOTS = ("verified_contact", "code_sent_to")
DAY = 86400.0


# --- policy/privacy.yml --------------------------------------------------------------------

Days = conint(ge=1)


class RetentionDays(StrictModel):
    """Days each kind of record is kept after its last change."""

    transcripts: Days  # type: ignore[valid-type]
    handoffs: Days  # type: ignore[valid-type]
    contact_log: Days  # type: ignore[valid-type]
    codes: Days  # type: ignore[valid-type]
    trackers: Days  # type: ignore[valid-type]
    outreach: Days  # type: ignore[valid-type]
    outbox: Days  # type: ignore[valid-type]


class PrivacyPolicy(StrictModel):
    retention_days: RetentionDays
    purge_every_minutes: Days  # type: ignore[valid-type]

    def check_windows(self, escalation: EscalationPolicy, path: Path) -> None:
        """The contact log counts repeat contacts and wrong proofs over windows of
        escalation.yml: purging it sooner would silently shorten them."""
        needed = max(escalation.windows.repeat_contact_days,
                     math.ceil(escalation.identity.failures_window_hours / 24))
        if self.retention_days.contact_log < needed:
            raise PolicyError(
                f"{path}: retention_days.contact_log: {self.retention_days.contact_log} days "
                f"is shorter than the windows of escalation.yml that count on it "
                f"(windows.repeat_contact_days, identity.failures_window_hours): at least "
                f"{needed}")


def load_privacy_policy(escalation: EscalationPolicy,
                        directory: Optional[Path] = None) -> PrivacyPolicy:
    path = (directory or policy_dir()) / "privacy.yml"
    policy = parse_yaml_model(PrivacyPolicy, path)
    policy.check_windows(escalation, path)
    return policy


# --- where it is held ------------------------------------------------------------------------

class NotAContact(ValueError):
    """Neither a conversation id, an email nor a phone number."""


@dataclass(frozen=True)
class Holdings:
    """Where customer data is kept: the gateway's database, the store's (contact log,
    codes, write audit), Rasa's tracker store (by URL: its SQLite file appears when Rasa
    first writes) and the outbox file."""

    gateway: Engine
    store: Engine
    tracker_url: str
    outbox: Path

    def create_tables(self) -> None:
        for tables in (records_metadata, handoff_tables.metadata, chatwoot_tables.metadata,
                       freshdesk_tables.metadata, zendesk_tables.metadata, monitor_metadata):
            create_tables(tables, self.gateway)
        create_tables(store_tables.metadata, self.store)

    @contextlib.contextmanager
    def tracker(self) -> Iterator[Optional[Engine]]:
        """Rasa's tracker store, or None while Rasa has stored nothing."""
        url = sa.engine.make_url(self.tracker_url)
        if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
            yield None
            return
        engine = create_store_engine(self.tracker_url)
        try:
            yield engine if sa.inspect(engine).has_table("events") else None
        finally:
            engine.dispose()


@dataclass(frozen=True)
class Subject:
    """Whose data: the contact normalised (an email or E.164 number; '' when a
    conversation id was given) and their conversations."""

    key: str
    conversations: FrozenSet[str]

    @property
    def reference(self) -> str:
        """What the audit log keeps instead of the contact: a SHA-256 of the email or
        number (normalised, so any spelling of it matches) or of the conversation id."""
        named = self.key or min(self.conversations)
        return hashlib.sha256(named.encode()).hexdigest()

    @property
    def log_keys(self) -> List[str]:
        """The contact log's keys for this customer: theirs, and their conversations'
        wrong proofs (actions/identity.py keys them by sender)."""
        return [k for k in (self.key, *(f"sender:{c}" for c in self.conversations)) if k]


class Privacy:
    """Export, erase and purge: the one implementation the CLI, the admin API and the
    gateway's schedule use. Synchronous; the gateway runs it on the records' writer."""

    def __init__(self, holdings: Holdings, policy: PrivacyPolicy, phone_region: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.holdings = holdings
        self.policy = policy
        self.phone_region = phone_region
        self.clock = clock
        self.audit = HandoffStore(holdings.gateway).audit

    def subject(self, contact: str) -> Subject:
        contact = contact.strip()
        if ":" in contact and "@" not in contact:
            return Subject("", frozenset([contact]))
        key = normalize_contact(contact, self.phone_region)
        if key is None:
            raise NotAContact(f"{contact!r} is not a conversation id (connector:sender), "
                              "an email or a phone number")
        found = self._phone_conversations(key) | self._proving_conversations(key)
        return Subject(key, frozenset(found))

    def export(self, contact: str, actor: str) -> Dict[str, Any]:
        """Everything held about the customer, as JSON-ready data."""
        subject = self.subject(contact)
        ids = sorted(subject.conversations)
        h = self.holdings
        with h.gateway.connect() as db:
            held: Dict[str, Any] = {
                "conversations": _rows(db, conversations.select().where(
                    conversations.c.conversation_id.in_(ids))),
                "transcripts": _rows(db, turns.select().where(turns.c.conversation_id.in_(ids))
                                     .order_by(turns.c.at, turns.c.id)),
                "deliveries": _rows(db, deliveries.select().where(
                    deliveries.c.conversation_id.in_(ids))),
                "opt_outs": _rows(db, opt_outs.select().where(self._opt_outs(db, ids))),
                "spooled_messages": [json.loads(m) for _, m in self._spooled(db, ids)],
                "handoffs": _rows(db, handoff_tables.handoffs.select().where(
                    handoff_tables.handoffs.c.conversation_id.in_(ids))),
                "notes": _rows(db, handoff_tables.notes.select().where(
                    handoff_tables.notes.c.handoff_id.in_(self._handoff_ids(db, ids)))),
                # where Chatwoot shows their handoffs (erased there by its own means), and
                # what it has not taken yet
                "chatwoot_conversations": _rows(db, chatwoot_tables.links.select().where(
                    chatwoot_tables.links.c.handoff_id.in_(self._handoff_ids(db, ids)))),
                "chatwoot_held": _rows(db, chatwoot_tables.pending.select().where(
                    chatwoot_tables.pending.c.handoff_id.in_(self._handoff_ids(db, ids)))),
                # the same for Freshdesk's tickets
                "freshdesk_tickets": _rows(db, freshdesk_tables.links.select().where(
                    freshdesk_tables.links.c.handoff_id.in_(self._handoff_ids(db, ids)))),
                "freshdesk_held": _rows(db, freshdesk_tables.pending.select().where(
                    freshdesk_tables.pending.c.handoff_id.in_(self._handoff_ids(db, ids)))),
                # and for Zendesk's (Sunshine Conversations') conversations
                "zendesk_conversations": _rows(db, zendesk_tables.links.select().where(
                    zendesk_tables.links.c.handoff_id.in_(self._handoff_ids(db, ids)))),
                "zendesk_held": _rows(db, zendesk_tables.pending.select().where(
                    zendesk_tables.pending.c.handoff_id.in_(self._handoff_ids(db, ids)))),
                "outreach": _rows(db, monitor_outreach.select().where(
                    monitor_outreach.c.conversation_id.in_(ids))),
            }
        with h.store.connect() as db:
            held["contact_log"] = _rows(db, store_tables.contact_events.select().where(
                self._contact_log(subject)))
            held["codes"] = _rows(db, store_tables.one_time_codes.select().where(
                self._codes(subject)))
            held["bot_writes"] = _rows(db, store_tables.guarded_writes.select().where(
                store_tables.guarded_writes.c.conversation_id.in_(ids)))
        with h.tracker() as tracker:
            held["tracker_events"] = [] if tracker is None else self._tracker_events(tracker, ids)
        held["outbox"] = [line for line in _outbox_lines(h.outbox) if line.get("to") == subject.key]
        self._audit(actor, "privacy_export", subject.reference, {
            kind: len(rows) for kind, rows in held.items()})
        return {"contact": contact, "conversation_ids": ids, **held}

    def erase(self, contact: str, actor: str) -> Dict[str, int]:
        """Remove the customer's data everywhere; anonymise the conversation where a
        row stays (outreach decided once, the bot's writes on orders). Counts per kind."""
        subject = self.subject(contact)
        ids = sorted(subject.conversations)
        h = self.holdings
        removed: Dict[str, int] = {}
        with h.gateway.begin() as db:
            handoff_ids = self._handoff_ids(db, ids)
            removed.update(_forget_in_helpdesks(db, handoff_ids))
            removed["notes"] = _delete(db, handoff_tables.notes,
                                       handoff_tables.notes.c.handoff_id.in_(handoff_ids))
            removed["handoffs"] = _delete(db, handoff_tables.handoffs,
                                          handoff_tables.handoffs.c.id.in_(handoff_ids))
            removed["transcripts"] = _delete(db, turns, turns.c.conversation_id.in_(ids))
            removed["deliveries"] = _delete(db, deliveries, deliveries.c.conversation_id.in_(ids))
            removed["opt_outs"] = _delete(db, opt_outs, self._opt_outs(db, ids))
            removed["conversations"] = _delete(db, conversations,
                                               conversations.c.conversation_id.in_(ids))
            removed["spooled_messages"] = _delete(db, inbox_spool, inbox_spool.c.id.in_(
                [spool_id for spool_id, _ in self._spooled(db, ids)]))
            removed["outreach"] = db.execute(monitor_outreach.update().where(
                monitor_outreach.c.conversation_id.in_(ids)).values(
                conversation_id=ERASED)).rowcount
            removed["product_alerts"] = _forget_in_alerts(db, set(ids))
        with h.store.begin() as db:
            removed["contact_log"] = _delete(db, store_tables.contact_events,
                                             self._contact_log(subject))
            removed["codes"] = _delete(db, store_tables.one_time_codes, self._codes(subject))
            removed["bot_writes"] = sum(db.execute(table.update().where(
                table.c.conversation_id.in_(ids)).values(conversation_id=ERASED)).rowcount
                for table in (store_tables.guarded_writes, store_tables.order_holds))
        with h.tracker() as tracker:
            removed["tracker_events"] = 0 if tracker is None else _erase_in(
                tracker, tracker_events, tracker_events.c.sender_id.in_(ids))
        removed["outbox"] = _keep_outbox_lines(
            h.outbox, lambda line: line.get("to") != subject.key) if subject.key else 0
        _empty_write_ahead_logs(h.gateway, h.store)
        self._audit(actor, "privacy_erase", subject.reference, removed)
        return removed

    def purge(self, actor: str) -> Dict[str, int]:
        """Remove what is older than its retention window: transcripts, resolved
        handoffs, contact log, codes, Rasa's events, outreach and alerts, outbox lines."""
        days = self.policy.retention_days
        now = self.clock()
        cut = {kind: now - getattr(days, kind) * DAY for kind in RetentionDays.__fields__}
        h = self.holdings
        removed: Dict[str, int] = {}
        with h.gateway.begin() as db:
            transcripts = cut["transcripts"]
            removed["transcripts"] = _delete(db, turns, turns.c.at < transcripts)
            removed["deliveries"] = _delete(db, deliveries, deliveries.c.updated_at < transcripts)
            removed["conversations"] = _delete(db, conversations,
                                               conversations.c.last_inbound_at < transcripts)
            h_c = handoff_tables.handoffs.c
            old = [row.id for row in db.execute(sa.select(h_c.id).where(
                h_c.status == "resolved", h_c.resolved_at < cut["handoffs"]))]
            removed.update(_forget_in_helpdesks(db, old))
            removed["notes"] = _delete(db, handoff_tables.notes,
                                       handoff_tables.notes.c.handoff_id.in_(old))
            removed["handoffs"] = _delete(db, handoff_tables.handoffs, h_c.id.in_(old))
            removed["outreach"] = _delete(db, monitor_outreach,
                                          monitor_outreach.c.updated_at < cut["outreach"])
            removed["product_alerts"] = _delete(db, monitor_alerts,
                                                monitor_alerts.c.fired_at < cut["outreach"])
        with h.store.begin() as db:
            removed["contact_log"] = _delete(db, store_tables.contact_events,
                                             store_tables.contact_events.c.created_at
                                             < _utc(cut["contact_log"]))
            removed["codes"] = _delete(db, store_tables.one_time_codes,
                                       store_tables.one_time_codes.c.created_at
                                       < _utc(cut["codes"]))
        with h.tracker() as tracker:
            removed["tracker_events"] = 0 if tracker is None else _erase_in(
                tracker, tracker_events, tracker_events.c.timestamp < cut["trackers"])
        removed["outbox"] = _keep_outbox_lines(
            h.outbox, lambda line: float(line.get("at", now)) >= cut["outbox"])
        _empty_write_ahead_logs(h.gateway, h.store)
        if any(removed.values()):
            self._audit(actor, "privacy_purge", "", removed)
        return removed

    # finding the customer

    def _phone_conversations(self, key: str) -> FrozenSet[str]:
        if "@" in key:
            return frozenset()
        c = conversations.c
        query = sa.select(c.conversation_id, c.connector, c.sender).where(
            c.connector.in_(PHONE_CONNECTORS), c.sender.contains(key.lstrip("+")))
        with self.holdings.gateway.connect() as db:
            return frozenset(row.conversation_id for row in db.execute(query)
                             if sender_phone(row.connector, row.sender) == key)

    def _proving_conversations(self, key: str) -> FrozenSet[str]:
        events, codes = store_tables.contact_events.c, store_tables.one_time_codes.c
        with self.holdings.store.connect() as db:
            found = set(db.execute(sa.select(events.conversation_id).where(
                events.customer_key == key)).scalars())
            found |= set(db.execute(sa.select(codes.conversation_id).where(
                codes.contact == key)).scalars())
        with self.holdings.tracker() as tracker:
            if tracker is not None:
                found |= _conversations_with_slot(tracker, key)
        return frozenset(found)

    def _contact_log(self, subject: Subject) -> Any:
        c = store_tables.contact_events.c
        return sa.or_(c.customer_key.in_(subject.log_keys),
                      c.conversation_id.in_(sorted(subject.conversations)))

    @staticmethod
    def _codes(subject: Subject) -> Any:
        c = store_tables.one_time_codes.c
        return sa.or_(c.conversation_id.in_(sorted(subject.conversations)),
                      sa.and_(c.contact == subject.key, c.contact != ""))

    @staticmethod
    def _opt_outs(db: Connection, ids: List[str]) -> Any:
        c = conversations.c
        pairs = db.execute(sa.select(c.connector, c.sender).where(c.conversation_id.in_(ids)))
        return sa.or_(sa.false(), *(sa.and_(opt_outs.c.connector == connector,
                                             opt_outs.c.address == sender)
                                     for connector, sender in pairs))

    @staticmethod
    def _handoff_ids(db: Connection, ids: List[str]) -> List[int]:
        h = handoff_tables.handoffs.c
        return list(db.execute(sa.select(h.id).where(h.conversation_id.in_(ids))).scalars())

    @staticmethod
    def _spooled(db: Connection, ids: List[str]) -> List[tuple[int, str]]:
        wanted = set(ids)
        return [(row.id, row.message) for row in db.execute(sa.select(inbox_spool))
                if decode(row.message).conversation_id in wanted]

    @staticmethod
    def _tracker_events(tracker: Engine, ids: List[str]) -> List[Dict[str, Any]]:
        e = tracker_events.c
        query = sa.select(e.sender_id, e.type_name, e.timestamp, e.data).where(
            e.sender_id.in_(ids)).order_by(e.sender_id, e.id)
        with tracker.connect() as db:
            return [{**row._mapping, "data": json.loads(row.data or "null")}
                    for row in db.execute(query)]

    def _audit(self, actor: str, action: str, reference: str, counts: Dict[str, int]) -> None:
        detail: Dict[str, Any] = {"counts": counts}
        if reference:
            detail["contact_sha256"] = reference
        self.audit(actor, action, None, detail, self.clock())


def open_privacy(settings: Settings, escalation: EscalationPolicy) -> Privacy:
    """For the CLI: the databases the gateway of these settings uses, tables created."""
    holdings = Holdings(create_store_engine(settings.gateway_database_url),
                        create_store_engine(settings.database_url or default_url()),
                        settings.tracker_database_url, outbox_path())
    holdings.create_tables()
    return Privacy(holdings, load_privacy_policy(escalation),
                   escalation.identity.default_phone_region)


# --- rows and files ---------------------------------------------------------------------------

def _rows(db: Connection, query: Any) -> List[Dict[str, Any]]:
    return [{k: _plain(v) for k, v in row._mapping.items()} for row in db.execute(query)]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)  # Decimal, date


def _delete(db: Connection, table: sa.Table, where: Any) -> int:
    return int(db.execute(table.delete().where(where)).rowcount)


def _erase_in(engine: Engine, table: sa.Table, where: Any) -> int:
    with engine.begin() as db:
        removed = _delete(db, table, where)
    _empty_write_ahead_logs(engine)
    return removed


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _conversations_with_slot(tracker: Engine, key: str) -> FrozenSet[str]:
    e = tracker_events.c
    query = sa.select(e.sender_id, e.data).where(e.type_name == "slot", e.data.contains(key))
    with tracker.connect() as db:
        rows = db.execute(query).all()
    found = set()
    for sender_id, data in rows:
        event = json.loads(data or "{}")
        if event.get("name") in CONTACT_SLOTS and event.get("value") == key:
            found.add(sender_id)
    return frozenset(found)


def _forget_in_alerts(db: Connection, ids: set[str]) -> int:
    """Take the conversations out of the product alerts that list them (the count stays)."""
    changed = 0
    for row in db.execute(sa.select(monitor_alerts.c.id, monitor_alerts.c.conversations)):
        listed = json.loads(row.conversations)
        kept = [c for c in listed if c not in ids]
        if len(kept) != len(listed):
            db.execute(monitor_alerts.update().where(monitor_alerts.c.id == row.id)
                       .values(conversations=json.dumps(kept)))
            changed += 1
    return changed


def _empty_write_ahead_logs(*engines: Engine) -> None:
    """SQLite keeps the pages as they were before a delete in its write-ahead log until
    a checkpoint; this one copies them back and truncates the log to nothing."""
    for engine in engines:
        if engine.dialect.name == "sqlite":
            with engine.connect() as db:
                busy = db.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").scalar()
            if busy:  # a reader held on past the busy timeout; the next checkpoint does it
                log.warning("privacy: a SQLite write-ahead log could not be emptied now")


def _outbox_lines(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _keep_outbox_lines(path: Path, keep: Callable[[Dict[str, Any]], bool]) -> int:
    """Rewrite the outbox with the lines to keep (a new file, owner-only, moved over the
    old one); the number of lines dropped."""
    lines = _outbox_lines(path)
    kept = [line for line in lines if keep(line)]
    if len(kept) == len(lines):
        return 0
    draft = path.with_name(f".{path.name}.new")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(line) + "\n" for line in kept)
    os.replace(draft, path)
    return len(lines) - len(kept)


# --- in the gateway: the admin API and the schedule -------------------------------------------

PRIVACY = web.AppKey("privacy", Privacy)
RECORDS = web.AppKey("privacy_records", GatewayRecords)
PURGE_FIRST_AFTER_SECONDS = 60.0


def _admin(agent: Agent) -> None:
    if not agent.admin:
        raise Forbidden("privacy requests are for the admin token")


async def export_handler(request: web.Request, agent: Agent) -> Any:
    """GET /api/privacy/export?contact=…"""
    _admin(agent)
    return await _run(request, "export", request.query.get("contact", ""), agent)


async def erase_handler(request: web.Request, agent: Agent) -> Any:
    """POST /api/privacy/erase {"contact": …}"""
    _admin(agent)
    contact = (await json_object(request)).get("contact")
    return {"removed": await _run(request, "erase", contact if isinstance(contact, str)
                                  else "", agent)}


async def _run(request: web.Request, what: str, contact: str, agent: Agent) -> Any:
    if not contact.strip():
        raise Invalid("contact: a conversation id, an email or a phone number is needed")
    privacy = request.app[PRIVACY]
    try:  # on the writer: SQLite's one writer, and an erase is a write
        return await request.app[RECORDS].write(getattr(privacy, what), contact,
                                                f"api:{agent.name}")
    except NotAContact as error:
        raise Invalid(str(error)) from error


async def purge_every(privacy: Privacy, records: GatewayRecords,
                      first_after: float = PURGE_FIRST_AFTER_SECONDS) -> None:
    """Purge now and then; a failed purge is logged (no personal data) and retried."""
    await asyncio.sleep(first_after)
    while True:
        try:
            removed = await records.write(privacy.purge, "schedule")
            if any(removed.values()):
                log.info("privacy purge: %s", ", ".join(
                    f"{kind} {count}" for kind, count in removed.items() if count))
        except Exception as error:  # a failed purge must not end the schedule
            log.error("privacy purge failed: %s", type(error).__name__)
        await asyncio.sleep(privacy.policy.purge_every_minutes * 60)


async def _purge_schedule(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(purge_every(app[PRIVACY], app[RECORDS]), name="privacy-purge")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def install_privacy(app: web.Application, privacy: Privacy, records: GatewayRecords) -> None:
    """The admin API (/api/privacy/export, /api/privacy/erase) and the scheduled purge."""
    app[PRIVACY], app[RECORDS] = privacy, records
    # the helpdesks' link tables are made by their targets, only when HANDOFF_TARGET
    # names one; export and erase read them all whatever the target
    for tables in (chatwoot_tables.metadata, freshdesk_tables.metadata,
                   zendesk_tables.metadata):
        create_tables(tables, privacy.holdings.gateway)
    app.router.add_get("/api/privacy/export", authenticated(export_handler))
    app.router.add_post("/api/privacy/erase", authenticated(erase_handler))
    app.cleanup_ctx.append(_purge_schedule)


def _forget_in_helpdesks(db: Connection, handoff_ids: List[int]) -> Dict[str, int]:
    """The gateway's side of these handoffs in Chatwoot, Freshdesk and Zendesk: which
    conversation or ticket shows them, and the messages they have not taken yet."""
    removed: Dict[str, int] = {}
    for helpdesk, tables, shown in (("chatwoot", chatwoot_tables, "conversations"),
                                    ("freshdesk", freshdesk_tables, "tickets"),
                                    ("zendesk", zendesk_tables, "conversations")):
        removed[f"{helpdesk}_held"] = _delete(
            db, tables.pending, tables.pending.c.handoff_id.in_(handoff_ids))
        removed[f"{helpdesk}_{shown}"] = _delete(
            db, tables.links, tables.links.c.handoff_id.in_(handoff_ids))
    return removed
