"""policy/helpdesk.yml's freshdesk section and the FRESHDESK_ variables: the shipped
file maps every queue onto a Freshdesk group and every tier onto a priority; a queue
or tier left out, an unknown queue, a priority out of range, an unknown disposition or
key, and missing or wrong variables are refused at start-up, naming the file and key
or the variable. The webhook body's parsing refuses what is not the documented shape."""
from __future__ import annotations

from typing import Any, Dict

import pytest

from bot.handoff.freshdesk.webhook import Malformed, parse
from bot.policies import load_policies
from bot.settings import SettingsError, load_settings
from common.paths import REPO_ROOT
from common.policy_files import PolicyError
from tests.bot.handoff.test_helpdesk_policy import edited
from tests.helpdesk_api.freshdesk import RULES, SECRET_HEADER

FRESHDESK_ENV = {"HANDOFF_TARGET": "freshdesk", "FRESHDESK_DOMAIN": "mystore.freshdesk.com",
                 "FRESHDESK_API_KEY": "key", "FRESHDESK_WEBHOOK_SECRET": "secret"}


def test_the_shipped_file_maps_every_queue_and_tier_for_freshdesk() -> None:
    policies = load_policies()
    freshdesk = policies.helpdesk.freshdesk
    assert freshdesk is not None
    assert set(freshdesk.groups) == set(policies.escalation.teams)
    assert set(freshdesk.priorities) == {1, 2, 3}
    assert freshdesk.resolved_disposition in policies.handoff.dispositions


@pytest.mark.parametrize("change, named", [
    (lambda d: d["freshdesk"]["groups"].pop("general"),
     "freshdesk.groups: no Freshdesk group for the queue 'general'"),
    (lambda d: d["freshdesk"]["groups"].update(sales=9), "freshdesk.groups.sales: not a team"),
    (lambda d: d["freshdesk"]["groups"].update(general=0), "freshdesk.groups.general"),
    (lambda d: d["freshdesk"]["priorities"].pop(3),
     "freshdesk.priorities: no priority for tier 3"),
    (lambda d: d["freshdesk"]["priorities"].update({2: 5}), "freshdesk.priorities.2"),
    (lambda d: d["freshdesk"]["priorities"].update({4: 1}), "freshdesk.priorities"),
    (lambda d: d["freshdesk"].update(tags=["x" * 33]), "freshdesk.tags"),
    (lambda d: d["freshdesk"].update(resolved_disposition="closed"),
     "freshdesk.resolved_disposition: 'closed' is not a disposition"),
    (lambda d: d["freshdesk"].update(colour="red"), "freshdesk.colour"),
])
def test_mistakes_are_named_with_the_file_and_key(tmp_path: Any, change: Any,
                                                   named: str) -> None:
    with pytest.raises(PolicyError) as refused:
        load_policies(edited(tmp_path, change))
    assert "helpdesk.yml" in str(refused.value) and named in str(refused.value)


def test_freshdesk_takes_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FRESHDESK_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FRESHDESK_API_BASE_URL", raising=False)
    freshdesk = load_settings().freshdesk
    assert freshdesk is not None
    assert (freshdesk.api_url, freshdesk.api_key, freshdesk.webhook_secret) == (
        "https://mystore.freshdesk.com", "key", "secret")
    monkeypatch.setenv("FRESHDESK_API_BASE_URL", "http://127.0.0.1:8999/")
    freshdesk = load_settings().freshdesk
    assert freshdesk is not None and freshdesk.api_url == "http://127.0.0.1:8999"


@pytest.mark.parametrize("env, named", [
    ({"FRESHDESK_API_KEY": ""}, "needs FRESHDESK_API_KEY"),
    ({"FRESHDESK_WEBHOOK_SECRET": " "}, "needs FRESHDESK_WEBHOOK_SECRET"),
    ({"FRESHDESK_DOMAIN": ""}, "needs FRESHDESK_DOMAIN"),
    ({"FRESHDESK_DOMAIN": "https://mystore.freshdesk.com"}, "FRESHDESK_DOMAIN="),
    ({"FRESHDESK_DOMAIN": "mystore"}, "FRESHDESK_DOMAIN='mystore'"),
    ({"FRESHDESK_API_BASE_URL": "mystore.freshdesk.com"},
     "FRESHDESK_API_BASE_URL must be an http"),
    ({"HANDOFF_TARGET": "gorgias"}, "HANDOFF_TARGET='gorgias'"),
])
def test_missing_or_wrong_variables_stop_the_start(monkeypatch: pytest.MonkeyPatch,
                                                   env: Dict[str, str], named: str) -> None:
    monkeypatch.delenv("FRESHDESK_API_BASE_URL", raising=False)
    for name, value in {**FRESHDESK_ENV, **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_the_documented_webhook_bodies_parse() -> None:
    for event, template in RULES.items():
        assert parse(template.replace("{{ticket.id}}", "4821").encode()) == (4821, event)
    assert parse(b'{"ticket_id": "4821", "event": "status", "status": "Resolved"}') == (
        4821, "status")


@pytest.mark.parametrize("body", [
    b"", b"{", b"null", b'"reply"', b'{"event": "reply"}', b'{"ticket_id": 0, "event": "reply"}',
    b'{"ticket_id": 1.5, "event": "reply"}', b'{"ticket_id": 99999999999999999999, '
    b'"event": "reply"}', b'{"ticket_id": 3, "event": ["reply"]}', b'{"ticket_id": 3}'])
def test_other_bodies_are_malformed(body: bytes) -> None:
    with pytest.raises(Malformed):
        parse(body)


def test_the_docs_give_admins_the_bodies_and_header_the_stand_in_sends() -> None:
    docs = (REPO_ROOT / "docs" / "helpdesks.md").read_text()
    for template in RULES.values():
        assert template in docs
    assert SECRET_HEADER in docs and "/webhooks/freshdesk" in docs
