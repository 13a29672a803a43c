"""Logs carry no email, phone number or street address: the redaction every process
installs, and an audit of the logs Rasa, the action server and the gateway wrote while
a customer gave all three."""
from __future__ import annotations

import json
import logging
import urllib.request
import uuid
from typing import Iterator

import pytest

from common.privacy import install_log_redaction, redact
from tests.conftest import LIVE_REST_TOKEN, RasaStack

SAID = {
    "email": "buyer1@example.com",
    "phone": "+1 (415) 555-0101",
    "local phone": "415-555-0199",
    "address": "12 Oak Street, Springfield, 62704",
}
# what a log must not carry of each, in any spelling
TRACES = {"email": ["buyer1@example.com"], "phone": ["555-0101", "4155550101"],
          "local phone": ["555-0199", "4155550199"], "address": ["12 Oak Street"]}


@pytest.mark.parametrize(("text", "expected"), [
    ("contact buyer1@example.com now", "contact [email] now"),
    ("HTTP Request: GET https://shop.example.com/wp-json/wc/v3/orders?search=buyer1%40"
     "example.com&per_page=50", "HTTP Request: GET https://shop.example.com/wp-json/wc/v3/"
     "orders?search=[email]&per_page=50"),
    ("call +1 (415) 555-0101 or +4915112345678", "call [phone] or [phone]"),
    ("or 415-555-0199 / (415) 555 0199", "or [phone] / [phone]"),
    ("ship to 12 Oak Street, Springfield", "ship to [address], Springfield"),
    ("to 1600 Pennsylvania Avenue NW", "to [address] NW"),
])
def test_redact_finds_contacts_and_addresses(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "telegram message 839465778722 met an outage", "order A1001 at 2026-11-24 07:16:07",
    "http://127.0.0.1:5005/webhooks/rest/webhook", "retrying in 0.5s (3 attempts)",
    "+1******4567 opted out",
])
def test_redact_leaves_ids_times_and_masked_numbers(text: str) -> None:
    assert redact(text) == text


@pytest.fixture
def redacting() -> Iterator[None]:
    unredacted = logging.getLogRecordFactory()
    install_log_redaction()
    yield
    logging.setLogRecordFactory(unredacted)


def test_every_record_is_redacted_before_handlers_see_it(
        redacting: None, caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()  # once is enough; again changes nothing
    log = logging.getLogger("some.library")
    try:
        raise ValueError("bad value buyer1@example.com")
    except ValueError:
        log.exception("failed for %s at %s", "+15551234567", "12 Oak Street")
    [record] = caplog.records
    assert record.getMessage() == "failed for [phone] at [address]"
    assert "buyer1@example.com" not in caplog.text and "[email]" in caplog.text


def test_no_log_of_rasa_the_actions_or_the_gateway_carries_what_a_customer_said(
        rasa_stack: RasaStack, live_gateway: str) -> None:
    sender = f"privacy-{uuid.uuid4().hex[:8]}"
    for text in ("where is my order A1001?", SAID["email"], f"my phone is {SAID['phone']}",
                 f"or call {SAID['local phone']}", f"I live at {SAID['address']}", "thanks"):
        request = urllib.request.Request(
            f"{live_gateway}/webhooks/rest/webhook", method="POST",
            data=json.dumps({"sender": sender, "message": text}).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {LIVE_REST_TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
    logs = {name: (rasa_stack.var_dir / name).read_text()
            for name in ("rasa.log", "actions.log", "gateway.log")}
    for name, text in logs.items():
        for kind, traces in TRACES.items():
            assert not [t for t in traces if t in text], f"{name} carries the customer's {kind}"
