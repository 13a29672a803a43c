"""The gateway's SQL records, on SQLite and PostgreSQL: transcript order, delivery
statuses that never go backwards, opt-outs, offered options, the inbox with its
dedupe keys, and the errors of the statements run on the driver's cursor."""
from __future__ import annotations

import time
from typing import Iterator, Optional

import pytest
import sqlalchemy as sa

from actions.store.sql import open_store
from bot.handoff.store import HandoffStore
from bot.messaging.inbox import decode, encode
from bot.messaging.records import GatewayRecords, inbox_spool, metadata, seen_messages
from common.sql import create_store_engine
from connectors.message import Attachment, Button, Delivery, Message, Reply, StatusUpdate
from tests.tcp_proxy import CuttableProxy

CONVERSATION = "twilio:+15550001111"


@pytest.fixture
def records(store_url: str) -> Iterator[GatewayRecords]:
    store = open_store(store_url)
    metadata.drop_all(store.engine)
    yield GatewayRecords(store.engine)
    store.close()


def inbound(text: str, at: float) -> Message:
    return Message(connector="twilio", channel="sms", sender="+15550001111",
                   message_id=f"SM{at}", text=text, store_address="+15559990000",
                   attachments=(Attachment("image", "https://media.test/1.jpg"),),
                   received_at=at)


def test_transcript_keeps_turns_in_order_with_buttons_and_attachments(
        records: GatewayRecords) -> None:
    records.record_inbound(inbound("hi", time.time()))
    records.record_sent(CONVERSATION, "twilio", [Reply("Which order?", (Button("A1001", "/x"),))],
                        [Delivery("sent", "SM9")])
    arrived = time.time()
    records.record_inbound(inbound("A1001", arrived))
    turns = records.transcript(CONVERSATION)
    assert [(t.role, t.text) for t in turns] == [
        ("customer", "hi"), ("bot", "Which order?"), ("customer", "A1001")]
    assert turns[0].attachments[0].url == "https://media.test/1.jpg"
    assert turns[1].buttons == (Button("A1001", "/x"),)
    conversation = records.conversation(CONVERSATION)
    assert conversation is not None
    assert conversation["last_inbound_at"] == arrived
    assert conversation["store_address"] == "+15559990000"


def test_a_message_recorded_late_keeps_its_place_by_arrival(records: GatewayRecords) -> None:
    """Messages are recorded when processed: the second one, sent before the bot
    answered the first, is recorded after that answer but belongs before it."""
    first_arrived = time.time()
    second_arrived = first_arrived + 0.001
    records.record_inbound(inbound("where is my order", first_arrived))
    time.sleep(0.01)  # the bot's answer comes after both messages arrived
    records.record_sent(CONVERSATION, "twilio", [Reply("Which one?")], [Delivery("sent", "S")])
    records.record_inbound(inbound("A1001", second_arrived))
    assert [t.text for t in records.transcript(CONVERSATION)] == [
        "where is my order", "A1001", "Which one?"]


def test_an_answer_sent_while_the_channel_was_still_busy_comes_after_the_reply(
        records: GatewayRecords) -> None:
    """The customer can read a reply and answer before the channel's send returns: the
    reply keeps the time it was handed over, so the answer is not put before it."""
    records.record_inbound(inbound("where is my order", time.time()))
    handed_over = time.time()
    records.record_inbound(inbound("A1001", handed_over + 0.001))
    records.record_sent(CONVERSATION, "twilio", [Reply("Which one?")], [Delivery("sent", "S")],
                        handed_over_at=handed_over)
    assert [t.text for t in records.transcript(CONVERSATION)] == [
        "where is my order", "Which one?", "A1001"]


def test_delivery_status_only_moves_forward(records: GatewayRecords) -> None:
    records.record_sent(CONVERSATION, "twilio", [Reply("hello")],
                        [Delivery("sent", "SM1", attempts=2)])
    for status in ("read", "delivered", "sent"):
        assert records.record_status(StatusUpdate("twilio", "SM1", status))
    assert records.deliveries()[0]["status"] == "read"
    assert not records.record_status(StatusUpdate("twilio", "SM-unknown", "delivered"))
    records.record_status(StatusUpdate("twilio", "SM1", "failed", error="30008 unknown"))
    failed = records.deliveries(status="failed")
    assert [(d["provider_message_id"], d["error"]) for d in failed] == [("SM1", "30008 unknown")]


