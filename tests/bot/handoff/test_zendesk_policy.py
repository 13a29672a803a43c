"""policy/helpdesk.yml's zendesk section and the ZENDESK_ variables: the shipped file
tags every queue and tier; a queue or tier left out, an unknown queue, a tag Zendesk
would not keep, an unknown ticket-field use, an unknown disposition or key, and
missing or wrong variables are refused at start-up, naming the file and key or the
variable. The webhook's parsing refuses what is not SunCo's envelope, and an agent's
message is told from the gateway's own."""
from __future__ import annotations

from typing import Any, Dict

import pytest

from bot.handoff.zendesk.target import ORIGIN, ORIGIN_KEY, agent_message
from bot.handoff.zendesk.webhook import Malformed, parse
from bot.policies import load_policies
from bot.settings import SettingsError, load_settings
from common.paths import REPO_ROOT
from common.policy_files import PolicyError
from tests.bot.handoff.test_helpdesk_policy import edited
from tests.helpdesk_api.zendesk import SECRET_HEADER

ZENDESK_ENV = {"HANDOFF_TARGET": "zendesk", "ZENDESK_SUNCO_APP_ID": "5f1a2b3c4d5e6f7a8b9c0d1e",
               "ZENDESK_SUNCO_KEY_ID": "app_key", "ZENDESK_SUNCO_KEY_SECRET": "secret",
               "ZENDESK_SUNCO_WEBHOOK_SECRET": "hook"}


def test_the_shipped_file_tags_every_queue_and_tier_for_zendesk() -> None:
    policies = load_policies()
    zendesk = policies.helpdesk.zendesk
    assert zendesk is not None
    assert set(zendesk.queue_tags) == set(policies.escalation.teams)
    assert set(zendesk.tier_tags) == {1, 2, 3}
    assert zendesk.resolved_disposition in policies.handoff.dispositions


@pytest.mark.parametrize("change, named", [
    (lambda d: d["zendesk"]["queue_tags"].pop("general"),
     "zendesk.queue_tags: no tag for the queue 'general'"),
    (lambda d: d["zendesk"]["queue_tags"].update(sales="x"),
     "zendesk.queue_tags.sales: not a team"),
    (lambda d: d["zendesk"]["queue_tags"].update(general="Customer Care"),
     "zendesk.queue_tags.general"),
    (lambda d: d["zendesk"]["tier_tags"].pop(3), "zendesk.tier_tags: no tag for tier 3"),
    (lambda d: d["zendesk"]["tier_tags"].update({4: "x"}), "zendesk.tier_tags"),
    (lambda d: d["zendesk"].update(tags=["has space"]), "zendesk.tags"),
    (lambda d: d["zendesk"].update(ticket_fields={"colour": 1}),
     "zendesk.ticket_fields.colour: not one of"),
    (lambda d: d["zendesk"].update(ticket_fields={"order": 0}), "zendesk.ticket_fields.order"),
    (lambda d: d["zendesk"].update(resolved_disposition="closed"),
     "zendesk.resolved_disposition: 'closed' is not a disposition"),
    (lambda d: d["zendesk"].update(colour="red"), "zendesk.colour"),
])
def test_mistakes_are_named_with_the_file_and_key(tmp_path: Any, change: Any,
                                                   named: str) -> None:
    with pytest.raises(PolicyError) as refused:
        load_policies(edited(tmp_path, change))
    assert "helpdesk.yml" in str(refused.value) and named in str(refused.value)


def test_zendesk_takes_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ZENDESK_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("ZENDESK_SUNCO_API_BASE_URL", "ZENDESK_SWITCHBOARD_AGENT_INTEGRATION"):
        monkeypatch.delenv(name, raising=False)
    zendesk = load_settings().zendesk
    assert zendesk is not None
    assert (zendesk.app_id, zendesk.key_id, zendesk.key_secret, zendesk.webhook_secret,
            zendesk.api_url, zendesk.agent_integration) == (
        "5f1a2b3c4d5e6f7a8b9c0d1e", "app_key", "secret", "hook", "https://api.smooch.io",
        "zd-agentWorkspace")
    monkeypatch.setenv("ZENDESK_SUNCO_API_BASE_URL", "https://mystore.zendesk.com/sc/")
    monkeypatch.setenv("ZENDESK_SWITCHBOARD_AGENT_INTEGRATION", "5f1a2b3c4d5e6f7a8b9c0d23")
    zendesk = load_settings().zendesk
    assert zendesk is not None and zendesk.api_url == "https://mystore.zendesk.com/sc"
    assert zendesk.agent_integration == "5f1a2b3c4d5e6f7a8b9c0d23"


