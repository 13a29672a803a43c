"""The queues' live state in Redis: it follows every opening, claim, transfer and
resolution in the order agents are offered handoffs, is rebuilt from SQL when Redis
lost it, and while Redis is down the desk goes on with positions from SQL."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from redis import asyncio as aioredis

from bot.handoff.live import RedisLiveQueues
from tests.bot.handoff.test_desk import ALICE, Desk, desk_with, escalate, redis_live


def live_of(desk: Desk) -> RedisLiveQueues:
    assert isinstance(desk.desk.live, RedisLiveQueues)
    return desk.desk.live


async def state(desk: Desk) -> Dict[str, List[int]]:
    live = live_of(desk)
    queues = {q: await live.waiting(q) for q in live.queues}
    return {q: ids for q, ids in queues.items() if ids}


def sql_state(desk: Desk) -> Dict[str, List[int]]:
    waiting = desk.desk.store.list("waiting")
    return {q: [h["id"] for h in waiting if h["queue"] == q]
            for q in sorted({h["queue"] for h in waiting})}


async def test_the_queues_in_redis_follow_every_change(tmp_path: Path, redis_url: str) -> None:
    async with redis_live(redis_url) as live, desk_with(tmp_path, live) as desk:
        first = await escalate(desk, "1")
        desk.clock.now += 1
        second = await escalate(desk, "2")
        urgent = await escalate(desk, "3", tier=3)
        assert await state(desk) == {"general": [urgent["id"], first["id"], second["id"]]}
        assert await state(desk) == sql_state(desk)
        # an update of a waiting handoff brings its position in the same round trip
        assert await live_of(desk).changed(second) == 3

        await desk.desk.claim(first["id"], ALICE, ALICE)
        await desk.desk.transfer(second["id"], ALICE, "logistics")
        assert await state(desk) == {"general": [urgent["id"]], "logistics": [second["id"]]}
        assert await state(desk) == sql_state(desk)
        assert await live_of(desk).active() == {first["id"]: "alice"}
        assert (await desk.desk.get(second["id"], desk.desk.admin))["position"] == 1

        await desk.desk.resolve(first["id"], ALICE, "information_given", "")
        assert await live_of(desk).active() == {}


async def test_what_redis_lost_is_rebuilt_from_sql(tmp_path: Path, redis_url: str) -> None:
    async with redis_live(redis_url) as live, desk_with(tmp_path, live) as desk:
        first = await escalate(desk, "1")
        second = await escalate(desk, "2")
        await desk.desk.claim(first["id"], ALICE, ALICE)
        queues = live_of(desk)
        await queues.redis.delete(queues.active_key, queues.waiting_key("general"))
        # meanwhile positions come from SQL
        assert (await desk.desk.get(second["id"], desk.desk.admin))["position"] == 1
        await queues.reconcile()
        assert await state(desk) == {"general": [second["id"]]}
        assert await queues.active() == {first["id"]: "alice"}


async def test_with_redis_down_handoffs_open_and_positions_come_from_sql(
        tmp_path: Path) -> None:
    unreachable = aioredis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    async with desk_with(tmp_path, lambda store, records, queues: RedisLiveQueues(
            store, records, unreachable, queues)) as desk:
        await escalate(desk, "1")
        second = await escalate(desk, "2")
        assert "number 2 in the queue" in desk.texts("2")[0]
        assert (await desk.desk.get(second["id"], desk.desk.admin))["status"] == "waiting"
    await unreachable.close(close_connection_pool=True)
