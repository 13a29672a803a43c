"""The policy files bot designers edit: the shipped ones load, broken ones are refused
with an error that names the file and the key."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from actions.policy import FAQ_TOPICS, REQUIRED_RULES, load_knowledge, load_peak_policy, load_policy
from common.policy_files import DEFAULT_POLICY_DIR, PolicyError


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    for path in DEFAULT_POLICY_DIR.glob("*.yml"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def edit(directory: Path, name: str, change) -> None:
    path = directory / name
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def test_shipped_policy_is_complete():
    policy = load_policy()
    assert set(REQUIRED_RULES) <= set(policy.rules)
    assert {rule.tier for rule in policy.rules.values()} == {1, 2, 3}
    assert policy.windows.return_days == 30
    assert policy.identity.verification_ttl_minutes == 30
    knowledge = load_knowledge(policy=policy)
    for topic in FAQ_TOPICS:
        assert "{" not in knowledge.answer(topic, policy)
    assert "30 days" in knowledge.answer("return_policy", policy)


@pytest.mark.parametrize("change,message", [
    (lambda d: d["rules"]["chargeback"].update(tier=5), "rules.chargeback.tier: must be 1, 2 or 3"),
    (lambda d: d["rules"].pop("safety_incident"), "rules: missing safety_incident"),
    (lambda d: d["trigger_phrases"].update(fire=["fire"]),
     "trigger_phrases.fire: no rule of that name"),
    (lambda d: d["rules"]["complaint"].update(response="utter_nothing"),
     "rules.complaint.response: no response 'utter_nothing'"),
    (lambda d: d["thresholds"].update(refund_auto_approve_max=-1),
     "thresholds.refund_auto_approve_max: must be greater than 0"),
    (lambda d: d["windows"].update(return_days="a month"), "windows.return_days"),
    (lambda d: d["thresholds"].update(refund_max=5), "thresholds.refund_max: extra fields"),
    (lambda d: d["rules"]["complaint"].update(team="marketing"),
     "rules.complaint.team: 'marketing' is not one of the teams"),
    (lambda d: d["remedies"].update(lost=["voucher"]), "remedies.lost.0"),
    (lambda d: d["trigger_phrases"].update(chargeback=[]), "trigger_phrases.chargeback"),
    (lambda d: d["identity"].update(default_phone_region="XX"),
     "identity.default_phone_region: 'XX' is not a region code"),
    (lambda d: d["identity"].update(slowdown_seconds=30),
     "identity.slowdown_seconds: must be between 0 and 5"),
    (lambda d: d["identity"].update(attempts_per_order=0),
     "identity.attempts_per_order: must be at least 1"),
    (lambda d: d["writes"].update(confirm_within_minutes=0),
     "writes.confirm_within_minutes: ensure this value is greater than 0"),
    (lambda d: d["order_cache"].update(ttl_seconds=-1),
     "order_cache.ttl_seconds: ensure this value is greater than or equal to 0"),
    (lambda d: d["order_cache"].update(ttl_seconds=7200),
     "order_cache.ttl_seconds: ensure this value is less than or equal to 3600"),
])
def test_invalid_escalation_policy_names_the_key(policy_copy, change, message):
    edit(policy_copy, "escalation.yml", change)
    with pytest.raises(PolicyError) as error:
        load_policy(policy_copy)
    assert "escalation.yml" in str(error.value)
    assert message in str(error.value)


def test_broken_yaml_is_reported_with_the_file(policy_copy):
    (policy_copy / "escalation.yml").write_text("rules: [unclosed\n")
    with pytest.raises(PolicyError, match="escalation.yml: not valid YAML"):
        load_policy(policy_copy)


def test_knowledge_needs_every_topic_and_known_placeholders(policy_copy):
    edit(policy_copy, "knowledge.yml", lambda d: d["answers"].pop("invoice"))
    with pytest.raises(PolicyError, match="missing answers for invoice"):
        load_knowledge(policy_copy)
    edit(policy_copy, "knowledge.yml",
         lambda d: d["answers"].update(invoice="Within {invoice_days} days"))
    with pytest.raises(PolicyError, match="answers.invoice: unknown placeholder"):
        load_knowledge(policy_copy)


def test_shipped_peak_policy_answers_every_templated_reason():
    peak = load_peak_policy()
    intents = set(yaml.safe_load((DEFAULT_POLICY_DIR.parent / "domain.yml").read_text())
                  ["intents"])
    assert set(peak.templated_reasons) <= intents  # the button payloads are /<intent>
    assert set(peak.self_service_buttons) <= intents
    for reason in peak.templated_reasons:
        assert reason in FAQ_TOPICS or peak.self_service_buttons[reason]


@pytest.mark.parametrize("change,message", [
    (lambda d: d["templated_reasons"].append("damaged_item"),
     "templated_reasons damaged_item are neither FAQ topics nor have a self_service_buttons"),
    (lambda d: d["self_service_buttons"].pop("refund_status"),
     "templated_reasons refund_status are neither FAQ topics"),
    (lambda d: d["first_response_seconds"].pop("sms"),
     "first_response_seconds: needs exactly the channels webchat, whatsapp, sms, telegram"),
    (lambda d: d["first_response_seconds"].update(webchat=0),
     "first_response_seconds: needs exactly the channels"),
    (lambda d: d["texts"].pop("still_need_person"), "texts.still_need_person: field required"),
    (lambda d: d["self_service_buttons"].update(order_stat="Check"),
     "no such intents in domain.yml: order_stat"),
])
def test_invalid_peak_policy_names_the_key(policy_copy, change, message):
    edit(policy_copy, "peak.yml", change)
    with pytest.raises(PolicyError) as error:
        load_peak_policy(policy_copy)
    assert "peak.yml" in str(error.value)
    assert message in str(error.value)


@pytest.mark.parametrize("text,rule", [
    ("I'll file a CHARGEBACK tomorrow", "chargeback"),
    ("going to dispute the charge with my bank", "chargeback"),
    ("the charger caught fire last night", "safety_incident"),
    ("my lawyer says otherwise", "legal_threat"),
    ("can I charge my phone with it", None),
    ("the battery is not charging", None),
    ("where is my order", None),
    # what the issue found misrouted or missed
    ("I don't want a chargeback, just my money", None),
    ("I won't file a chargeback if you fix it", None),
    ("I will sue", "legal_threat"),
    ("it started smoking", "safety_incident"),
    ("my son cut his hand on it", "safety_incident"),
    ("nobody was injured, but the glass broke", None),
    ("I don't know why it caught fire", "safety_incident"),
    ("no problem, but it exploded when I plugged it in", "safety_incident"),
    ("my friend Sue ordered it for me", None),
    ("I'll sue you, and my daughter was burned my hand", "safety_incident"),
    ("the box was empty", "stop_the_line_empty_box"),
    # "no" is a negation too (YAML once read it as the boolean false)
    ("no chargeback, please, just a refund", None),
])
def test_trigger_phrases_match_whole_words_in_any_case(text, rule):
    found = load_policy().trigger(text)
    assert (found and found.rule) == rule


def test_a_trigger_says_where_its_phrase_is():
    text = "Fine, but if I don't get my refund I will file a chargeback today"
    found = load_policy().trigger(text)
    assert found is not None and text[found.start:found.end] == "chargeback"


def test_bot_validate_reports_a_broken_policy(policy_copy, monkeypatch, capsys):
    from bot.cli import main

    monkeypatch.setenv("POLICY_DIR", str(policy_copy))
    assert main(["validate"]) == 0
    edit(policy_copy, "escalation.yml", lambda d: d["identity"].update(attempts_per_session=0))
    assert main(["validate"]) == 1
    assert "identity.attempts_per_session: must be at least 1" in capsys.readouterr().err


def test_bot_validate_reports_a_broken_channel_policy(policy_copy, monkeypatch, capsys):
    from bot.cli import main

    monkeypatch.setenv("POLICY_DIR", str(policy_copy))
    edit(policy_copy, "channels.yml", lambda d: d["retry"].update(attempts=0))
    assert main(["validate"]) == 1
    error = capsys.readouterr().err
    assert "channels.yml" in error and "retry.attempts" in error
    edit(policy_copy, "channels.yml", lambda d: (d["retry"].update(attempts=3),
                                                 d["rates"].pop("telegram_per_chat")))
    assert main(["validate"]) == 1
    assert "rates.telegram_per_chat: field required" in capsys.readouterr().err
