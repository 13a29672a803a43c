"""Privacy: a customer's data exported and erased everywhere we hold it (the gateway's
records and handoffs, the store's contact log and codes, Rasa's tracker store written
by Rasa's own SQLTrackerStore, the outbox), through the CLI and the admin API, on SQLite
(then no byte of it is left in any file) and PostgreSQL; retention purges on demand and
on the gateway's schedule; data files readable by their owner only; the policy checked."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import shutil
import stat
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List

import pytest
import pytest_asyncio
import sqlalchemy as sa
import yaml
from aiohttp.test_utils import TestClient, TestServer

from actions.identity import PROOF_FAILED
from actions.notify import Outbox
from actions.policy import load_policy
from actions.store.sql import SqlCodes, SqlContactLog
from actions.store.sql import metadata as store_metadata
from bot.app import create_app
from bot.cli import main
from bot.handoff import store as handoff_tables
from bot.handoff.chatwoot import links as chatwoot_tables
from bot.handoff.store import Agent, HandoffStore
from bot.messaging.records import GatewayRecords, deliveries, turns
from bot.messaging.records import metadata as records_metadata
from bot.outreach.tables import metadata as monitor_metadata
from bot.policies import load_channel_policy
from bot.privacy import PRIVACY, Holdings, Privacy, load_privacy_policy, purge_every
from bot.reporting.kpi import tracker_events
from bot.settings import load_settings
from common.paths import REPO_ROOT
from common.policy_files import PolicyError
from common.sql import create_store_engine, keep_private
from connectors.message import Delivery, Message, Reply
from tests.bot.conftest import ADMIN_TOKEN
from tests.bot.handoff.test_store import values as handoff_values

EMAIL = "quince.buyer@example.com"
PHONE = "+14155550123"
WHATSAPP = f"twilio:whatsapp:{PHONE}"  # the conversation, as the gateway names it
WORDS = "zebra-marmalade parcel never came"  # what the customer wrote
OTHER = "telegram:777001"  # another customer, who stays
OTHER_WORDS = "okapi-chutney question about sizes"
DAY = 86400.0


@dataclasses.dataclass(frozen=True)
class Place:
    """Where the test's data is held: the data directory and the three databases."""

    var: Path
    gateway_url: str
    store_url: str
    tracker_url: str

    def env(self) -> Dict[str, str]:
        return {"VAR_DIR": str(self.var), "GATEWAY_DATABASE_URL": self.gateway_url,
                "DATABASE_URL": self.store_url, "TRACKER_DATABASE_URL": self.tracker_url,
                "REDIS_URL": ""}

    def holdings(self) -> Holdings:
        holdings = Holdings(create_store_engine(self.gateway_url),
                            create_store_engine(self.store_url), self.tracker_url,
                            self.var / "outbox.jsonl")
        holdings.create_tables()
        return holdings


@pytest.fixture(params=["sqlite", "postgresql"])
def place(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Place]:
    var = tmp_path / "var"
    if request.param == "sqlite":
        found = Place(var, f"sqlite:///{var / 'gateway.db'}", f"sqlite:///{var / 'store.db'}",
                      f"sqlite:///{var / 'rasa_tracker.db'}")
    else:
        url = request.getfixturevalue("postgres_url")
        found = Place(var, url, url, url)
        engine = sa.create_engine(url)
        for tables in (records_metadata, handoff_tables.metadata, monitor_metadata,
                       chatwoot_tables.metadata, store_metadata, tracker_events.metadata):
            tables.drop_all(engine)
        engine.dispose()
    for name, value in found.env().items():
        monkeypatch.setenv(name, value)
    yield found


# The tests that hold a customer write Rasa's tracker store with Rasa's own code, so
# they run in Rasa's environment (.venv), not the gateway's (docs/development.md#tests).
WRITES_RASA_TRACKER = pytest.mark.rasa_env


async def rasa_tracker(place: Place, conversation: str, events: List[Any]) -> None:
    """Store a conversation as Rasa does: Rasa's own SQL tracker store writes the rows."""
    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.shared.core.trackers import DialogueStateTracker

    url = sa.engine.make_url(place.tracker_url)
    if url.get_backend_name() == "sqlite":
        store = SQLTrackerStore(dialect="sqlite", db=url.database)
    else:
        store = SQLTrackerStore(dialect="postgresql", host=url.host, port=url.port,
                                db=url.database, username=url.username,
                                query=dict(url.query))
    await store.save(DialogueStateTracker.from_events(conversation, events))
    store.engine.dispose()


