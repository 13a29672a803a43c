"""Handoff records in SQL, on SQLite and PostgreSQL: one open handoff per conversation,
offering order, atomic claims within capacity, transfers, CSAT, notes, audit, agents."""
from __future__ import annotations

import threading
from typing import Any, Dict, Iterator

import pytest

from actions.store.sql import open_store
from bot.handoff.store import Agent, HandoffConflict, HandoffStore, ReservedName, metadata

ALICE = Agent("alice", ("general",), 2)


@pytest.fixture
def handoffs(store_url: str) -> Iterator[HandoffStore]:
    store = open_store(store_url)
    metadata.drop_all(store.engine)
    yield HandoffStore(store.engine)
    store.close()


def values(conversation: str, created: float, tier: int = 1,
           queue: str = "general") -> Dict[str, Any]:
    return {"conversation_id": conversation, "connector": "telegram", "channel": "telegram",
            "reason_code": "customer_request", "rule": "customer_request", "tier": tier,
            "queue": queue, "priority": tier, "created_at": created,
            "sla_target_seconds": 900, "sla_due_at": created + 900,
            "slots": {"order_id": "A1001"}, "summary": {"what_happened": "asked"}}


def test_routing_finds_the_open_handoff_before_an_old_csat_question(
        handoffs: HandoffStore) -> None:
    old, _ = handoffs.open(values("c:1", 100.0))
    handoffs.claim(old["id"], ALICE, 110.0)
    handoffs.resolve(old["id"], "solved", "", 120.0)
    assert handoffs.routing("c:1", csat_since=0.0)["status"] == "resolved"
    new, _ = handoffs.open(values("c:1", 130.0))
    assert handoffs.routing("c:1", csat_since=0.0)["id"] == new["id"]
    assert handoffs.routing("c:2", csat_since=0.0) is None


def test_a_conversation_has_one_open_handoff(handoffs: HandoffStore) -> None:
    first, created = handoffs.open(values("telegram:1", 100.0))
    again, created_again = handoffs.open(values("telegram:1", 101.0))
    assert created and not created_again and again["id"] == first["id"]
    assert first["status"] == "waiting" and first["slots"] == {"order_id": "A1001"}
    assert handoffs.open_for("telegram:1")["id"] == first["id"]
    assert handoffs.open_for("telegram:2") is None


def test_waiting_handoffs_are_offered_by_priority_then_age(handoffs: HandoffStore) -> None:
    old, _ = handoffs.open(values("c:old", 100.0, tier=1))
    urgent, _ = handoffs.open(values("c:urgent", 300.0, tier=3))
    new, _ = handoffs.open(values("c:new", 200.0, tier=1))
    elsewhere, _ = handoffs.open(values("c:other", 50.0, queue="logistics"))
    waiting = handoffs.list("waiting", ["general"])
    assert [h["id"] for h in waiting] == [urgent["id"], old["id"], new["id"]]
    assert [h["id"] for h in handoffs.list("waiting", ["logistics", "payments_fraud"])] == [
        elsewhere["id"]]
    assert handoffs.list("waiting", []) == []
    assert [handoffs.position(h) for h in (urgent, old, new, elsewhere)] == [1, 2, 3, 1]


