"""The Rasa project as Rasa sees it: the data validates and every test story passes."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from actions.policy import load_policy

from .conftest import RASA, REPO_ROOT


def run_rasa(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RASA), *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900)


def test_data_validates_and_only_action_sent_responses_are_unused():
    result = run_rasa("data", "validate")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    unused = set(re.findall(r"The utterance '(\w+)' is not used", result.stdout + result.stderr))
    action_code = "".join(p.read_text() for folder in ("actions", "components")
                          for p in (REPO_ROOT / folder).glob("*.py"))
    # escalation rules name what the customer is told (policy/escalation.yml)
    rule_responses = {rule.response for rule in load_policy().rules.values()}
    sent_by_actions = {name for name in unused if f'"{name}"' in action_code
                       or name.startswith("utter_ask_") or name in rule_responses}
    assert unused == sent_by_actions, f"responses nothing sends: {unused - sent_by_actions}"


def test_every_test_story_passes(trained_model: Path, tmp_path: Path):
    """With --e2e each customer text goes through the NLU model, whose intent and
    entities must be the story's; without it Rasa would take the story's labels."""
    result = run_rasa("test", "core", "--stories", "tests/stories", "--model", str(trained_model),
                      "--out", str(tmp_path), "--fail-on-prediction-errors", "--e2e")
    failed = (tmp_path / "failed_test_stories.yml")
    report = failed.read_text() if failed.exists() else result.stdout[-3000:]
    assert result.returncode == 0, report
    assert "None of the test stories failed" in failed.read_text()
