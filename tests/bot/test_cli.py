"""The `bot` console command."""
from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp import web

from actions.store.sql import open_store
from bot.cli import main
from bot.messaging.records import GatewayRecords
from common.sql import create_store_engine
from connectors.message import Delivery, Reply
from tests.conftest import GATEWAY_BIN, REPO_ROOT
from tests.provider_api import ProviderAPI, RecordedRequest


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "serve", "seed", "validate", "nlu-report", "telegram",
                    "deliveries", "agents", "writes", "train"):
        assert command in out


def test_seed_resets_the_demo_store(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["seed", "--database-url", url]) == 0
    store = open_store(url)
    try:
        store.orders.cancel_order("A1004", reason="test")
        assert main(["seed", "--database-url", url]) == 0
        assert store.orders.get_order("A1004").status.value == "paid"
    finally:
        store.close()
    assert "221 orders" in capsys.readouterr().out


def test_writes_prints_the_audit_of_an_order(tmp_path, capsys, monkeypatch):
    import json
    from datetime import datetime, timezone

    from actions.store.types import WriteRecord

    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["seed", "--database-url", url]) == 0
    store = open_store(url)
    try:
        store.writes.claim(WriteRecord(
            key="k1", conversation_id="rest:ann", kind="cancel", order_id="A1004", params={},
            status="started", before={"status": "paid"},
            created_at=datetime.now(timezone.utc)))
        store.writes.finish("k1", "done", {"amount": "149.00"}, reference="RF-1")
    finally:
        store.close()
    monkeypatch.setenv("DATABASE_URL", url)
    capsys.readouterr()
    assert main(["writes", "a1004"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    write = json.loads(line)
    assert (write["kind"], write["status"], write["reference"], write["after"]) == (
        "cancel", "done", "RF-1", {"amount": "149.00"})
    assert main(["writes", "nonsense"]) == 2


def test_nlu_report_has_its_own_help(capsys):
    with pytest.raises(SystemExit):
        main(["nlu-report", "--help"])
    assert "--eval-dir" in capsys.readouterr().out


async def bot_command(*args: str, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(GATEWAY_BIN / "bot"), *args, cwd=REPO_ROOT,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_telegram_set_webhook_registers_the_url_and_secret() -> None:
    api = await ProviderAPI().start()
    token = "123456:ABC-DEF"

    async def ok(request: RecordedRequest) -> web.Response:
        return web.json_response({"ok": True, "result": True})

    api.answer("POST", f"/bot{token}/setWebhook", ok)
    env = {"TELEGRAM_BOT_TOKEN": token, "TELEGRAM_SECRET_TOKEN": "s3cret",
           "TELEGRAM_API_BASE_URL": api.url}
    try:
        code, output = await bot_command("telegram", "set-webhook", "--public-url",
                                         "https://support.example.com", **env)
        assert code == 0, output
        assert "https://support.example.com/webhooks/telegram" in output
        assert token not in output
        form = api.calls(f"/bot{token}/setWebhook")[0].form
        assert form["url"] == ["https://support.example.com/webhooks/telegram"]
        assert form["secret_token"] == ["s3cret"]
        code, output = await bot_command("telegram", "set-webhook", "--public-url",
                                         "http://insecure.example.com", **env)
        assert code == 1 and "https" in output
    finally:
        await api.stop()


def test_deliveries_lists_failed_sends(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    records = GatewayRecords(create_store_engine(url))
    records.record_sent("telegram:42", "telegram", [Reply("hi"), Reply("there")],
                        [Delivery("sent", "7", attempts=1),
                         Delivery("failed", error="HTTP 400: chat not found", attempts=1)])
    records.close()
    monkeypatch.setenv("GATEWAY_DATABASE_URL", url)
    assert main(["deliveries", "--status", "failed"]) == 0
    out = capsys.readouterr().out
    assert "chat not found" in out and "1 deliveries with status failed" in out


def test_agents_are_added_listed_and_removed_with_a_token_shown_once(
        tmp_path, monkeypatch, capsys):
    from bot.handoff.store import HandoffStore

    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    monkeypatch.setenv("GATEWAY_DATABASE_URL", url)
    assert main(["agents", "add", "alice", "--team", "general", "--team", "logistics"]) == 0
    token = capsys.readouterr().out.rsplit(": ", 1)[1].strip()
    store = HandoffStore(create_store_engine(url))
    alice = store.agent_for_token(token)
    assert alice is not None and list(alice.teams) == ["general", "logistics"]
    assert alice.capacity == 3  # default_capacity of policy/handoff.yml
    assert main(["agents", "list"]) == 0
    assert "alice" in capsys.readouterr().out
    assert main(["agents", "add", "bob", "--team", "sales"]) == 1
    assert "no team 'sales'" in capsys.readouterr().err
    # the admin token acts as "admin": an agent of that name would pass for it in the audit
    assert main(["agents", "add", "admin", "--team", "general"]) == 1
    assert "'admin' is reserved" in capsys.readouterr().err
    assert [a.name for a in store.agents()] == ["alice"]
    assert main(["agents", "remove", "alice"]) == 0
    assert store.agent_for_token(token) is None
    assert main(["agents", "remove", "alice"]) == 1
    assert [a["action"] for a in store.audit_trail()] == ["agent_added", "agent_removed"]