def test_only_one_agent_gets_a_claim_and_capacity_holds(handoffs: HandoffStore) -> None:
    first, _ = handoffs.open(values("c:1", 100.0))
    bob = Agent("bob", ("general",), 2)
    results: Dict[str, str] = {}

    def claim(agent: Agent) -> None:
        try:
            handoffs.claim(first["id"], agent, 150.0)
            results[agent.name] = "won"
        except HandoffConflict:
            results[agent.name] = "lost"

    threads = [threading.Thread(target=claim, args=(a,)) for a in (ALICE, bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results.values()) == ["lost", "won"]
    winner = handoffs.get(first["id"])
    assert winner["status"] == "active" and results[winner["agent"]] == "won"
    assert winner["claimed_at"] == 150.0

    second, _ = handoffs.open(values("c:2", 110.0))
    third, _ = handoffs.open(values("c:3", 120.0))
    solo = Agent("carol", ("general",), 1)
    handoffs.claim(second["id"], solo, 160.0)
    with pytest.raises(HandoffConflict, match="capacity"):
        handoffs.claim(third["id"], solo, 170.0)
    assert handoffs.claim_waits("general", 10) == [50.0, 50.0]


def test_the_next_claim_takes_the_first_offered_in_my_queues(handoffs: HandoffStore) -> None:
    handoffs.open(values("c:old", 100.0))
    urgent, _ = handoffs.open(values("c:urgent", 200.0, tier=2))
    handoffs.open(values("c:logistics", 50.0, tier=3, queue="logistics"))
    solo = Agent("solo", ("general",), 1)
    assert handoffs.claim_next(solo, ["general"], 300.0)["id"] == urgent["id"]
    with pytest.raises(HandoffConflict, match="capacity"):
        handoffs.claim_next(solo, ["general"], 310.0)
    with pytest.raises(HandoffConflict, match="nobody is waiting"):
        handoffs.claim_next(Agent("x", ("returns_refunds",), 1), ["returns_refunds"], 320.0)


def test_transfer_resolve_and_csat(handoffs: HandoffStore) -> None:
    handoff, _ = handoffs.open(values("c:1", 100.0))
    handoffs.claim(handoff["id"], ALICE, 110.0)
    moved = handoffs.transfer(handoff["id"], "logistics")
    assert (moved["status"], moved["queue"], moved["agent"]) == ("waiting", "logistics", None)
    assert moved["sla_due_at"] == handoff["sla_due_at"]  # the clock keeps running
    with pytest.raises(HandoffConflict):
        handoffs.resolve(handoff["id"], "solved", "", 120.0)  # not claimed again yet
    handoffs.claim(handoff["id"], Agent("dan", ("logistics",), 1), 130.0)
    handoffs.first_response(handoff["id"], 140.0)
    handoffs.first_response(handoff["id"], 150.0)  # only the first counts
    resolved = handoffs.resolve(handoff["id"], "solved", "sent a new label", 160.0)
    assert (resolved["status"], resolved["disposition"], resolved["first_response_at"]) == \
        ("resolved", "solved", 140.0)
    assert handoffs.open_for("c:1") is None
    assert handoffs.routing("c:1", csat_since=150.0)["id"] == handoff["id"]
    assert handoffs.routing("c:1", csat_since=170.0) is None  # asked too long ago
    handoffs.record_csat(handoff["id"], 4, 170.0)
    assert handoffs.routing("c:1", csat_since=150.0) is None
    assert handoffs.get(handoff["id"])["csat_score"] == 4


def test_a_customer_who_moves_on_is_not_asked_again(handoffs: HandoffStore) -> None:
    handoff, _ = handoffs.open(values("c:1", 100.0))
    handoffs.claim(handoff["id"], ALICE, 110.0)
    handoffs.resolve(handoff["id"], "solved", "", 120.0)
    handoffs.record_csat(handoff["id"], None, 130.0)
    assert handoffs.routing("c:1", csat_since=0.0) is None
    assert handoffs.get(handoff["id"])["csat_score"] is None


def test_queue_counts_flag_breaches(handoffs: HandoffStore) -> None:
    late, _ = handoffs.open(values("c:late", 100.0))
    handoffs.open(values("c:fresh", 1000.0))
    answered, _ = handoffs.open(values("c:answered", 100.0))
    handoffs.claim(answered["id"], ALICE, 200.0)
    handoffs.first_response(answered["id"], 300.0)
    counts = handoffs.queue_counts(now=1500.0)["general"]
    assert counts == {"waiting": 2, "active": 1, "breached": 1, "oldest_waiting_at": 100.0}


def test_notes_and_audit_trail(handoffs: HandoffStore) -> None:
    handoff, _ = handoffs.open(values("c:1", 100.0))
    handoffs.add_note(handoff["id"], "alice", "called the carrier", 110.0)
    handoffs.audit("alice", "note", handoff["id"], {}, 110.0)
    handoffs.audit("alice", "claim", handoff["id"], {"agent": "alice"}, 105.0)
    assert handoffs.notes(handoff["id"]) == [
        {"author": "alice", "text": "called the carrier", "at": 110.0}]
    assert [(a["action"], a["detail"]) for a in handoffs.audit_trail(handoff["id"])] == [
        ("open", {"reason": "customer_request", "queue": "general"}),
        ("claim", {"agent": "alice"}), ("note", {})]


def test_agents_have_hashed_tokens(handoffs: HandoffStore) -> None:
    token = handoffs.add_agent("alice", ["general", "logistics"], 3, 100.0)
    assert handoffs.agent_for_token(token) == Agent("alice", ["general", "logistics"], 3,
                                                    token_issued_at=100.0)
    assert handoffs.agent_for_token(token + "x") is None
    reissued = handoffs.add_agent("alice", ["general"], 2, 200.0)
    assert handoffs.agent_for_token(token) is None
    assert handoffs.agent_for_token(reissued).capacity == 2
    # re-issuing starts the token's age again
    assert handoffs.agent_for_token(reissued).token_issued_at == 200.0
    assert list(handoffs.agents_by_token_hash().values()) == [handoffs.agent_for_token(reissued)]
    with handoffs.engine.connect() as conn:
        stored = str(conn.exec_driver_sql("SELECT * FROM agents").all())
    assert token not in stored and "alice" in stored
    assert handoffs.remove_agent("alice") and handoffs.agent_for_token(reissued) is None


@pytest.mark.parametrize("name", ["admin", "Admin ", "bot", "cli"])
def test_the_names_the_audit_trail_uses_are_no_agents_names(handoffs: HandoffStore,
                                                            name: str) -> None:
    with pytest.raises(ReservedName, match="reserved"):
        handoffs.add_agent(name, ["general"], 3, 100.0)
    assert handoffs.agents() == []
