"""One-time codes (actions/codes.py, actions/notify.py): how they are sent and kept.
The whole way, through the gateway to the real Rasa, is in
tests/bot/test_self_service.py."""
from __future__ import annotations

import base64
import json
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from actions.codes import code_hash
from actions.notify import NotSent, Outbox, Smtp, TwilioSms, notifier_from_env
from actions.store.sql import Store, open_store
from tests.conftest import MailServer
from tests.provider_api import ProviderAPI, answer_twilio_messages, free_port, serving_in_a_thread


def test_the_outbox_is_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "var" / "outbox.jsonl")
    outbox.send("ann@example.com", "Your code", "Your code is 123456.")
    outbox.send("bob@example.com", "Your code", "Your code is 654321.")
    assert stat.S_IMODE(outbox.path.stat().st_mode) == 0o600
    sent = [json.loads(line) for line in outbox.path.read_text().splitlines()]
    assert [(m["to"], m["text"]) for m in sent] == [
        ("ann@example.com", "Your code is 123456."), ("bob@example.com", "Your code is 654321.")]


def test_smtp_hands_the_email_to_the_mail_server(mail_server: MailServer) -> None:
    Smtp(mail_server.url, "support@shop.test").send(
        "ann@example.com", "Your support chat code", "Your code is 123456.")
    [email] = [m for m in mail_server.received if m["To"] == "ann@example.com"]
    assert email["From"] == "support@shop.test"
    assert email["Subject"] == "Your support chat code"
    assert mail_server.codes_to("ann@example.com")[-1] == "123456"


def test_a_mail_server_that_cannot_be_reached_is_a_code_not_sent() -> None:
    with pytest.raises(NotSent, match="mail server"):
        Smtp(f"smtp://127.0.0.1:{free_port()}", "support@shop.test").send(
            "ann@example.com", "Your support chat code", "Your code is 123456.")


def test_notify_url_must_be_mail_and_a_mail_server_reaches_emails_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SMS_FROM", raising=False)
    monkeypatch.setenv("NOTIFY_URL", "http://mail.example.com")
    with pytest.raises(ValueError, match="smtp://"):
        notifier_from_env()
    monkeypatch.setenv("NOTIFY_URL", "smtp://user:p%40ss@mail.example.com:2525")
    smtp = notifier_from_env()
    assert isinstance(smtp, Smtp) and (smtp.host, smtp.port, smtp.password) == (
        "mail.example.com", 2525, "p@ss")
    assert smtp.reaches("ann@example.com") and not smtp.reaches("+14155550100")


def test_the_demo_outbox_keeps_codes_for_emails_and_phone_numbers() -> None:
    outbox = Outbox(Path("unused"))
    assert outbox.reaches("ann@example.com") and outbox.reaches("+14155550100")
    assert not outbox.reaches("4155550100")  # numbers reach the notifier in E.164


SMS_ENV = {"NOTIFY_URL": "smtp://mail.example.com", "NOTIFY_SMS_FROM": "+15017122661",
           "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t" * 32}


def test_notify_sms_from_adds_text_messages_through_twilio(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SMS_ENV.items():
        monkeypatch.setenv(name, value)
    ways = notifier_from_env()
    assert ways.reaches("+14155550100") and ways.reaches("ann@example.com")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "")
    with pytest.raises(ValueError, match="TWILIO_AUTH_TOKEN"):
        notifier_from_env()
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", SMS_ENV["TWILIO_AUTH_TOKEN"])
    monkeypatch.setenv("NOTIFY_SMS_FROM", "SHOP")
    with pytest.raises(ValueError, match="E.164"):
        notifier_from_env()


def test_a_text_message_goes_through_twilios_messages_api() -> None:
    sid, token = SMS_ENV["TWILIO_ACCOUNT_SID"], SMS_ENV["TWILIO_AUTH_TOKEN"]
    with serving_in_a_thread(ProviderAPI()) as api:
        path = answer_twilio_messages(api, sid)
        sms = TwilioSms(sid, token, "+15017122661", api.url)
        sms.send("+14155550101", "Your support chat code", "Your code is 123456.")
        [sent] = api.calls(path)
        assert sent.form == {"To": ["+14155550101"], "From": ["+15017122661"],
                             "Body": ["Your code is 123456."]}
        assert sent.headers["Authorization"] == "Basic " + base64.b64encode(
            f"{sid}:{token}".encode()).decode()
        api.fail_next("POST", path, web.json_response(
            {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}, status=400))
        with pytest.raises(NotSent, match="400"):
            sms.send("+14155550102", "Your support chat code", "Your code is 654321.")
    with pytest.raises(NotSent, match="Twilio"):  # the API is gone
        sms.send("+14155550101", "Your support chat code", "Your code is 123456.")


def test_a_code_works_once_for_its_conversation_within_its_tries(
        store: Store, store_url: str, now: datetime) -> None:
    codes = store.codes
    since = now - timedelta(minutes=10)
    codes.issue("conv-1", "ann@example.com", code_hash("conv-1", "123456"))
    # another conversation cannot use it, and it does not cost conv-1 a try
    assert codes.redeem("conv-2", code_hash("conv-2", "123456"), since, 3).contact is None
    wrong = codes.redeem("conv-1", code_hash("conv-1", "111111"), since, 3)
    assert wrong.contact is None and wrong.live
    right = codes.redeem("conv-1", code_hash("conv-1", "123456"), since, 3)
    assert right.contact == "ann@example.com"
    assert codes.redeem("conv-1", code_hash("conv-1", "123456"), since, 3).contact is None


def test_a_code_dies_after_its_wrong_tries_and_its_minutes(
        store: Store, store_url: str, now: datetime) -> None:
    codes = store.codes
    since = now - timedelta(minutes=10)
    codes.issue("conv-1", "ann@example.com", code_hash("conv-1", "123456"))
    assert codes.redeem("conv-1", code_hash("conv-1", "000000"), since, 2).live
    assert not codes.redeem("conv-1", code_hash("conv-1", "000001"), since, 2).live
    assert codes.redeem("conv-1", code_hash("conv-1", "123456"), since, 2).contact is None

    late = open_store(store_url, clock=lambda: now - timedelta(minutes=11))
    late.codes.issue("conv-3", "bob@example.com", code_hash("conv-3", "222222"))
    late.close()
    assert codes.redeem("conv-3", code_hash("conv-3", "222222"), since, 3).contact is None
