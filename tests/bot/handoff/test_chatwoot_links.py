"""The Chatwoot target's records, on SQLite and PostgreSQL: a handoff is pushed by one
gateway at a time until complete, held customer messages go out oldest first and one
at a time, an agent's message is claimed for delivery once; and the store's resolve
from waiting and reopen that a helpdesk needs."""
from __future__ import annotations

from typing import Iterator, Tuple

import pytest

from actions.store.sql import open_store
from bot.handoff.chatwoot import links as link_tables
from bot.handoff.chatwoot.links import ChatwootLinks
from bot.handoff.store import OPEN, HandoffConflict, HandoffStore, metadata
from tests.bot.handoff.test_store import values

BIG_ID = 2**40  # Chatwoot's ids past 32 bits still fit


@pytest.fixture
def stores(store_url: str) -> Iterator[Tuple[HandoffStore, ChatwootLinks]]:
    store = open_store(store_url)
    link_tables.metadata.drop_all(store.engine)
    metadata.drop_all(store.engine)
    yield HandoffStore(store.engine), ChatwootLinks(store.engine)
    store.close()


def test_a_handoff_is_pushed_by_one_gateway_at_a_time_until_complete(
        stores: Tuple[HandoffStore, ChatwootLinks]) -> None:
    handoffs, links = stores
    handoff, _ = handoffs.open(values("telegram:1", 100.0))
    links.add(handoff["id"])
    links.add(handoff["id"])  # a second gateway's add changes nothing
    assert links.waiting() == [handoff["id"]]
    assert links.claim(handoff["id"], 200.0, 60.0)
    assert not links.claim(handoff["id"], 210.0, 60.0), "two gateways pushed at once"
    links.linked(handoff["id"], BIG_ID)
    links.release(handoff["id"])  # the notes failed: free for the next try
    assert links.waiting() == [handoff["id"]] and links.conversation_of(handoff["id"]) == BIG_ID
    assert links.claim(handoff["id"], 220.0, 60.0)
    links.completed(handoff["id"])
    assert links.waiting() == [] and not links.claim(handoff["id"], 400.0, 60.0)
    assert links.handoff_of(BIG_ID) == handoff["id"] and links.handoff_of(7) is None


def test_a_resolved_handoff_is_no_longer_offered(
        stores: Tuple[HandoffStore, ChatwootLinks]) -> None:
    handoffs, links = stores
    handoff, _ = handoffs.open(values("telegram:2", 100.0))
    links.add(handoff["id"])
    handoffs.resolve(handoff["id"], "solved", "", 150.0, OPEN)  # resolved while waiting
    assert links.waiting() == []


def test_held_messages_go_out_oldest_first_one_sender_at_a_time(
        stores: Tuple[HandoffStore, ChatwootLinks]) -> None:
    handoffs, links = stores
    handoff, _ = handoffs.open(values("telegram:3", 100.0))
    links.add(handoff["id"])
    links.hold(handoff["id"], "first")
    assert links.next_held(200.0, 60.0) is None  # Chatwoot has no conversation yet
    links.linked(handoff["id"], 55)
    links.hold(handoff["id"], "second")
    held = links.next_held(200.0, 60.0)
    assert held is not None and held[1:] == (55, "first")
    assert links.next_held(210.0, 60.0) is None, "the second overtook the first"
    links.unclaim(held[0])  # Chatwoot failed
    again = links.next_held(220.0, 60.0)
    assert again is not None and again[0] == held[0]
    links.sent(again[0])
    then = links.next_held(230.0, 60.0)
    assert then is not None and then[2] == "second"


def test_an_agents_message_is_delivered_once_unless_sending_failed(
        stores: Tuple[HandoffStore, ChatwootLinks]) -> None:
    _, links = stores
    assert links.first_delivery(BIG_ID, 1.0) and not links.first_delivery(BIG_ID, 2.0)
    links.forget_delivery(BIG_ID)
    assert links.first_delivery(BIG_ID, 3.0)


def test_a_resolved_handoff_reopens_only_while_the_conversation_has_no_other(
        stores: Tuple[HandoffStore, ChatwootLinks]) -> None:
    handoffs, _ = stores
    first, _ = handoffs.open(values("telegram:4", 100.0))
    resolved = handoffs.resolve(first["id"], "solved", "", 120.0, OPEN)
    assert resolved["csat_asked_at"] == 120.0
    reopened = handoffs.reopen(first["id"])
    assert (reopened["status"], reopened["resolved_at"], reopened["csat_asked_at"]) == (
        "waiting", None, None)
    with pytest.raises(HandoffConflict):
        handoffs.reopen(first["id"])  # open already
    handoffs.resolve(first["id"], "solved", "", 130.0, OPEN)
    handoffs.open(values("telegram:4", 140.0))  # the customer asked again meanwhile
    with pytest.raises(HandoffConflict):
        handoffs.reopen(first["id"])
