"""Handoff records in SQL: the handoffs, agents' internal notes, the audit log of every
agent action, and the agents with their teams, capacity and hashed tokens (an agent's
`created_at` is when their current token was issued: re-issuing replaces the row).

The tables sit beside the gateway's records (same engine); calls are synchronous and
run on the records' worker threads. Times are UNIX seconds, as in the records.
"""
from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypedDict, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot.messaging.records import DriverStatement, driver_cursor
from common.sql import create_tables

metadata = sa.MetaData()

OPEN = ("waiting", "active")
# Names an agent may not have: the admin token acts as "admin", and the audit trail
# names the bot and the command line as "bot" and "cli".
RESERVED_NAMES = ("admin", "bot", "cli")

handoffs = sa.Table(
    "handoffs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.String(200), nullable=False, index=True),
    sa.Column("connector", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("customer_name", sa.String(200), nullable=False, default=""),
    sa.Column("customer_verified", sa.Boolean, nullable=False, default=False),
    sa.Column("customer_contact", sa.String(200), nullable=False, default=""),
    sa.Column("reason_code", sa.String(64), nullable=False),
    sa.Column("rule", sa.String(128), nullable=False),
    sa.Column("tier", sa.Integer, nullable=False),
    sa.Column("queue", sa.String(64), nullable=False, index=True),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("agent", sa.String(64)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("sla_target_seconds", sa.Float, nullable=False),
    sa.Column("sla_due_at", sa.Float, nullable=False),
    sa.Column("claimed_at", sa.Float),
    sa.Column("first_response_at", sa.Float),
    sa.Column("resolved_at", sa.Float),
    sa.Column("disposition", sa.String(64)),
    sa.Column("resolution_note", sa.Text, nullable=False, default=""),
    sa.Column("order_id", sa.String(32)),
    sa.Column("slots", sa.Text, nullable=False, default="{}"),
    sa.Column("order_snapshot", sa.Text, nullable=False, default="null"),
    sa.Column("actions_attempted", sa.Text, nullable=False, default="[]"),
    sa.Column("summary", sa.Text, nullable=False, default="{}"),
    sa.Column("last_notice_at", sa.Float),
    sa.Column("csat_asked_at", sa.Float),
    sa.Column("csat_score", sa.Integer),
    sa.Column("csat_at", sa.Float),
)


class Handoff(TypedDict):
    """A handoff as the store keeps it: a row of `handoffs`, its JSON columns parsed."""

    id: int
    conversation_id: str
    connector: str
    channel: str
    customer_name: str
    customer_verified: bool
    customer_contact: str
    reason_code: str
    rule: str
    tier: int
    queue: str
    priority: int
    status: str
    agent: Optional[str]
    created_at: float
    sla_target_seconds: float
    sla_due_at: float
    claimed_at: Optional[float]
    first_response_at: Optional[float]
    resolved_at: Optional[float]
    disposition: Optional[str]
    resolution_note: str
    order_id: Optional[str]
    slots: Dict[str, Any]
    order_snapshot: Optional[Dict[str, Any]]
    actions_attempted: List[str]
    summary: Dict[str, Any]
    last_notice_at: Optional[float]
    csat_asked_at: Optional[float]
    csat_score: Optional[int]
    csat_at: Optional[float]

notes = sa.Table(
    "handoff_notes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("handoff_id", sa.Integer, nullable=False, index=True),
    sa.Column("author", sa.String(64), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("handoff_id", sa.Integer, index=True),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default="{}"),
    sa.Column("at", sa.Float, nullable=False),
)

agents = sa.Table(
    "agents", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("teams", sa.Text, nullable=False),
    sa.Column("capacity", sa.Integer, nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

JSON_COLUMNS = ("slots", "order_snapshot", "actions_attempted", "summary")

# `routing` runs it for every customer message, on the DBAPI cursor (bot/messaging/records.py's
# DriverStatement), which takes no expanding IN
_ROUTING = sa.select(handoffs).where(
    handoffs.c.conversation_id == sa.bindparam("conversation"),
    sa.or_(*(handoffs.c.status == status for status in OPEN),
           sa.and_(handoffs.c.status == "resolved",
                   handoffs.c.csat_asked_at >= sa.bindparam("csat_since"),
                   handoffs.c.csat_score.is_(None))),
).order_by(handoffs.c.id.desc()).limit(1)


class HandoffConflict(Exception):
    """The handoff is not in a state that allows this (e.g. already claimed)."""


class ReservedName(ValueError):
    """An agent may not be called this."""


@dataclass(frozen=True)
class Agent:
    name: str
    teams: Sequence[str]
    capacity: int
    admin: bool = False
    # when the agent's token was issued (UNIX seconds); None for the admin token
    token_issued_at: Optional[float] = None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _agent(row: Any) -> Agent:
    return Agent(row.name, json.loads(row.teams), row.capacity, token_issued_at=row.created_at)


def _row(row: Any) -> Handoff:
    return _from_columns(dict(row._mapping))


def _from_columns(values: Dict[str, Any]) -> Handoff:
    for column in JSON_COLUMNS:
        values[column] = json.loads(values[column])
    return cast(Handoff, values)


class HandoffStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(metadata, engine)
        self._routing = DriverStatement(_ROUTING, engine.dialect)

    # handoffs

    def open(self, values: Dict[str, Any]) -> Tuple[Handoff, bool]:
        """A new waiting handoff, audited as opened by the bot, and True; unless the
        conversation already has an open one (then that one and False): one person at a
        time works a conversation."""
        stored = {k: json.dumps(v) if k in JSON_COLUMNS else v for k, v in values.items()}
        with self.engine.begin() as conn:
            existing = self._open_for(conn, values["conversation_id"])
            if existing is not None:
                return existing, False
            key = conn.execute(
                handoffs.insert().values(status="waiting", **stored)).inserted_primary_key
            assert key is not None, "an insert of one row has its primary key"
            handoff_id = key[0]
            detail = {"reason": values["reason_code"], "queue": values["queue"]}
            conn.execute(audit_log.insert().values(
                handoff_id=handoff_id, actor="bot", action="open", detail=json.dumps(detail),
                at=values["created_at"]))
            return self._must_get(conn, handoff_id), True

    def get(self, handoff_id: int) -> Optional[Handoff]:
        with self.engine.connect() as conn:
            return self._get(conn, handoff_id)

    def open_for(self, conversation_id: str) -> Optional[Handoff]:
        with self.engine.connect() as conn:
            return self._open_for(conn, conversation_id)

    def list(self, status: Optional[str] = None, queues: Optional[Sequence[str]] = None,
             limit: int = 200) -> List[Handoff]:
        """Waiting ones in the order they are offered (priority, then age); the rest
        newest first; only those of `queues` when given."""
        query = sa.select(handoffs)
        if status:
            query = query.where(handoffs.c.status == status)
        if queues is not None:
            query = query.where(handoffs.c.queue.in_(list(queues)))
        order = ((handoffs.c.priority.desc(), handoffs.c.created_at, handoffs.c.id)
                 if status == "waiting" else (handoffs.c.created_at.desc(), handoffs.c.id.desc()))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query.order_by(*order).limit(limit))]

    def open_handoffs(self) -> List[Dict[str, Any]]:
        """Every waiting and active handoff: what the live queue state is built from."""
        c = handoffs.c
        query = sa.select(c.id, c.status, c.queue, c.priority, c.created_at, c.agent).where(
            c.status.in_(OPEN))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def position(self, handoff: Handoff) -> int:
        """1 for the next one an agent of its queue is offered."""
        c = handoffs.c
        ahead = sa.or_(c.priority > handoff["priority"],
                       sa.and_(c.priority == handoff["priority"],
                               sa.or_(c.created_at < handoff["created_at"],
                                      sa.and_(c.created_at == handoff["created_at"],
                                              c.id < handoff["id"]))))
        query = sa.select(sa.func.count()).select_from(handoffs).where(
            c.status == "waiting", c.queue == handoff["queue"], ahead)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one()) + 1

    def claim(self, handoff_id: int, agent: Agent, now: float) -> Handoff:
        with self.engine.begin() as conn:
            self._check_capacity(conn, agent)
            if not self._claimed(conn, handoff_id, agent, now):
                raise HandoffConflict("only a waiting handoff can be claimed")
            return self._must_get(conn, handoff_id)

    def claim_next(self, agent: Agent, queues: Sequence[str], now: float) -> Handoff:
        """The first waiting handoff of these queues in offering order (priority, then
        age), claimed; one that another agent takes meanwhile is passed over."""
        c = handoffs.c
        query = (sa.select(c.id).where(c.status == "waiting", c.queue.in_(list(queues)))
                 .order_by(c.priority.desc(), c.created_at, c.id).limit(20))
        with self.engine.begin() as conn:
            self._check_capacity(conn, agent)
            for handoff_id in conn.execute(query).scalars().all():
                if self._claimed(conn, handoff_id, agent, now):
                    return self._must_get(conn, handoff_id)
        raise HandoffConflict("nobody is waiting in your queues")

    def transfer(self, handoff_id: int, queue: str) -> Handoff:
        """Back to waiting, in another queue; its SLA clock keeps running."""
        return self._change(handoff_id, OPEN, status="waiting", queue=queue, agent=None)

    def first_response(self, handoff_id: int, now: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(handoffs.update().where(
                handoffs.c.id == handoff_id, handoffs.c.first_response_at.is_(None))
                .values(first_response_at=now))

    def resolve(self, handoff_id: int, disposition: str, note: str,
                now: float, from_status: Sequence[str] = ("active",)) -> Handoff:
        """Resolved, with the CSAT question asked now; a helpdesk may resolve a handoff
        nobody claimed (`from_status` OPEN)."""
        return self._change(handoff_id, from_status, status="resolved", disposition=disposition,
                            resolution_note=note, resolved_at=now, csat_asked_at=now)

    def reopen(self, handoff_id: int) -> Handoff:
        """A resolved handoff open again (a helpdesk reopened it): with its agent if it
        had one, else waiting; HandoffConflict if the conversation has another open one."""
        with self.engine.begin() as conn:
            handoff = self._get(conn, handoff_id)
            if handoff is None or handoff["status"] != "resolved":
                raise HandoffConflict("only a resolved handoff can be reopened")
            if self._open_for(conn, handoff["conversation_id"]) is not None:
                raise HandoffConflict("the conversation has another open handoff")
            conn.execute(handoffs.update().where(handoffs.c.id == handoff_id).values(
                status="active" if handoff["agent"] else "waiting", resolved_at=None,
                disposition=None, csat_asked_at=None))
            return self._must_get(conn, handoff_id)

    def noticed(self, handoff_id: int, now: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(handoffs.update().where(handoffs.c.id == handoff_id)
                         .values(last_notice_at=now))

    def routing(self, conversation_id: str, csat_since: float) -> Optional[Handoff]:
        """The handoff that decides where a customer's message goes, in one read: the
        open one, else a resolved one whose CSAT question (asked since `csat_since`)
        awaits its answer."""
        with driver_cursor(self.engine) as cursor:
            row = self._routing.run(cursor, {"conversation": conversation_id,
                                             "csat_since": csat_since}).fetchone()
            names = [column[0] for column in cursor.description]
        return _from_columns(dict(zip(names, row, strict=True))) if row else None

    def record_csat(self, handoff_id: int, score: Optional[int], now: float) -> None:
        """Store the answer; None means the customer moved on, so stop waiting for it."""
        values: Dict[str, Optional[float]] = (
            {"csat_score": score, "csat_at": now} if score is not None else {"csat_asked_at": None})
        with self.engine.begin() as conn:
            conn.execute(handoffs.update().where(handoffs.c.id == handoff_id).values(**values))

    def claim_waits(self, queue: str, sample: int) -> List[float]:
        """Seconds from creation to claim of the queue's latest claimed handoffs."""
        query = (sa.select(handoffs.c.claimed_at - handoffs.c.created_at)
                 .where(handoffs.c.queue == queue, handoffs.c.claimed_at.is_not(None))
                 .order_by(handoffs.c.claimed_at.desc()).limit(sample))
        with self.engine.connect() as conn:
            return [float(wait) for wait in conn.execute(query).scalars()]

    def queue_counts(self, now: float) -> Dict[str, Dict[str, Any]]:
        c = handoffs.c
        breached = sa.and_(c.first_response_at.is_(None), c.sla_due_at < now)
        query = sa.select(
            c.queue, c.status, sa.func.count(),
            sa.func.sum(sa.case((breached, 1), else_=0)), sa.func.min(c.created_at),
        ).where(c.status.in_(OPEN)).group_by(c.queue, c.status)
        counts: Dict[str, Dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for queue, status, count, late, oldest in conn.execute(query):
                entry = counts.setdefault(queue, {"waiting": 0, "active": 0, "breached": 0,
                                                  "oldest_waiting_at": None})
                entry[status] = int(count)
                entry["breached"] += int(late or 0)
                if status == "waiting":
                    entry["oldest_waiting_at"] = oldest
        return counts

    # notes and audit

    def add_note(self, handoff_id: int, author: str, text: str, now: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(notes.insert().values(handoff_id=handoff_id, author=author, text=text,
                                               at=now))

    def notes(self, handoff_id: int) -> List[Dict[str, Any]]:
        query = sa.select(notes.c.author, notes.c.text, notes.c.at).where(
            notes.c.handoff_id == handoff_id).order_by(notes.c.at, notes.c.id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def audit(self, actor: str, action: str, handoff_id: Optional[int],
              detail: Dict[str, Any], now: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(audit_log.insert().values(handoff_id=handoff_id, actor=actor,
                                                   action=action, detail=json.dumps(detail),
                                                   at=now))

    def audit_trail(self, handoff_id: Optional[int] = None,
                    limit: int = 500) -> List[Dict[str, Any]]:
        query = sa.select(audit_log.c.handoff_id, audit_log.c.actor, audit_log.c.action,
                          audit_log.c.detail, audit_log.c.at)
        if handoff_id is not None:
            query = query.where(audit_log.c.handoff_id == handoff_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(audit_log.c.at, audit_log.c.id).limit(limit))
            return [{**r._mapping, "detail": json.loads(r.detail)} for r in rows]

    # agents

    def add_agent(self, name: str, teams: Sequence[str], capacity: int, now: float) -> str:
        """Create or replace the agent; returns their new token (only its hash is kept,
        with `now` as its issue time); ReservedName for a name the audit trail uses."""
        if name.strip().lower() in RESERVED_NAMES:
            raise ReservedName(f"{name!r} is reserved ({', '.join(RESERVED_NAMES)} name the "
                               "admin token, the bot and the command line in the audit trail)")
        token = secrets.token_urlsafe(32)
        values = {"teams": json.dumps(list(teams)), "capacity": capacity,
                  "token_hash": hash_token(token), "created_at": now}
        with self.engine.begin() as conn:
            conn.execute(agents.delete().where(agents.c.name == name))
            conn.execute(agents.insert().values(name=name, **values))
        return token

    def remove_agent(self, name: str) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(agents.delete().where(agents.c.name == name)).rowcount)

    def agent_for_token(self, token: str) -> Optional[Agent]:
        query = sa.select(agents).where(agents.c.token_hash == hash_token(token))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _agent(row) if row else None

    def agents(self) -> List[Agent]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(agents).order_by(agents.c.name))
            return [_agent(r) for r in rows]

    def agents_by_token_hash(self) -> Dict[str, Agent]:
        """Every agent by the hash of their current token, in one read: how the gateway
        re-checks all its open consoles at once."""
        with self.engine.connect() as conn:
            return {r.token_hash: _agent(r) for r in conn.execute(sa.select(agents))}

    # helpers

    @staticmethod
    def _get(conn: Connection, handoff_id: int) -> Optional[Handoff]:
        row = conn.execute(sa.select(handoffs).where(handoffs.c.id == handoff_id)).first()
        return _row(row) if row else None

    @classmethod
    def _must_get(cls, conn: Connection, handoff_id: int) -> Handoff:
        handoff = cls._get(conn, handoff_id)
        assert handoff is not None, "read in the transaction that wrote it"
        return handoff

    @staticmethod
    def _open_for(conn: Connection, conversation_id: str) -> Optional[Handoff]:
        row = conn.execute(sa.select(handoffs).where(
            handoffs.c.conversation_id == conversation_id, handoffs.c.status.in_(OPEN))
            .order_by(handoffs.c.id.desc()).limit(1)).first()
        return _row(row) if row else None

    @staticmethod
    def _check_capacity(conn: Connection, agent: Agent) -> None:
        active = int(conn.execute(sa.select(sa.func.count()).select_from(handoffs).where(
            handoffs.c.agent == agent.name, handoffs.c.status == "active")).scalar_one())
        if not agent.admin and active >= agent.capacity:
            raise HandoffConflict(f"{agent.name} already has {agent.capacity} "
                                  "conversations, the capacity")

    @staticmethod
    def _claimed(conn: Connection, handoff_id: int, agent: Agent, now: float) -> bool:
        """Claim if still waiting: one conditional UPDATE, so one agent wins a race."""
        return bool(conn.execute(handoffs.update().where(
            handoffs.c.id == handoff_id, handoffs.c.status == "waiting").values(
            status="active", agent=agent.name, claimed_at=now)).rowcount)

    def _change(self, handoff_id: int, from_status: Sequence[str],
                **values: Any) -> Handoff:
        with self.engine.begin() as conn:
            changed = conn.execute(handoffs.update().where(
                handoffs.c.id == handoff_id, handoffs.c.status.in_(from_status))
                .values(**values)).rowcount
            if not changed:
                raise HandoffConflict(f"only a handoff that is {' or '.join(from_status)} "
                                      "can be changed this way")
            return self._must_get(conn, handoff_id)
