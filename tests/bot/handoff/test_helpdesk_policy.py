"""policy/helpdesk.yml and HANDOFF_TARGET: the shipped file maps every queue onto a
Chatwoot team; a queue left out, an unknown queue or disposition, and missing or
wrong CHATWOOT_ variables are refused at start-up, naming the file and key or the
variable."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import yaml

from bot.policies import load_policies
from bot.settings import SettingsError, load_settings
from common.paths import REPO_ROOT
from common.policy_files import PolicyError

CHATWOOT_ENV = {"HANDOFF_TARGET": "chatwoot", "CHATWOOT_URL": "https://desk.example.com/",
                "CHATWOOT_ACCOUNT_ID": "3", "CHATWOOT_API_TOKEN": "token",
                "CHATWOOT_INBOX_ID": "7", "CHATWOOT_WEBHOOK_SECRET": "secret"}


def edited(tmp_path: Path, change: Callable[[Dict[str, Any]], None]) -> Path:
    directory = tmp_path / "policy"
    shutil.copytree(REPO_ROOT / "policy", directory)
    path = directory / "helpdesk.yml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    return directory


def test_the_shipped_file_maps_every_queue_to_a_chatwoot_team() -> None:
    policies = load_policies()
    chatwoot = policies.helpdesk.chatwoot
    assert chatwoot is not None
    assert set(chatwoot.teams) == set(policies.escalation.teams)
    assert chatwoot.resolved_disposition in policies.handoff.dispositions


@pytest.mark.parametrize("change, named", [
    (lambda d: d["chatwoot"]["teams"].pop("general"), "chatwoot.teams: no Chatwoot team "
                                                      "for the queue 'general'"),
    (lambda d: d["chatwoot"]["teams"].update(sales=9), "chatwoot.teams.sales: not a team"),
    (lambda d: d["chatwoot"]["teams"].update(general=0), "chatwoot.teams.general"),
    (lambda d: d["chatwoot"].update(resolved_disposition="closed"),
     "chatwoot.resolved_disposition: 'closed' is not a disposition"),
    (lambda d: d["chatwoot"].update(colour="red"), "chatwoot.colour"),
])
def test_mistakes_are_named_with_the_file_and_key(tmp_path: Path, change: Any,
                                                   named: str) -> None:
    with pytest.raises(PolicyError) as refused:
        load_policies(edited(tmp_path, change))
    assert "helpdesk.yml" in str(refused.value) and named in str(refused.value)


def test_the_console_is_the_default_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HANDOFF_TARGET", raising=False)
    settings = load_settings()
    assert (settings.handoff_target, settings.chatwoot) == ("console", None)


def test_chatwoot_takes_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CHATWOOT_ENV.items():
        monkeypatch.setenv(name, value)
    chatwoot = load_settings().chatwoot
    assert chatwoot is not None
    assert (chatwoot.url, chatwoot.account_id, chatwoot.inbox_id) == (
        "https://desk.example.com", 3, 7)


@pytest.mark.parametrize("env, named", [
    ({"CHATWOOT_API_TOKEN": ""}, "needs CHATWOOT_API_TOKEN"),
    ({"CHATWOOT_WEBHOOK_SECRET": " "}, "needs CHATWOOT_WEBHOOK_SECRET"),
    ({"CHATWOOT_INBOX_ID": "inbox"}, "CHATWOOT_INBOX_ID must be a number"),
    ({"HANDOFF_TARGET": "gorgias"}, "HANDOFF_TARGET='gorgias'"),
])
def test_missing_or_wrong_variables_stop_the_start(monkeypatch: pytest.MonkeyPatch,
                                                   env: Dict[str, str], named: str) -> None:
    for name, value in {**CHATWOOT_ENV, **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()
