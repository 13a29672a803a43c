"""What a handoff target that is an external helpdesk keeps beside the handoff records
(same engine; synchronous, run on the records' worker threads): which helpdesk
conversation or ticket shows which handoff, which handoffs the helpdesk has not taken
yet (to offer again), the customer's messages it has not taken yet, and which agents'
messages were already delivered (a webhook delivered again is not sent twice). Each
helpdesk has tables of its own (`LinkTables`), the same code serves them all. A
helpdesk's ids are numbers (Chatwoot, Freshdesk) or strings (Sunshine Conversations'
conversations and messages): `RemoteId`."""
from __future__ import annotations

from typing import Any, Callable, Generic, List, Optional, Tuple, Type, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot.handoff.store import OPEN, handoffs
from bot.messaging.records import insert_if_absent
from common.sql import create_tables

RemoteId = TypeVar("RemoteId", int, str)
# the longest string id a helpdesk's conversation or message may have
REMOTE_ID_LENGTH = 80


class LinkTables(Generic[RemoteId]):
    """`{prefix}_links`, `{prefix}_pending` and `{prefix}_delivered`; `remote` names the
    links' column of the helpdesk's id (its conversation or ticket), `kind` its type
    (int or str), which is also the type of the ids of the agents' messages."""

    def __init__(self, prefix: str, remote: str, kind: Type[RemoteId]) -> None:
        self.kind: Callable[[Any], RemoteId] = kind
        id_type: Any = sa.BigInteger if kind is int else sa.String(REMOTE_ID_LENGTH)
        self.metadata = sa.MetaData()
        self.links = sa.Table(
            f"{prefix}_links", self.metadata,
            sa.Column("handoff_id", sa.Integer, primary_key=True),
            # None until the helpdesk has the conversation or ticket
            sa.Column(remote, id_type, unique=True),
            # once it also has everything else (notes, team)
            sa.Column("complete", sa.Boolean, nullable=False, default=False),
            # a gateway pushing it holds it until then, so two never both do
            sa.Column("claimed_until", sa.Float, nullable=False, default=0.0),
            sa.Column("attempts", sa.Integer, nullable=False, default=0),
        )
        # what the customer wrote during a handoff, until the helpdesk has it, in order
        self.pending = sa.Table(
            f"{prefix}_pending", self.metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("handoff_id", sa.Integer, nullable=False, index=True),
            sa.Column("content", sa.Text, nullable=False),
            sa.Column("claimed_until", sa.Float, nullable=False, default=0.0),
        )
        self.delivered = sa.Table(
            f"{prefix}_delivered", self.metadata,
            sa.Column("message_id", id_type, primary_key=True),
            sa.Column("at", sa.Float, nullable=False),
        )
        self.remote = self.links.c[remote]