def conversation_events(text: str, contact: str, at: float) -> List[Any]:
    from rasa.shared.core.events import ActionExecuted, BotUttered, SlotSet, UserUttered

    return [ActionExecuted("action_listen", timestamp=at),
            UserUttered(text, {"name": "not_received", "confidence": 1.0}, timestamp=at),
            SlotSet("verified_contact", contact, timestamp=at),
            BotUttered("Sorry to hear that, a person will look into it", timestamp=at)]


def message(conversation: str, text: str, at: float) -> Message:
    connector, sender = conversation.split(":", 1)
    channel = "whatsapp" if sender.startswith("whatsapp:") else connector
    return Message(connector=connector, channel=channel, sender=sender,
                   message_id=f"m{at}", text=text, received_at=at, profile_name="Quince")


async def hold_a_customer(place: Place, conversation: str, text: str, contact: str,
                          at: float) -> None:
    """What one customer leaves behind: a WhatsApp conversation with a handoff and an
    agent's note, a code emailed to them, the contact log, and Rasa's tracker."""
    holdings = place.holdings()
    records = GatewayRecords(holdings.gateway)
    records.record_inbound(message(conversation, text, at))
    records.record_sent(conversation, conversation.split(":")[0],
                        [Reply(text="Sorry to hear that")],
                        [Delivery(status="sent", provider_message_id=f"SM{at}")])
    handoffs = HandoffStore(holdings.gateway)
    handoff, _ = handoffs.open({**handoff_values(conversation, at),
                                "slots": {"verified_contact": contact, "complaint": text}})
    handoffs.add_note(handoff["id"], "alice", f"customer says: {text}", at)
    contacts, codes = SqlContactLog(holdings.store), SqlCodes(holdings.store)
    contacts.record(contact, "code_sent", conversation)
    contacts.record(f"sender:{conversation}", PROOF_FAILED, conversation)
    codes.issue(conversation, contact, "0" * 64)
    if "@" in contact:
        Outbox(holdings.outbox).send(contact, "Your code", "Your code is 424242.")
    records.close()
    holdings.store.dispose()
    await rasa_tracker(place, conversation, conversation_events(text, contact, at))


@pytest_asyncio.fixture
async def customers(place: Place) -> Place:
    """Our customer (WhatsApp, proved their email) and another one (Telegram)."""
    now = time.time()
    await hold_a_customer(place, WHATSAPP, WORDS, EMAIL, now)
    await hold_a_customer(place, OTHER, OTHER_WORDS, "other.buyer@example.com", now)
    return place


def files_holding(var: Path, *needles: str) -> Dict[str, List[str]]:
    """Which needles each file under the data directory holds, byte for byte."""
    found: Dict[str, List[str]] = {}
    for path in sorted(p for p in var.rglob("*") if p.is_file()):
        content = path.read_bytes()
        hits = [needle for needle in needles if needle.encode() in content]
        if hits:
            found[path.name] = hits
    return found


