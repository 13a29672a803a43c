"""`make run` end to end: the whole system on its embedded defaults, spoken to on
port 8080 as a customer would, then stopped with Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Dict, Iterator, List

import pytest

from bot.tools.launcher import port_open

from ..conftest import REPO_ROOT, stop_group

GATEWAY = "http://127.0.0.1:8080"
# var/ keeps Rasa's trackers between runs: each run talks as new customers
RUN = uuid.uuid4().hex[:8]
PORTS = (8080, 5005, 5055)


def rest_token() -> str:
    """The REST channel's token `make run` made in var/ (the environment gave none)."""
    return (REPO_ROOT / "var" / "rest-api.token").read_text().strip()


def say(sender: str, message: str) -> List[Dict[str, Any]]:
    request = urllib.request.Request(
        f"{GATEWAY}/webhooks/rest/webhook", method="POST",
        data=json.dumps({"sender": sender, "message": message}).encode(),
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {rest_token()}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def printed(make_run: subprocess.Popen, text: str, seconds: float) -> bool:
    """Whether `make run` prints (or printed) a line containing `text` within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(text in line for line in list(make_run.output)):  # type: ignore[attr-defined]
            return True
        time.sleep(0.2)
    return False


def texts(replies: List[Dict[str, Any]]) -> str:
    return " ".join(reply.get("text", "") for reply in replies)


@pytest.fixture(scope="module")
def make_run(trained_model) -> Iterator[subprocess.Popen]:
    busy = [port for port in PORTS if port_open(port)]
    if busy:
        pytest.fail(f"ports {busy} are in use: stop the running system before the tests")
    process = subprocess.Popen(["make", "run"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               env={**{k: v for k, v in os.environ.items()
                                       if k not in ("AGENT_API_TOKEN", "REST_API_TOKEN")},
                                    "DATABASE_URL": ""})
    output: List[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        output.append(line)
        if line.startswith("ready:") or process.poll() is not None:
            break
    assert any(line.startswith("ready:") for line in output), "".join(output)
    process.output = output  # type: ignore[attr-defined]
    # what it prints from now on, as it prints it
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    process.reader = reader  # type: ignore[attr-defined]
    yield process
    # when a test failed before the Ctrl-C test: stop it the same way
    stop_group(process, signal.SIGINT, 60)


def test_health_reports_every_component(make_run):
    with urllib.request.urlopen(f"{GATEWAY}/health", timeout=5) as response:
        health = json.load(response)
    assert response.status == 200
    assert health == {"status": "ok", "gateway": True, "rasa": True, "action_server": True,
                      "store": True, "channels": ["rest", "webchat"]}
    output = "".join(make_run.output)
    assert "/webhooks/rest/webhook" in output
    assert "web chat http://localhost:8080/" in output
    assert "agent console http://localhost:8080/agent" in output
    assert "dashboard http://localhost:8080/dashboard" in output


def test_the_agent_console_opens_with_the_local_admin_token(make_run):
    with urllib.request.urlopen(f"{GATEWAY}/agent", timeout=5) as response:
        assert "agent.js" in response.read().decode()
    token = (REPO_ROOT / "var" / "agent-admin.token").read_text().strip()
    request = urllib.request.Request(f"{GATEWAY}/api/me",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.load(response)["admin"] is True
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{GATEWAY}/api/handoffs", timeout=5)
    assert refused.value.code == 401


def test_the_web_chat_page_is_served(make_run):
    with urllib.request.urlopen(f"{GATEWAY}/", timeout=5) as response:
        page = response.read().decode()
    assert response.status == 200
    assert "webchat/chat.js" in page and "socket.io" in page


def test_verified_order_status_conversation(make_run):
    asked = say(f"e2e-status-{RUN}", "Hi, where is my order A1001?")
    assert "email" in texts(asked).lower()
    assert "1Z999AA10123456784" not in texts(asked)
    answer = say(f"e2e-status-{RUN}", "buyer1@example.com")
    assert answer[0]["recipient_id"] == f"e2e-status-{RUN}"
    assert "1Z999AA10123456784" in texts(answer) and "UPS" in texts(answer)
    again = say(f"e2e-status-{RUN}", "and where is order A1002?")
    assert "delivered" in texts(again).lower()  # same customer: not asked again


def test_wrong_email_reveals_nothing(make_run):
    say(f"e2e-stranger-{RUN}", "where is order A1001")
    reply = texts(say(f"e2e-stranger-{RUN}", "buyer2@example.com"))
    assert "couldn't match" in reply
    assert "UPS" not in reply and "1Z999" not in reply


def test_a_person_on_request_on_rest_keeps_the_escalation_internal(make_run):
    replies = say(f"e2e-person-{RUN}", "I want to talk to a human")
    assert "customer care team" in texts(replies)
    assert not [r for r in replies if "custom" in r], "the escalation payload leaked"


def test_the_rest_channel_needs_its_token_and_make_run_says_how(make_run):
    request = urllib.request.Request(f"{GATEWAY}/webhooks/rest/webhook", method="POST",
                                     data=b'{"sender": "me", "message": "hi"}',
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401
    assert printed(make_run, "REST channel: curl", 10)
    line = next(line for line in make_run.output if line.startswith("REST channel: curl"))
    assert f"Authorization: Bearer $(cat {REPO_ROOT / 'var' / 'rest-api.token'})" in line
    assert "/webhooks/rest/webhook" in line


def outside_address() -> str:
    """This machine's address on its network (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
        except OSError as error:
            pytest.skip(f"no network interface besides loopback ({error})")
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("no network interface besides loopback")
    return address


def test_only_the_gateway_is_reachable_from_the_network(make_run):
    address = outside_address()
    for port in (5005, 5055):
        with socket.socket() as probe:
            probe.settimeout(3)
            assert probe.connect_ex((address, port)) != 0, f"port {port} answers on {address}"
    with socket.socket() as probe:
        probe.settimeout(3)
        assert probe.connect_ex((address, 8080)) == 0


def test_the_action_server_answers_only_rasa(make_run):
    forged = urllib.request.Request("http://127.0.0.1:5055/webhook", method="POST",
                                    data=b'{"next_action": "action_resolve_request"}',
                                    headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged, timeout=5)
    assert refused.value.code == 401
    # Rasa has the secret: a conversation that runs the actions works (see above)
    assert "order number" in texts(say(f"e2e-actions-{RUN}", "where is my order?")).lower()


def test_malformed_request_is_refused_with_a_reason(make_run):
    request = urllib.request.Request(f"{GATEWAY}/webhooks/rest/webhook", method="POST",
                                     data=b'{"message": "hi"}',
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {rest_token()}"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 400
    assert "sender" in json.load(error.value)["error"]


def health() -> Dict[str, Any]:
    """The gateway's /health, answered 200 or 503 (a part down)."""
    try:
        with urllib.request.urlopen(f"{GATEWAY}/health", timeout=5) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as error:
        return dict(json.load(error))


def process_group_of(command: str) -> int:
    """The process group of the part `make run` started with this command line (each
    part has its own group)."""
    listing = subprocess.run(["ps", "-ww", "-eo", "pgid=,args="], capture_output=True, text=True,
                             check=True).stdout
    return next(int(line.split()[0]) for line in listing.splitlines() if command in line)




def test_rasa_killed_is_started_again_while_the_gateway_takes_messages(make_run):
    """As an out-of-memory kill would: the gateway stays up, the message sent meanwhile
    is answered (by the bot once it is back, else by the hand-over to a person after
    bot_retry_seconds), and Rasa comes back on its own."""
    os.killpg(process_group_of("rasa run --model models --port 5005"), signal.SIGKILL)
    assert printed(make_run, "rasa exited with code -9; starting it again in 1s", 10)
    meanwhile = say(f"e2e-outage-{RUN}", "where is my order?")
    assert texts(meanwhile).strip()
    deadline = time.monotonic() + 180
    while not health().get("rasa") and time.monotonic() < deadline:
        time.sleep(1)
    assert health()["rasa"] and make_run.poll() is None
    assert "order number" in texts(say(f"e2e-after-{RUN}", "where is my order?")).lower()


def test_ctrl_c_stops_everything(make_run):
    os.killpg(make_run.pid, signal.SIGINT)
    make_run.wait(timeout=60)
    make_run.reader.join(timeout=10)
    assert "stopped" in "".join(make_run.output)
    deadline = time.monotonic() + 10
    while any(port_open(port) for port in PORTS) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(port_open(port) for port in PORTS)
