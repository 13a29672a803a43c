"""The handoff desk on its own, with a clock the tests move: what the customer is told
(queue position, an honest wait, after-hours openings, not too often), CSAT answers
and non-answers, and the SLA clock outside business hours; each with the queues' live
state in SQL alone and kept in Redis."""
from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, List, Sequence, Tuple

import pytest
import pytest_asyncio
from redis import asyncio as aioredis

from actions.policy import load_policy
from actions.store.sql import open_store
from bot.handoff.desk import HandoffDesk
from bot.handoff.events import EventBus
from bot.handoff.live import LiveQueues, RedisLiveQueues
from bot.handoff.policy import load_handoff_policy
from bot.handoff.store import Agent, HandoffStore
from bot.messaging.records import GatewayRecords
from common.sql import create_store_engine
from connectors.message import Delivery, Message, Reply

# Monday 2026-11-23 12:00 UTC: open (08:00-20:00 in policy/handoff.yml)
MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc).timestamp()
ALICE = Agent("alice", ("general",), 5)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Desk:
    """The desk, its clock and what it sent to customers."""

    def __init__(self, desk: HandoffDesk, clock: Clock) -> None:
        self.desk, self.clock = desk, clock
        self.sent: List[Tuple[str, str, str]] = []
        desk.bind(self.send, self.download)

    async def send(self, connector: str, recipient: str, replies: Sequence[Reply],
                   role: str) -> List[Delivery]:
        self.sent.extend((recipient, r.text, role) for r in replies)
        return [Delivery("sent", f"m{len(self.sent)}") for _ in replies]

    async def download(self, connector: str, reference: str) -> bytes:
        return f"{connector} {reference}".encode()

    def texts(self, recipient: str) -> List[str]:
        return [text for to, text, _ in self.sent if to == recipient]


LiveFactory = Callable[[HandoffStore, GatewayRecords, Sequence[str]], LiveQueues]


@contextlib.asynccontextmanager
async def desk_with(tmp_path: Path, live: LiveFactory) -> AsyncIterator[Desk]:
    """A desk on its own databases, keeping the queues' live state with `live`."""
    records = GatewayRecords(create_store_engine(f"sqlite:///{tmp_path / 'gateway.db'}"))
    shop = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    escalation = load_policy()
    store = HandoffStore(records.engine)
    queues = live(store, records, list(escalation.teams))
    await queues.start()
    clock = Clock(MONDAY_NOON)
    try:
        yield Desk(HandoffDesk(store, records, load_handoff_policy(escalation), escalation,
                               shop, EventBus(), queues, clock=clock), clock)
    finally:
        await queues.stop()
        records.close()
        shop.close()


@contextlib.asynccontextmanager
async def redis_live(redis_url: str) -> AsyncIterator[LiveFactory]:
    """Live state in Redis under a prefix of its own, removed afterwards."""
    redis = aioredis.from_url(redis_url)
    prefix = f"test-{uuid.uuid4().hex}"
    try:
        yield lambda store, records, queues: RedisLiveQueues(store, records, redis, queues,
                                                             prefix=prefix)
    finally:
        for key in await redis.keys(f"{prefix}:*"):
            await redis.delete(key)
        await redis.close(close_connection_pool=True)


@pytest_asyncio.fixture(params=["sql", "redis"])
async def desk(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Desk]:
    """Every test runs with the queues' live state in SQL alone, and kept in Redis."""
    if request.param == "sql":
        async with desk_with(tmp_path, lambda store, records, _: LiveQueues(store, records)) \
                as sql_desk:
            yield sql_desk
        return
    async with redis_live(request.getfixturevalue("redis_url")) as live, \
            desk_with(tmp_path, live) as redis_desk:
        yield redis_desk


def message(sender: str, text: str = "I want a person", channel: str = "telegram") -> Message:
    return Message(connector=channel, channel=channel, sender=sender, message_id=text,
                   text=text)


PAYLOAD: Dict[str, Any] = {"reason_code": "customer_request", "rule": "customer_request",
                           "tier": 1, "queue": "general", "order_id": None,
                           "customer": {"name": "Ann", "verified": False, "contact": ""},
                           "summary": {"what_happened": "asked", "next": "help", "eta": "soon"},
                           "slots": {}, "actions_attempted": []}


async def takes(desk: Desk, sender: str, text: str) -> bool:
    """As the router asks: with the handoff it read when it recorded the message."""
    handoff = desk.desk.routing(f"telegram:{sender}")
    return await desk.desk.takes(message(sender, text), handoff)


async def escalate(desk: Desk, sender: str, **payload: Any) -> Dict[str, Any]:
    opened = await desk.desk.escalate(message(sender), {**PAYLOAD, **payload})
    assert opened is not None
    await desk.desk.announce(opened)
    return opened