@WRITES_RASA_TRACKER
def test_the_cli_exports_everything_held_about_a_customer(
        customers: Place, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", "export", "--contact", EMAIL]) == 0
    held = json.loads(capsys.readouterr().out)
    assert held["conversation_ids"] == [WHATSAPP]
    assert [t["text"] for t in held["transcripts"]] == [WORDS, "Sorry to hear that"]
    assert held["conversations"][0]["sender"] == f"whatsapp:{PHONE}"
    assert held["deliveries"][0]["provider_message_id"].startswith("SM")
    assert [json.loads(h["slots"])["verified_contact"] for h in held["handoffs"]] == [EMAIL]
    assert held["notes"][0]["text"] == f"customer says: {WORDS}"
    assert {e["customer_key"] for e in held["contact_log"]} == {EMAIL, f"sender:{WHATSAPP}"}
    assert [c["contact"] for c in held["codes"]] == [EMAIL]
    assert [m["to"] for m in held["outbox"]] == [EMAIL]
    said = [e["data"]["text"] for e in held["tracker_events"] if e["type_name"] == "user"]
    assert said == [WORDS]
    assert OTHER_WORDS not in json.dumps(held)
    # the phone number finds the same conversation: WhatsApp's sender
    assert main(["privacy", "export", "--contact", "(415) 555-0123"]) == 0
    assert json.loads(capsys.readouterr().out)["conversation_ids"] == [WHATSAPP]
    assert main(["privacy", "export", "--contact", "nobody"]) == 2


@pytest_asyncio.fixture
async def gateway(customers: Place) -> AsyncIterator[TestClient]:
    settings = dataclasses.replace(
        load_settings(), var_dir=customers.var, database_url=customers.store_url,
        gateway_database_override=customers.gateway_url,
        tracker_database_url=customers.tracker_url, redis_url="",
        agent_api_token=ADMIN_TOKEN, rasa_url="http://127.0.0.1:9")
    client = TestClient(TestServer(create_app(settings, {}, load_channel_policy())))
    await client.start_server()
    yield client
    await client.close()


async def test_a_new_gateway_on_the_console_purges_without_the_helpdesks_tables(
        place: Place) -> None:
    """The purge also forgets helpdesk links; a gateway handing off to its own console
    never opened them, and its scheduled purge failed on the missing tables."""
    settings = dataclasses.replace(
        load_settings(), var_dir=place.var, database_url=place.store_url,
        gateway_database_override=place.gateway_url, tracker_database_url=place.tracker_url,
        redis_url="", agent_api_token=ADMIN_TOKEN, rasa_url="http://127.0.0.1:9")
    app = create_app(settings, {}, load_channel_policy())
    assert not any(app[PRIVACY].purge("schedule").values())


@WRITES_RASA_TRACKER
async def test_the_admin_erases_a_customer_and_no_file_keeps_a_byte_of_them(
        gateway: TestClient, customers: Place) -> None:
    needles = (EMAIL, PHONE, PHONE.lstrip("+"), "zebra-marmalade")
    if customers.gateway_url.startswith("sqlite"):
        before = files_holding(customers.var, *needles, "okapi-chutney")
        assert {"gateway.db", "store.db", "rasa_tracker.db", "outbox.jsonl"} <= {
            name.split("-")[0] for name in before}
    denied = await gateway.post("/api/privacy/erase", json={"contact": EMAIL})
    assert denied.status == 401
    token = HandoffStore(customers.holdings().gateway).add_agent("ann", ["general"], 2,
                                                                 time.time())
    refused = await gateway.post("/api/privacy/erase", json={"contact": EMAIL},
                                 headers={"Authorization": f"Bearer {token}"})
    assert refused.status == 403
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    exported = await gateway.get("/api/privacy/export", params={"contact": PHONE}, headers=admin)
    assert exported.status == 200
    assert (await exported.json())["conversation_ids"] == [WHATSAPP]

    erased = await gateway.post("/api/privacy/erase", json={"contact": EMAIL}, headers=admin)
    assert erased.status == 200
    removed = (await erased.json())["removed"]
    assert {kind: removed[kind] for kind in (
        "transcripts", "conversations", "deliveries", "handoffs", "notes", "contact_log",
        "codes", "outbox", "tracker_events")} == {
        "transcripts": 2, "conversations": 1, "deliveries": 1, "handoffs": 1, "notes": 1,
        "contact_log": 2, "codes": 1, "outbox": 1, "tracker_events": 4}

    again = await (await gateway.get("/api/privacy/export", params={"contact": EMAIL},
                                     headers=admin)).json()
    assert again["conversation_ids"] == []
    assert not any(again[kind] for kind in ("transcripts", "handoffs", "contact_log", "codes",
                                            "outbox", "tracker_events"))
    other = await (await gateway.get("/api/privacy/export", params={"contact": OTHER},
                                     headers=admin)).json()
    assert [t["text"] for t in other["transcripts"]][0] == OTHER_WORDS
    assert len(other["tracker_events"]) == 4

    # audited, by a hash: the audit log itself does not name the customer
    trail = HandoffStore(customers.holdings().gateway).audit_trail()
    privacy = [(a["actor"], a["action"]) for a in trail if a["action"].startswith("privacy")]
    assert privacy == [("api:admin", "privacy_export"), ("api:admin", "privacy_erase"),
                       ("api:admin", "privacy_export"), ("api:admin", "privacy_export")]
    assert EMAIL not in json.dumps(trail) and PHONE not in json.dumps(trail)
    erase = next(a for a in trail if a["action"] == "privacy_erase")
    assert erase["detail"]["contact_sha256"] == hashlib.sha256(EMAIL.encode()).hexdigest()

    if customers.gateway_url.startswith("sqlite"):
        left = files_holding(customers.var, *needles, "okapi-chutney")
        assert left and all(hits == ["okapi-chutney"] for hits in left.values()), left


@WRITES_RASA_TRACKER
def test_the_cli_erases_by_conversation_id(customers: Place,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", "erase", "--contact", OTHER]) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert printed["transcripts"] == "2" and printed["tracker_events"] == "4"
    assert printed["outbox"] == "0"  # a conversation id names no email
    assert main(["privacy", "export", "--contact", EMAIL]) == 0
    assert json.loads(capsys.readouterr().out)["transcripts"]  # the other customer stays


@WRITES_RASA_TRACKER
async def test_retention_purges_old_data_and_keeps_new(
        customers: Place, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    old = now - 800 * DAY  # past every window of policy/privacy.yml
    await hold_a_customer(customers, "telegram:555", "ancient-walrus words", "old@example.com",
                          old)
    holdings = customers.holdings()
    handoffs = HandoffStore(holdings.gateway)
    # an old handoff still open stays: only resolved ones are purged
    handoffs.open(handoff_values("telegram:556", old))
    resolved = handoffs.open_for("telegram:555")
    assert resolved is not None
    handoffs.claim(resolved["id"], Agent("alice", ("general",), 2), old)
    handoffs.resolve(resolved["id"], "solved", "", old)
    with holdings.gateway.begin() as db:  # the bot's reply was recorded now: age it
        db.execute(turns.update().values(at=old).where(turns.c.conversation_id == "telegram:555"))
        db.execute(deliveries.update().values(created_at=old, updated_at=old).where(
            deliveries.c.conversation_id == "telegram:555"))
    with holdings.store.begin() as db:  # the store's clock wrote them now: age them
        for table in (store_metadata.tables["contact_events"],
                      store_metadata.tables["one_time_codes"]):
            db.execute(table.update().where(table.c.conversation_id == "telegram:555")
                       .values(created_at=datetime_utc(old)))
    with holdings.outbox.open("a") as outbox:
        outbox.write(json.dumps({"to": "old@example.com", "text": "old code", "at": old}) + "\n")

    privacy = Privacy(holdings, load_privacy_policy(load_policy()), "US")
    task = asyncio.create_task(purge_every(privacy, GatewayRecords(holdings.gateway), 0.0))
    try:
        for _ in range(100):  # the gateway's schedule runs the purge
            await asyncio.sleep(0.05)
            audit = handoffs.audit_trail()
            if any(a["action"] == "privacy_purge" for a in audit):
                break
    finally:
        task.cancel()
    purges = [a for a in handoffs.audit_trail() if a["action"] == "privacy_purge"]
    assert len(purges) == 1 and purges[0]["actor"] == "schedule"
    assert {k: v for k, v in purges[0]["detail"]["counts"].items() if v} == {
        "transcripts": 2, "deliveries": 1, "conversations": 1, "handoffs": 1, "notes": 1,
        "contact_log": 2, "codes": 1, "tracker_events": 4, "outbox": 1}
    gone = privacy.export("telegram:555", "test")
    assert not any(gone[k] for k in ("transcripts", "handoffs", "contact_log", "codes",
                                     "tracker_events"))
    assert privacy.export("telegram:556", "test")["handoffs"]  # open: kept
    kept = privacy.export(EMAIL, "test")
    assert kept["transcripts"] and kept["handoffs"] and kept["tracker_events"]
    assert kept["contact_log"] and kept["codes"] and kept["outbox"]
    # on demand, nothing more is old enough
    assert main(["privacy", "purge"]) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert printed == dict.fromkeys(purges[0]["detail"]["counts"], "0")


def datetime_utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def test_data_files_are_for_their_owner_only(tmp_path: Path) -> None:
    made_before = tmp_path / "old.db"
    made_before.write_bytes(b"")
    made_before.chmod(0o644)
    for database in (tmp_path / "new.db", made_before):
        records = GatewayRecords(create_store_engine(f"sqlite:///{database}"))
        records.record_inbound(message(WHATSAPP, WORDS, time.time()))
        files = [p for p in tmp_path.iterdir() if p.name.startswith(database.name)]
        assert {p.name for p in files} >= {database.name, f"{database.name}-wal"}
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {
            p.name: 0o600 for p in files}
        records.close()
    rasa = tmp_path / "rasa_tracker.db"  # made before Rasa starts (bot run)
    keep_private(rasa)
    assert stat.S_IMODE(rasa.stat().st_mode) == 0o600


@pytest.mark.parametrize(("change", "named"), [
    ({"codes": 0}, "retention_days.codes"),
    ({"trackers": None}, "retention_days.trackers"),
    ({"contact_log": 3}, "retention_days.contact_log"),  # shorter than repeat_contact_days
])
def test_mistakes_in_the_policy_are_refused_naming_the_key(
        tmp_path: Path, change: Dict[str, Any], named: str) -> None:
    directory = tmp_path / "policy"
    shutil.copytree(REPO_ROOT / "policy", directory)
    path = directory / "privacy.yml"
    policy = yaml.safe_load(path.read_text())
    policy["retention_days"].update(change)
    policy["retention_days"] = {k: v for k, v in policy["retention_days"].items()
                                if v is not None}
    path.write_text(yaml.safe_dump(policy))
    with pytest.raises(PolicyError, match=f"privacy.yml: {named}"):
        load_privacy_policy(load_policy(directory), directory)
