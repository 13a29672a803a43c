"""Fuzzing (hypothesis): malformed payloads at every endpoint of the gateway, built in
process with every channel on (Telegram, WhatsApp Cloud, Twilio, web chat) in front of
local provider APIs and an unreachable Rasa, and an admin token. Whatever arrives (bytes,
JSON of any shape, random forms, headers, wrong signatures, correctly signed bodies that
are not messages, random ids and query strings), the gateway answers below 500, stays up,
writes nothing to its database, queues nothing and calls no provider."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import string
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple
from urllib.parse import quote, urlencode

import pytest
import pytest_asyncio
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from bot.app import ROUTER, create_app
from bot.policies import load_channel_policy
from bot.settings import load_settings
from connectors.config import TwilioCredentials
from connectors.message import Message
from connectors.rest import RestChannel
from connectors.telegram import SECRET_HEADER, TelegramChannel
from connectors.twilio import TwilioChannel
from connectors.webchat import MAX_PACKET_BYTES, WebChatChannel
from connectors.whatsapp import WhatsAppChannel
from tests.connectors import test_twilio as twilio_test
from tests.connectors import test_whatsapp as whatsapp_test
from tests.connectors.test_telegram import SECRET
from tests.connectors.test_telegram import credentials as telegram_credentials
from tests.provider_api import ProviderAPI, free_port

ADMIN_TOKEN = "admin-token-for-fuzzing"
REST_TOKEN = "rest-token-for-fuzzing"
# FUZZ_EXAMPLES=1000 for a longer run
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@dataclasses.dataclass
class Gateway:
    client: TestClient
    api: ProviderAPI
    queued: List[Message]
    baseline: Dict[str, int]

    def counts(self) -> Dict[str, int]:
        engine = self.client.app[ROUTER].records.engine
        with engine.connect() as connection:
            return {table: connection.execute(
                sa.text(f'SELECT COUNT(*) FROM "{table}"')).scalar_one()
                for table in sa.inspect(engine).get_table_names()}

    async def request(self, method: str, path: str, **kwargs: Any) -> int:
        """The status of one request, after checking the gateway is unharmed."""
        async with self.client.request(method, path, allow_redirects=False,
                                       **kwargs) as response:
            await response.read()
            status = response.status
        assert status < 500, f"{method} {path} answered {status}"
        assert self.queued == [], "a fuzzed request was queued as a message"
        assert self.api.requests == [], "a fuzzed request made the gateway call a provider"
        assert self.counts() == self.baseline, "a fuzzed request wrote to the database"
        return status


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    api = await ProviderAPI().start()  # answers 404 to all, and records every call
    policy = load_channel_policy()
    settings_ = dataclasses.replace(
        load_settings(), var_dir=tmp_path, redis_url="", gateway_database_override="",
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        rasa_url=f"http://127.0.0.1:{free_port()}", agent_api_token=ADMIN_TOKEN,
        metrics_token="", webchat_secret="fuzz-webchat-secret",
        tracker_database_url=f"sqlite:///{tmp_path / 'tracker.db'}")
    channels = {
        "webchat": WebChatChannel(b"fuzz-webchat-secret", None),
        "twilio": TwilioChannel(TwilioCredentials(
            twilio_test.ACCOUNT_SID, twilio_test.AUTH_TOKEN, api.url), policy, ""),
        "whatsapp": WhatsAppChannel(whatsapp_test.credentials(api.url), policy),
        "telegram": TelegramChannel(telegram_credentials(api.url), policy),
        "rest": RestChannel(REST_TOKEN),
    }
    client = TestClient(TestServer(create_app(settings_, dict(channels), policy)))
    await client.start_server()
    queued: List[Message] = []
    inbox = client.app[ROUTER].inbox

    async def enqueue(message: Message) -> None:
        queued.append(message)

    inbox.enqueue = enqueue  # type: ignore[method-assign]
    fuzzed = Gateway(client, api, queued, {})
    fuzzed.baseline = fuzzed.counts()
    assert fuzzed.baseline, "the gateway's tables were not created"
    yield fuzzed
    await health_answers(client)
    assert fuzzed.counts() == fuzzed.baseline
    await client.close()
    await api.stop()


async def health_answers(client: TestClient) -> None:
    """Up: /health answers (503 'starting' here, since Rasa is unreachable)."""
    async with client.get("/health") as response:
        assert response.status in (200, 503)
        assert (await response.json())["gateway"] is True


# -- strategies --------------------------------------------------------------------------

# Printable text without control characters or surrogates (what a header may carry).
header_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=80)
keys = st.sampled_from([
    "update_id", "message", "callback_query", "edited_message", "chat", "id", "text",
    "from", "message_id", "data", "object", "entry", "changes", "value", "messages",
    "statuses", "type", "field", "metadata", "status", "recipient_id", "timestamp",
    "interactive", "button_reply", "image", "sender", "AccountSid", "Body", "To",
    "MessageSid", "MessageStatus", "NumMedia", "MediaUrl0", "ButtonPayload",
    "Latitude", "on", "note", "agent", "queue", "disposition", "contact",
]) | st.text(max_size=12)
scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(keys, children, max_size=5),
    max_leaves=20)
json_objects = st.dictionaries(keys, json_values, max_size=6)
bodies = st.one_of(
    st.binary(max_size=1024),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
content_types = st.sampled_from([
    None, "application/json", "application/x-www-form-urlencoded", "text/plain",
    "multipart/form-data; boundary=xyz", "multipart/form-data", "application/octet-stream",
    "application/json; charset=latin-1", "application/x-www-form-urlencoded; charset=x",
])
query_pairs = st.lists(st.tuples(keys | st.sampled_from(
    ["hub.mode", "hub.verify_token", "hub.challenge", "days", "status", "queue", "url",
     "EIO", "transport", "sid", "t", "j", "b64"]), st.text(max_size=30)
    | st.integers().map(str)), max_size=5)
# Not ".": /api/handoffs/./claim is the URL /api/handoffs/claim, another route (whose
# refusal of a POST is a 405); ".." stays, leaving /api/handoffs for no route at all.
ids = st.one_of(st.integers(), st.integers(-2**80, 2**80), st.text(min_size=1, max_size=30),
                st.sampled_from(["0", "-1", "1e3", " 1", "１", "9" * 30, "%00", ".."])
                ).filter(lambda value: str(value) != ".")
forms = st.dictionaries(keys, st.text(max_size=40), max_size=8)


def headers_with(content_type: Optional[str], extra: Dict[str, str]) -> Dict[str, str]:
    headers = dict(extra)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


def path_id(value: Any) -> str:
    return quote(str(value), safe="")


def query(pairs: List[Tuple[str, str]]) -> str:
    return urlencode(pairs, encoding="utf-8", errors="surrogatepass")


# A form as aiohttp's client sends a dict, encoded here: aiohttp 3.10 and later refuse
# to send a field name with a control character, which a provider's caller may still do.
FORM = "application/x-www-form-urlencoded"


def form_body(form: Dict[str, str]) -> str:
    return query(list(form.items()))


# -- webhooks, unsigned or wrongly signed ------------------------------------------------

WEBHOOKS = ["/webhooks/telegram", "/webhooks/whatsapp", "/webhooks/twilio",
            "/webhooks/twilio/status", "/webhooks/rest/webhook"]
SIGNATURE_HEADERS = [SECRET_HEADER, "X-Hub-Signature-256", "X-Twilio-Signature",
                     "Authorization"]


@FUZZ
@given(path=st.sampled_from(WEBHOOKS), body=bodies, content_type=content_types,
       headers=st.dictionaries(st.sampled_from(SIGNATURE_HEADERS), header_text, max_size=3))
async def test_webhooks_refuse_unsigned_and_garbled_posts(
        gateway: Gateway, path: str, body: bytes, content_type: Optional[str],
        headers: Dict[str, str]) -> None:
    # a random header equal to the real secret would be a signed request (tested below)
    assume(headers.get(SECRET_HEADER) != SECRET)
    status = await gateway.request("POST", path, data=body,
                                   headers=headers_with(content_type, headers))
    if path == "/webhooks/rest/webhook":
        assert status == 401


def _rest_message(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("sender"), str) \
        and bool(data["sender"].strip()) and isinstance(data.get("message"), str)


@FUZZ
@given(body=bodies, content_type=content_types)
async def test_the_rest_channel_refuses_garbled_messages_from_its_caller(
        gateway: Gateway, body: bytes, content_type: Optional[str]) -> None:
    # a well-formed message would be processed (and written down): tested end to end
    assume(not _rest_message(body))
    headers = headers_with(content_type, {"Authorization": f"Bearer {REST_TOKEN}"})
    assert await gateway.request("POST", "/webhooks/rest/webhook", data=body,
                                 headers=headers) == 400


@FUZZ
@given(sender=ids, pairs=query_pairs, authorized=st.booleans())
async def test_the_rest_conversation_history_with_random_senders_and_queries(
        gateway: Gateway, sender: Any, pairs: List[Tuple[str, str]], authorized: bool) -> None:
    headers = {"Authorization": f"Bearer {REST_TOKEN}"} if authorized else {}
    status = await gateway.request(
        "GET", f"/webhooks/rest/conversations/{path_id(sender)}?{query(pairs)}",
        headers=headers)
    assert status in ((200, 400, 404) if authorized else (401, 404))


@FUZZ
@given(body=json_values, signature=st.one_of(
    header_text,
    st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256={h}"),
    st.just("sha256="), st.just("sha1=abc")))
async def test_whatsapp_refuses_bad_signatures_of_real_shaped_bodies(
        gateway: Gateway, body: Any, signature: str) -> None:
    data = json.dumps(body).encode()
    assume(signature != whatsapp_test.signature(data))
    assert await gateway.request("POST", "/webhooks/whatsapp", data=data, headers={
        "X-Hub-Signature-256": signature, "Content-Type": "application/json"}) == 403


@FUZZ
@given(form=forms, signature=header_text, account=st.booleans())
async def test_twilio_refuses_forms_with_wrong_signatures(
        gateway: Gateway, form: Dict[str, str], signature: str, account: bool) -> None:
    if account:
        form["AccountSid"] = twilio_test.ACCOUNT_SID
    url = str(gateway.client.make_url("/webhooks/twilio"))
    assume(signature and signature != RequestValidator(twilio_test.AUTH_TOKEN)
           .compute_signature(url, form))
    assert await gateway.request("POST", "/webhooks/twilio", data=form_body(form), headers={
        "X-Twilio-Signature": signature, "Content-Type": FORM}) in (400, 403)


@FUZZ
@given(pairs=query_pairs, mode=st.sampled_from(["subscribe", "", "unsubscribe"]),
       token=header_text)
async def test_whatsapp_handshake_with_random_queries(
        gateway: Gateway, pairs: List[Tuple[str, str]], mode: str, token: str) -> None:
    pairs = [*pairs, ("hub.mode", mode), ("hub.verify_token", token)]
    status = await gateway.request("GET", f"/webhooks/whatsapp?{query(pairs)}")
    assert status in (200, 403)


# -- webhooks, correctly signed but not messages -----------------------------------------

# Without these keys no random shape is a Telegram message or a button press (Message
# needs a date; a CallbackQuery needs chat_instance), so none can be queued or answered.
@FUZZ
@given(body=json_values)
async def test_telegram_signed_bodies_that_are_not_messages(gateway: Gateway,
                                                            body: Any) -> None:
    data = json.dumps(body).encode()
    assume(b'"date"' not in data and b'"chat_instance"' not in data)
    status = await gateway.request("POST", "/webhooks/telegram", data=data, headers={
        SECRET_HEADER: SECRET, "Content-Type": "application/json"})
    assert status in (200, 400)


@FUZZ
@given(body=st.one_of(json_values, json_objects.map(lambda value: {
    "object": "whatsapp_business_account",
    "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]})))
# pydantic read a top-level list of pairs as an object, then raised TypeError: a 500
@example(body=[[None, None]])
async def test_whatsapp_signed_bodies_that_are_not_messages(gateway: Gateway,
                                                            body: Any) -> None:
    data = json.dumps(body).encode()
    # a message needs from, id, timestamp and type together; statuses may pass (unknown)
    assume(not all(f'"{key}"'.encode() in data for key in ("from", "id", "timestamp", "type")))
    status = await gateway.request("POST", "/webhooks/whatsapp", data=data, headers={
        "X-Hub-Signature-256": whatsapp_test.signature(data),
        "Content-Type": "application/json"})
    assert status in (200, 400)


@FUZZ
@given(form=forms, path=st.sampled_from(["/webhooks/twilio", "/webhooks/twilio/status"]),
       query_string=query_pairs)
async def test_twilio_signed_forms_that_are_not_messages(
        gateway: Gateway, form: Dict[str, str], path: str,
        query_string: List[Tuple[str, str]]) -> None:
    form["AccountSid"] = twilio_test.ACCOUNT_SID
    # a message needs MessageSid, From and To; without one it is refused as malformed
    assume(not all(form.get(key, "").strip() for key in ("MessageSid", "From", "To")))
    if query_string:
        path = f"{path}?{query(query_string)}"
    url = str(gateway.client.make_url(path))
    signature = RequestValidator(twilio_test.AUTH_TOKEN).compute_signature(url, form)
    status = await gateway.request("POST", path, data=form_body(form),
                                   headers={"X-Twilio-Signature": signature,
                                            "Content-Type": FORM})
    assert status in (200, 400, 403)


# -- the agent API, the dashboard's API and /metrics ---------------------------------------

API_GETS = ["/api/me", "/api/config", "/api/peak", "/api/queues", "/api/handoffs",
            "/api/handoffs/{id}", "/api/handoffs/{id}/attachment", "/api/audit",
            "/api/kpis", "/api/kpis.csv", "/api/events", "/metrics", "/api/privacy/export"]
API_POSTS = ["/api/peak", "/api/queues/next", "/api/handoffs/{id}/claim",
             "/api/handoffs/{id}/messages", "/api/handoffs/{id}/notes",
             "/api/handoffs/{id}/transfer", "/api/handoffs/{id}/resolve",
             "/api/privacy/erase"]
tokens = st.one_of(st.none(), st.just(ADMIN_TOKEN), header_text,
                   st.just(ADMIN_TOKEN + "x"), st.just(""))
schemes = st.sampled_from(["Bearer", "bearer", "Basic", "Bearer  ", ""])


def authorization(scheme: str, token: Optional[str]) -> Dict[str, str]:
    return {} if token is None else {"Authorization": f"{scheme} {token}".strip()}


@FUZZ
@given(route=st.sampled_from(API_GETS), handoff=ids, pairs=query_pairs, token=tokens,
       scheme=schemes)
async def test_api_gets_with_random_tokens_ids_and_queries(
        gateway: Gateway, route: str, handoff: Any, pairs: List[Tuple[str, str]],
        token: Optional[str], scheme: str) -> None:
    if route == "/api/privacy/export" and token == ADMIN_TOKEN:  # a real, audited export
        assume(not any(key == "contact" for key, _ in pairs))
    path = route.replace("{id}", path_id(handoff))
    status = await gateway.request("GET", f"{path}?{query(pairs)}",
                                   headers=authorization(scheme, token))
    if token != ADMIN_TOKEN and route not in ("/metrics", "/api/events"):
        assert status in (401, 404)


@FUZZ
@given(route=st.sampled_from(API_POSTS), handoff=ids, body=st.one_of(
    bodies, json_objects.map(lambda v: json.dumps(v).encode())), content_type=content_types,
    token=tokens, scheme=schemes)
async def test_api_posts_with_random_tokens_ids_and_bodies(
        gateway: Gateway, route: str, handoff: Any, body: bytes,
        content_type: Optional[str], token: Optional[str], scheme: str) -> None:
    if route == "/api/peak":  # a well-formed switch is a real admin action, and audited
        assume(not _peak_switch(body))
    if route == "/api/privacy/erase" and token == ADMIN_TOKEN:  # a real, audited erase
        assume(not _has_key(body, "contact"))
    path = route.replace("{id}", path_id(handoff))
    status = await gateway.request("POST", path, data=body,
                                   headers={**authorization(scheme, token),
                                            **headers_with(content_type, {})})
    if token != ADMIN_TOKEN:
        assert status in (401, 404)


def _has_key(body: bytes, key: str) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and key in data


def _peak_switch(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("on"), bool)


# -- the web chat's socket.io endpoint -----------------------------------------------------

@FUZZ
@given(pairs=query_pairs, method=st.sampled_from(["GET", "POST", "OPTIONS"]), body=bodies,
       polling=st.booleans())
async def test_socketio_with_random_queries_and_bodies(
        gateway: Gateway, pairs: List[Tuple[str, str]], method: str, body: bytes,
        polling: bool) -> None:
    if polling:
        pairs = [("EIO", "4"), ("transport", "polling"), *pairs]
    await gateway.request(method, f"/socket.io/?{query(pairs)}",
                          data=body if method == "POST" else None)


@FUZZ
@given(packets=st.lists(st.one_of(
    st.text(string.printable, max_size=60),
    st.builds(lambda n, event, data: f"4{n}" + json.dumps([event, data]),
              st.sampled_from(["2", "0", "1", "3"]),
              st.sampled_from(["session_request", "message", "x", ""]) | st.text(max_size=8),
              json_values)), min_size=1, max_size=3))
async def test_socketio_session_with_random_packets(gateway: Gateway,
                                                    packets: List[str]) -> None:
    """A real engine.io polling session, then random packets (never a user message)."""
    assume(not any("user_uttered" in packet for packet in packets))
    async with gateway.client.get("/socket.io/?EIO=4&transport=polling") as response:
        assert response.status == 200
        handshake = json.loads((await response.text())[1:])
    path = f"/socket.io/?EIO=4&transport=polling&sid={handshake['sid']}"
    await asyncio.wait_for(gateway.request(
        "POST", path, data="\x1e".join(packets).encode()), timeout=10)


# -- regressions found by the fuzzing ----------------------------------------------------

@pytest.mark.parametrize("packet", ["0", "2", "2probe", "5", "6", ""])
async def test_a_packet_no_client_sends_is_refused_and_the_session_lives_on(
        gateway: Gateway, packet: str) -> None:
    """python-engineio 4 closes a polling session on an open, ping or noop packet from
    a client and never answers that POST (the request hung, the session stayed in
    memory). The gateway refuses such a POST itself; the session goes on."""
    async with gateway.client.get("/socket.io/?EIO=4&transport=polling") as response:
        handshake = json.loads((await response.text())[1:])
    path = f"/socket.io/?EIO=4&transport=polling&sid={handshake['sid']}"
    refused = gateway.request("POST", path, data=f"40\x1e{packet}".encode())
    assert await asyncio.wait_for(refused, timeout=5) == 400
    assert await asyncio.wait_for(gateway.request("POST", path, data=b"40"), timeout=5) == 200

async def test_a_polling_body_over_the_buffer_size_is_refused_and_the_session_lives_on(
        gateway: Gateway) -> None:
    """python-engineio 4 closes the session on a body over its buffer size the same
    way, waiting for a queue no one reads, and never answers."""
    async with gateway.client.get("/socket.io/?EIO=4&transport=polling") as response:
        handshake = json.loads((await response.text())[1:])
    path = f"/socket.io/?EIO=4&transport=polling&sid={handshake['sid']}"
    too_large = b"4" + b"x" * MAX_PACKET_BYTES
    refused = gateway.request("POST", path, data=too_large)
    assert await asyncio.wait_for(refused, timeout=5) == 413
    assert await asyncio.wait_for(gateway.request("POST", path, data=b"40"), timeout=5) == 200


@pytest.mark.parametrize("handoff_id", ["999999999999999999999999999999", "1_0", "%201",
                                        "-1", "0"])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_handoff_id_that_is_not_plain_digits_of_a_64_bit_size_is_a_404(
        gateway: Gateway, handoff_id: str, method: str) -> None:
    """int() takes any size (SQLite then raised OverflowError: a 500), and ' 1' or '1_0'
    as numbers."""
    path = f"/api/handoffs/{handoff_id}" + ("/notes" if method == "POST" else "")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert await gateway.request(method, path, headers=headers, json={"text": "x"}) == 404


async def test_an_unknown_charset_is_a_400_not_a_500(gateway: Gateway) -> None:
    """aiohttp raises LookupError (not ValueError) decoding a body whose Content-Type
    names an unknown charset: the agent API and Twilio's form answered 500. (The REST
    channel reads JSON as bytes: RFC 8259 gives a charset parameter no meaning.)"""
    headers = {"Content-Type": "application/json; charset=x"}
    assert await gateway.request("POST", "/api/handoffs/1/notes", data=b'{"text": "x"}',
                                 headers={**headers,
                                          "Authorization": f"Bearer {ADMIN_TOKEN}"}) == 400
    form = {"AccountSid": twilio_test.ACCOUNT_SID, "Body": "hi"}
    url = str(gateway.client.make_url("/webhooks/twilio"))
    assert await gateway.request("POST", "/webhooks/twilio", data=b"Body=hi", headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=x",
        "X-Twilio-Signature": RequestValidator(twilio_test.AUTH_TOKEN)
        .compute_signature(url, form)}) == 400