@pytest.mark.parametrize("env, named", [
    ({"ZENDESK_SUNCO_APP_ID": ""}, "needs ZENDESK_SUNCO_APP_ID"),
    ({"ZENDESK_SUNCO_KEY_ID": ""}, "needs ZENDESK_SUNCO_KEY_ID"),
    ({"ZENDESK_SUNCO_KEY_SECRET": " "}, "needs ZENDESK_SUNCO_KEY_SECRET"),
    ({"ZENDESK_SUNCO_WEBHOOK_SECRET": ""}, "needs ZENDESK_SUNCO_WEBHOOK_SECRET"),
    ({"ZENDESK_SUNCO_APP_ID": "my app/1"}, "ZENDESK_SUNCO_APP_ID='my app/1'"),
    ({"ZENDESK_SUNCO_API_BASE_URL": "api.smooch.io"},
     "ZENDESK_SUNCO_API_BASE_URL must be an http"),
])
def test_missing_or_wrong_variables_stop_the_start(monkeypatch: pytest.MonkeyPatch,
                                                   env: Dict[str, str], named: str) -> None:
    monkeypatch.delenv("ZENDESK_SUNCO_API_BASE_URL", raising=False)
    for name, value in {**ZENDESK_ENV, **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_suncos_envelope_parses() -> None:
    body = (b'{"app": {"id": "a1"}, "webhook": {"id": "w1", "version": "v2"}, "events": '
            b'[{"id": "e1", "createdAt": "2026-12-04T10:00:00.000Z", '
            b'"type": "switchboard:releaseControl", "payload": {"conversation": {"id": "c1"}}}]}')
    app_id, events = parse(body)
    assert app_id == "a1" and [e["type"] for e in events] == ["switchboard:releaseControl"]


@pytest.mark.parametrize("body", [
    b"", b"{", b"null", b"[]", b'{"events": []}', b'{"app": {"id": 3}, "events": []}',
    b'{"app": {"id": "a"}}', b'{"app": {"id": "a"}, "events": [1]}',
    b'{"app": {"id": "a"}, "events": [{"id": "", "type": "t", "payload": {}}]}',
    b'{"app": {"id": "a"}, "events": [{"id": 5, "type": "t", "payload": {}}]}',
    b'{"app": {"id": "a"}, "events": [{"id": "e", "type": "t", "payload": []}]}'])
def test_other_bodies_are_malformed(body: bytes) -> None:
    with pytest.raises(Malformed):
        parse(body)


def message(**changes: Any) -> Dict[str, Any]:
    return {"id": "m1", "author": {"type": "business", "displayName": "Maya"},
            "content": {"type": "text", "text": "Hello"},
            "source": {"type": "zd:agentWorkspace"}, **changes}


def test_only_agents_messages_are_sent_to_the_customer() -> None:
    assert agent_message(message())
    assert agent_message(message(content={"type": "image", "mediaUrl": "https://x/i.png"}))
    assert not agent_message(message(author={"type": "user", "userId": "u1"}))
    assert not agent_message(message(metadata={ORIGIN_KEY: ORIGIN}))
    assert not agent_message(message(content={"type": "text", "text": "  "}))
    assert not agent_message(message(id=7))


def test_the_docs_name_the_header_route_and_variables() -> None:
    docs = (REPO_ROOT / "docs" / "helpdesks.md").read_text()
    assert SECRET_HEADER in docs and "/webhooks/zendesk" in docs
    for name in (*ZENDESK_ENV, "ZENDESK_SUNCO_API_BASE_URL",
                 "ZENDESK_SWITCHBOARD_AGENT_INTEGRATION"):
        assert name in docs, name