def test_opt_out_and_back_in(records: GatewayRecords) -> None:
    before = time.time()
    records.set_opted_out("twilio", "+15550001111", True)
    records.set_opted_out("twilio", "+15550001111", True)
    assert records.opted_out_since("twilio", "+15550001111") >= before
    assert records.opted_out_since("telegram", "+15550001111") is None
    records.set_opted_out("twilio", "+15550001111", False)
    assert records.opted_out_since("twilio", "+15550001111") is None


def test_offered_options_are_remembered_per_conversation(records: GatewayRecords) -> None:
    records.record_inbound(inbound("hi", time.time()))
    options = [Button("Refund", "/choose_remedy{\"remedy\":\"refund\"}"), Button("No", "/deny")]
    records.remember_options(CONVERSATION, options)
    assert records.offered_options(CONVERSATION) == options
    assert records.offered_options("twilio:+1999") == []


def keep(records: GatewayRecords, message: Message, dedupe_seconds: float) -> Optional[int]:
    """Keep the message in the inbox as the gateway does without Redis."""
    return records.spool(encode(message), message.dedupe_key, dedupe_seconds)


def test_a_provider_retry_is_not_kept_again_until_the_key_expires(
        records: GatewayRecords) -> None:
    first = inbound("hi", 100.0)
    kept = keep(records, first, 60)
    assert kept is not None and keep(records, first, 60) is None
    assert [spool_id for spool_id, _ in records.spooled(10)] == [kept]
    short = inbound("again", 200.0)
    assert keep(records, short, 0.01) is not None
    time.sleep(0.05)
    assert keep(records, short, 60) is not None
    assert [decode(raw).text for _, raw in records.spooled(10)] == ["hi", "again", "again"]


def test_kept_messages_are_read_oldest_first_after_a_given_one_and_taken_out(
        records: GatewayRecords) -> None:
    ids = [keep(records, inbound(text, time.time()), 60) for text in ("1", "2", "3")]
    assert [spool_id for spool_id, _ in records.spooled(10, after_id=ids[0] or 0)] == ids[1:]
    records.unspool(ids[1] or 0)
    assert [decode(raw).text for _, raw in records.spooled(10)] == ["1", "3"]


def test_expired_dedupe_keys_are_purged(records: GatewayRecords) -> None:
    keep(records, inbound("old", time.time()), 0.01)
    time.sleep(0.05)
    records.inbound_since_purge = 10_000  # as if many messages had come since
    keep(records, inbound("new", time.time()), 60)
    with records.engine.connect() as db:
        keys = db.execute(sa.select(seen_messages.c.key)).scalars().all()
    assert len(keys) == 1 and keys[0].startswith("twilio:SM")
    assert records.inbound_since_purge == 0


def test_a_message_that_could_not_be_kept_is_not_claimed_and_the_error_is_sqlalchemys(
        records: GatewayRecords) -> None:
    """The inbox tells an outage (which it waits out) from a failure by SQLAlchemy's
    error types, also for the statements run on the driver's cursor; and keeping that
    failed half-way left no dedupe key behind, so the message sent again is new."""
    message = inbound("my parcel 7731 never came", time.time())
    inbox_spool.drop(records.engine)
    with pytest.raises(sa.exc.DBAPIError) as failed:
        keep(records, message, 60)
    assert message.text not in str(failed.value), "the error quotes no customer's words"
    inbox_spool.create(records.engine)
    assert keep(records, message, 60) is not None
    assert [decode(raw).text for _, raw in records.spooled(10)] == [message.text]


def test_postgresql_out_of_reach_is_an_operational_error_and_passes(
        postgres_url: str) -> None:
    """Cut off, recording a message and reading its handoff raise OperationalError (an
    outage); back, they work again on fresh connections."""
    server = sa.engine.make_url(postgres_url)
    proxy = CuttableProxy(server.port or 5432)
    proxy.mend()
    engine = create_store_engine(
        server.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    records, handoffs = GatewayRecords(engine), HandoffStore(engine)
    with engine.begin() as db:
        db.execute(seen_messages.delete())
    try:
        assert keep(records, inbound("hi", time.time()), 60) is not None
        proxy.cut()
        later = inbound("A1001", time.time())
        with pytest.raises(sa.exc.OperationalError):
            keep(records, later, 60)
        with pytest.raises(sa.exc.OperationalError):
            records.record_inbound(later)
        with pytest.raises(sa.exc.OperationalError):
            handoffs.routing(CONVERSATION, csat_since=0.0)
        proxy.mend()
        assert keep(records, later, 60) is not None
        records.record_inbound(later)
        assert handoffs.routing(CONVERSATION, csat_since=0.0) is None
    finally:
        proxy.cut()
        records.close()