class HelpdeskLinks(Generic[RemoteId]):
    def __init__(self, engine: Engine, tables: LinkTables[RemoteId]) -> None:
        self.engine = engine
        self.tables: LinkTables[RemoteId] = tables
        create_tables(tables.metadata, engine)

    def add(self, handoff_id: int) -> None:
        """A handoff for the helpdesk, not there yet."""
        with self.engine.begin() as db:
            insert_if_absent(db, self.tables.links, {
                "handoff_id": handoff_id, "claimed_until": 0.0, "attempts": 0,
                "complete": False})

    def claim(self, handoff_id: int, now: float, lease_seconds: float) -> bool:
        """Hold a handoff the helpdesk does not fully have yet, to push it now; False
        when it is there already or another gateway holds it."""
        links = self.tables.links
        c = links.c
        with self.engine.begin() as db:
            return bool(db.execute(links.update().where(
                c.handoff_id == handoff_id, c.complete.is_(False),
                c.claimed_until <= now).values(
                claimed_until=now + lease_seconds, attempts=c.attempts + 1)).rowcount)

    def release(self, handoff_id: int) -> None:
        """Pushing failed: free for the next try."""
        links = self.tables.links
        with self.engine.begin() as db:
            db.execute(links.update().where(links.c.handoff_id == handoff_id)
                       .values(claimed_until=0.0))

    def linked(self, handoff_id: int, remote_id: RemoteId) -> None:
        links = self.tables.links
        with self.engine.begin() as db:
            db.execute(links.update().where(links.c.handoff_id == handoff_id)
                       .values({self.tables.remote: remote_id}))

    def completed(self, handoff_id: int) -> None:
        links = self.tables.links
        with self.engine.begin() as db:
            db.execute(links.update().where(links.c.handoff_id == handoff_id)
                       .values(complete=True))

    def waiting(self) -> List[int]:
        """Open handoffs the helpdesk does not fully have yet, oldest first."""
        links = self.tables.links
        query = (sa.select(links.c.handoff_id)
                 .join(handoffs, handoffs.c.id == links.c.handoff_id)
                 .where(links.c.complete.is_(False),
                        handoffs.c.status.in_(OPEN))
                 .order_by(links.c.handoff_id))
        with self.engine.connect() as db:
            return [int(i) for i in db.execute(query).scalars()]

    def conversation_of(self, handoff_id: int) -> Optional[RemoteId]:
        """The helpdesk's id (conversation, ticket) of this handoff, once it has one."""
        links = self.tables.links
        query = sa.select(self.tables.remote).where(links.c.handoff_id == handoff_id)
        with self.engine.connect() as db:
            found = db.execute(query).scalar()
        return self.tables.kind(found) if found is not None else None

    def handoff_of(self, remote_id: RemoteId) -> Optional[int]:
        query = sa.select(self.tables.links.c.handoff_id).where(
            self.tables.remote == remote_id)
        with self.engine.connect() as db:
            found = db.execute(query).scalar()
        return int(found) if found is not None else None

    def first_delivery(self, message_id: RemoteId, now: float) -> bool:
        """Claim an agent's message for delivery; False if it was claimed before."""
        with self.engine.begin() as db:
            return insert_if_absent(db, self.tables.delivered,
                                    {"message_id": message_id, "at": now})

    def forget_delivery(self, message_id: RemoteId) -> None:
        delivered = self.tables.delivered
        with self.engine.begin() as db:
            db.execute(delivered.delete().where(delivered.c.message_id == message_id))

    def hold(self, handoff_id: int, content: str) -> None:
        with self.engine.begin() as db:
            db.execute(self.tables.pending.insert().values(
                handoff_id=handoff_id, content=content, claimed_until=0.0))

    def next_held(self, now: float,
                  lease_seconds: float) -> Optional[Tuple[int, RemoteId, str]]:
        """The oldest held message of a handoff the helpdesk has, claimed for sending:
        (its id, the helpdesk's id, its content); None when there is none or the oldest
        is being sent by another gateway (order before speed)."""
        links, pending, remote = self.tables.links, self.tables.pending, self.tables.remote
        query = (sa.select(pending.c.id, pending.c.claimed_until,
                           remote.label("remote_id"), pending.c.content)
                 .join(links, links.c.handoff_id == pending.c.handoff_id)
                 .where(remote.is_not(None))
                 .order_by(pending.c.id).limit(1))
        with self.engine.begin() as db:
            row = db.execute(query).first()
            if row is None or row.claimed_until > now:
                return None
            claimed = db.execute(pending.update().where(
                pending.c.id == row.id, pending.c.claimed_until == row.claimed_until)
                .values(claimed_until=now + lease_seconds)).rowcount
            return ((int(row.id), self.tables.kind(row.remote_id), str(row.content)) if claimed
                    else None)

    def sent(self, held_id: int) -> None:
        pending = self.tables.pending
        with self.engine.begin() as db:
            db.execute(pending.delete().where(pending.c.id == held_id))

    def unclaim(self, held_id: int) -> None:
        pending = self.tables.pending
        with self.engine.begin() as db:
            db.execute(pending.update().where(pending.c.id == held_id)
                       .values(claimed_until=0.0))
