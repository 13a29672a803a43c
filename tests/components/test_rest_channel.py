"""The strict REST channel in a real Rasa whose tracker store (PostgreSQL) and action
server are each behind a proxy the tests cut: a turn that cannot read or save its
conversation, or whose custom action fails, is answered 503 and leaves the
conversation as it was, so the same message asked again once the part is back
carries on where the customer was."""
from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple
from urllib.parse import urlsplit

import aiohttp
import pytest
import sqlalchemy as sa

from bot.tools.launcher import drop_database, ensure_database
from tests.conftest import ACTION_SERVER_TOKEN, POSTGRES_URL, RASA, RasaStack, background
from tests.provider_api import free_port
from tests.tcp_proxy import CuttableProxy


@dataclass
class CuttableRasa:
    url: str
    database_url: str
    database: CuttableProxy
    actions: CuttableProxy


@pytest.fixture(scope="module")
def rasa(trained_model: Path, rasa_stack: RasaStack, postgres_url: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[CuttableRasa]:
    """Rasa keeping conversations in a PostgreSQL database of its own, and calling the
    session's action server, each through a cuttable proxy."""
    var = tmp_path_factory.mktemp("strict_rest")
    server = sa.engine.make_url(POSTGRES_URL)
    database_url = server.set(database=f"pytest_rest_{uuid.uuid4().hex[:8]}"
                              ).render_as_string(hide_password=False)
    ensure_database(database_url)
    action_server = urlsplit(rasa_stack.action_server_url)
    database, actions = CuttableProxy(server.port or 5432), CuttableProxy(action_server.port or 0)
    database.mend()
    actions.mend()
    endpoints = var / "endpoints.yml"
    endpoints.write_text(
        f"action_endpoint:\n  url: http://127.0.0.1:{actions.port}{action_server.path}\n"
        f"  headers:\n    Authorization: Bearer {ACTION_SERVER_TOKEN}\n"
        "tracker_store:\n  type: SQL\n  dialect: postgresql\n  url: 127.0.0.1\n"
        f"  port: {database.port}\n  db: {sa.engine.make_url(database_url).database}\n"
        f"  username: {server.username or 'postgres'}\n  password: '{server.password or ''}'\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        with background([str(RASA), "run", "--model", str(trained_model), "--port", str(port),
                         "--endpoints", str(endpoints), "--credentials", "credentials.yml"],
                        rasa_stack.env(), var / "rasa.log", f"{url}/"):
            yield CuttableRasa(url, database_url, database, actions)
    finally:
        database.cut()
        actions.cut()
        drop_database(database_url)


async def ask(rasa: CuttableRasa, sender: str, text: str) -> Tuple[int, Any]:
    body = {"sender": sender, "message": text}
    async with aiohttp.ClientSession() as session, \
            session.post(f"{rasa.url}/webhooks/rest/webhook", json=body) as answer:
        return answer.status, await answer.json()


def user_texts(rasa: CuttableRasa, sender: str) -> List[str]:
    """The customer's messages in the conversation Rasa kept."""
    engine = sa.create_engine(rasa.database_url)
    try:
        with engine.connect() as db:
            rows = db.execute(sa.text("SELECT data FROM events WHERE sender_id = :sender "
                                      "AND type_name = 'user' ORDER BY id"), {"sender": sender})
            return [json.loads(row.data)["text"] for row in rows]
    finally:
        engine.dispose()


def texts(replies: List[Dict[str, Any]]) -> List[str]:
    return [reply.get("text", "") for reply in replies]


async def test_a_turn_the_tracker_store_cannot_keep_is_503_and_leaves_the_conversation_as_it_was(
        rasa: CuttableRasa) -> None:
    sender = f"strict-{uuid.uuid4().hex[:8]}"
    await _order_form_asks_for_the_order_number(rasa, sender)
    with cut(rasa.database):
        status, answer = await ask(rasa, sender, "A1001")
    # Rasa's own channel answered 200 here, from a blank conversation kept in memory
    assert (status, answer) == (503, {"error": "the turn failed"})
    await _form_carries_on_with_the_order_number(rasa, sender)


async def test_a_turn_whose_custom_action_fails_is_503_and_leaves_the_conversation_as_it_was(
        rasa: CuttableRasa) -> None:
    sender = f"strict-{uuid.uuid4().hex[:8]}"
    await _order_form_asks_for_the_order_number(rasa, sender)
    with cut(rasa.actions):
        status, answer = await ask(rasa, sender, "A1001")
    # Rasa's own channel answered 200 without the form's validation, and kept the turn
    assert (status, answer) == (503, {"error": "the turn failed"})
    await _form_carries_on_with_the_order_number(rasa, sender)


async def test_a_turn_is_answered_503_while_the_conversation_cannot_be_read(
        rasa: CuttableRasa) -> None:
    sender = f"strict-{uuid.uuid4().hex[:8]}"
    with cut(rasa.database):
        first = await ask(rasa, sender, "hi")
        second = await ask(rasa, sender, "hi")
    assert first[0] == second[0] == 503, (first, second)
    status, replies = await ask(rasa, sender, "hi")
    assert status == 200 and replies, replies
    assert user_texts(rasa, sender) == ["hi"]


@contextlib.contextmanager
def cut(proxy: CuttableProxy) -> Iterator[None]:
    proxy.cut()
    try:
        yield
    finally:
        proxy.mend()


async def _order_form_asks_for_the_order_number(rasa: CuttableRasa, sender: str) -> None:
    status, replies = await ask(rasa, sender, "how do I cancel an order")
    assert status == 200 and "What's your order number?" in " ".join(texts(replies)), replies


async def _form_carries_on_with_the_order_number(rasa: CuttableRasa, sender: str) -> None:
    """The same message asked again finds the form still waiting for the order number,
    and the conversation holds it once."""
    status, replies = await ask(rasa, sender, "A1001")
    assert status == 200, replies
    assert any("email address or phone number" in text for text in texts(replies)), replies
    assert user_texts(rasa, sender) == ["how do I cancel an order", "A1001"]