async def test_the_customer_hears_position_wait_and_reference(desk: Desk) -> None:
    first = await escalate(desk, "1")
    await escalate(desk, "2")
    [notice] = desk.texts("2")
    assert "number 2 in the queue" in notice and "customer care" in notice
    # no claims yet to go on: the wait is the time left to the target (15 minutes)
    assert "about 15 minutes" in notice
    assert f"H-{first['id'] + 1}" in notice


async def test_the_wait_estimate_follows_the_queue_history(desk: Desk) -> None:
    for n in range(5):  # five earlier handoffs, each claimed after 2 minutes
        handoff = await escalate(desk, f"old{n}")
        desk.clock.now += 120
        await desk.desk.claim(handoff["id"], ALICE, ALICE)
    await escalate(desk, "a")
    await escalate(desk, "b")
    assert "about 4 minutes" in desk.texts("b")[0]  # 2 minutes times position 2


async def test_a_tier_3_customer_jumps_the_queue(desk: Desk) -> None:
    await escalate(desk, "calm")
    urgent = await escalate(desk, "urgent", tier=3, rule="safety_incident",
                            reason_code="safety_incident")
    assert "number 1 in the queue" in desk.texts("urgent")[0]
    taken = await desk.desk.claim_next(ALICE)
    assert (taken["id"], taken["agent"]) == (urgent["id"], "alice")
    assert [(a["actor"], a["action"]) for a in taken["audit"]] == [
        ("bot", "open"), ("alice", "claim")]


async def test_writing_again_while_waiting_is_answered_at_most_every_10_minutes(
        desk: Desk) -> None:
    await escalate(desk, "1")
    assert await takes(desk, "1", "hello?")
    assert await takes(desk, "1", "hello??")
    assert len(desk.texts("1")) == 1
    desk.clock.now += 601
    assert await takes(desk, "1", "anyone?")
    assert len(desk.texts("1")) == 2 and "added that" in desk.texts("1")[1]


async def test_after_hours_the_customer_hears_when_the_team_is_back(desk: Desk) -> None:
    desk.clock.now = datetime(2026, 11, 23, 21, 30, tzinfo=timezone.utc).timestamp()
    handoff = await escalate(desk, "night")
    assert "back tomorrow at 08:00" in desk.texts("night")[0]
    opens = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc).timestamp()
    assert handoff["sla_due_at"] == opens + 900  # the SLA clock starts at the opening


async def test_a_web_chat_handoff_is_due_in_90_seconds(desk: Desk) -> None:
    opened = await desk.desk.escalate(message("w1", channel="webchat"), PAYLOAD)
    assert opened is not None and opened["sla_due_at"] == MONDAY_NOON + 90
    record = await desk.desk.record(opened)
    desk.clock.now += 91
    late = await desk.desk.record(opened)
    assert not record["sla"]["breached"] and late["sla"]["breached"]


async def resolved(desk: Desk, sender: str) -> Dict[str, Any]:
    handoff = await escalate(desk, sender)
    await desk.desk.claim(handoff["id"], ALICE, ALICE)
    return await desk.desk.resolve(handoff["id"], ALICE, "solved", "")


async def test_csat_answers_are_stored_and_other_messages_go_to_the_bot(desk: Desk) -> None:
    answered = await resolved(desk, "happy")
    assert desk.texts("happy")[-1] == "How would you rate the help you got today?"
    assert await takes(desk, "happy", "5")
    assert (await desk.desk.get(answered["id"], desk.desk.admin))["csat"]["score"] == 5
    assert desk.texts("happy")[-1] == "Thank you for telling us."
    assert not await takes(desk, "happy", "4")  # asked once, answered once

    moved_on = await resolved(desk, "busy")
    assert not await takes(desk, "busy", "9")  # not on the 1-5 scale
    assert not await takes(desk, "busy", "3")  # the question was dropped
    assert (await desk.desk.get(moved_on["id"], desk.desk.admin))["csat"] is None


async def test_csat_is_not_awaited_forever(desk: Desk) -> None:
    handoff = await resolved(desk, "late")
    desk.clock.now += 25 * 3600
    assert not await takes(desk, "late", "4")
    assert (await desk.desk.get(handoff["id"], desk.desk.admin))["csat"] is None


async def test_a_conversation_already_with_a_person_opens_nothing_new(desk: Desk) -> None:
    await escalate(desk, "1")
    assert await desk.desk.escalate(message("1"), PAYLOAD) is None
    assert await desk.desk.bot_unavailable(message("1"), "it refused the turn") is None
    assert len(await desk.desk.list(desk.desk.admin, "waiting", None)) == 1
