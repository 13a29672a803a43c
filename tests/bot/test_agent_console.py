"""Human handoff end to end, in front of the real Rasa and action server: a Telegram
customer asks for a person, the handoff waits with its record, the bot stays silent,
an agent claims it through the API and replies on Telegram, resolves, and the bot
asks for CSAT and stores the answer. The API refuses missing or wrong tokens and
actions outside an agent's team; every action is audited; consoles get live events."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any, Dict, List, Tuple

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.app import ROUTER, create_app
from bot.handoff.desk import HandoffDesk
from bot.handoff.live import RedisLiveQueues
from bot.policies import load_channel_policy
from bot.settings import load_settings
from connectors.whatsapp import WhatsAppChannel
from tests.bot.conftest import ADMIN_TOKEN, PHOTO
from tests.bot.test_gateway import gateway, post_update, sent_texts, until, update
from tests.conftest import RasaStack
from tests.connectors import test_whatsapp as whatsapp_test
from tests.connectors.test_telegram import API
from tests.provider_api import ProviderAPI, RecordedRequest, free_port


def desk_of(client: TestClient) -> HandoffDesk:
    return client.app[ROUTER].desk


async def agent(client: TestClient, name: str, *teams: str, capacity: int = 3) -> str:
    desk = desk_of(client)
    return await desk.records.write(desk.store.add_agent, name, list(teams), capacity,
                                    time.time())


def bearer(token: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(client: TestClient, method: str, path: str, token: str,
               body: Any = None) -> Tuple[int, Any]:
    response = await client.request(method, path, headers=bearer(token), json=body)
    return response.status, await response.json()


async def ask_for_a_person(client: TestClient, bot_api: ProviderAPI, chat: int,
                           first_update: int) -> Dict[str, Any]:
    """The customer asks; returns the handoff record once the queue notice was sent."""
    before = len(sent_texts(bot_api, chat))
    assert await post_update(client, update(first_update, "I want to talk to a human",
                                            chat=chat)) == 200
    await until(lambda: len(sent_texts(bot_api, chat)) >= before + 2)
    desk = desk_of(client)
    handoff = await desk.records.read(desk.store.open_for, f"telegram:{chat}")
    assert handoff is not None
    return await desk.record(handoff)


def callback(update_id: int, chat: int, data: str) -> Dict[str, Any]:
    return {"update_id": update_id, "callback_query": {
        "id": f"cb{update_id}", "chat_instance": "-1", "data": data,
        "from": {"id": chat, "is_bot": False, "first_name": "Ann"},
        "message": {"message_id": 7, "date": 1, "text": "How would you rate…",
                    "chat": {"id": chat, "type": "private"}}}}


async def test_a_customer_goes_to_a_person_and_back_to_the_bot_with_csat(
        client: TestClient, bot_api: ProviderAPI) -> None:
    chat = 7100001
    record = await ask_for_a_person(client, bot_api, chat, 1000)
    escalated, queued = sent_texts(bot_api, chat)
    assert "customer care team" in escalated
    assert f"Your reference is {record['reference']}" in queued or "away right now" in queued
    assert (record["status"], record["queue"], record["reason"]) == (
        "waiting", "general", {"code": "customer_request", "rule": "customer_request", "tier": 1})
    assert record["customer"]["name"] == "Ann"
    # the newest in its queue: behind every other waiting one (earlier tests' too)
    assert record["position"] == len(desk_of(client).store.list("waiting", ["general"]))
    assert record["summary"]["next"] and record["sla"]["target_seconds"] == 900
    assert [t["role"] for t in record["transcript"]] == ["customer", "bot", "bot"]

    # while with a person, nothing goes to the bot
    assert await post_update(client, update(1001, "where is my order", chat=chat)) == 200
    desk = desk_of(client)
    await until(lambda: len(desk.records.transcript(f"telegram:{chat}")) == 4)
    await asyncio.sleep(0.5)
    assert len(sent_texts(bot_api, chat)) == 2

    alice = await agent(client, "alice", "general")
    status, claimed = await call(client, "POST", f"/api/handoffs/{record['id']}/claim", alice,
                                 {"agent": "alice"})
    assert status == 200 and (claimed["status"], claimed["agent"]) == ("active", "alice")
    status, replied = await call(client, "POST", f"/api/handoffs/{record['id']}/messages",
                                 alice, {"text": "Hi Ann, I'm Alice. Let me check that."})
    assert status == 200
    assert replied["deliveries"] == [{"status": "sent", "error": "", "template": ""}]
    assert sent_texts(bot_api, chat)[-1] == "Hi Ann, I'm Alice. Let me check that."
    assert replied["handoff"]["first_response_at"] is not None
    assert replied["handoff"]["transcript"][-1]["role"] == "agent"
    status, noted = await call(client, "POST", f"/api/handoffs/{record['id']}/notes", alice,
                               {"text": "customer has no order number"})
    assert noted["notes"][0]["author"] == "alice"

    status, refused = await call(client, "POST", f"/api/handoffs/{record['id']}/resolve",
                                 alice, {"disposition": "made_up"})
    assert status == 400 and "solved" in refused["error"]
    status, resolved = await call(client, "POST", f"/api/handoffs/{record['id']}/resolve",
                                  alice, {"disposition": "information_given", "note": "done"})
    assert status == 200 and resolved["status"] == "resolved"
    handback, question = sent_texts(bot_api, chat)[-2:]
    assert "back with the assistant" in handback and "rate" in question
    csat_buttons = json.loads(bot_api.calls(f"{API}/sendMessage")[-1]
                              .form["reply_markup"][0])["inline_keyboard"]
    assert [b[0]["callback_data"] for b in csat_buttons] == [f"csat:{n}" for n in range(1, 6)]

    assert await post_update(client, callback(1002, chat, "csat:4")) == 200
    await until(lambda: sent_texts(bot_api, chat)[-1] == "Thank you for telling us.")
    status, final = await call(client, "GET", f"/api/handoffs/{record['id']}", alice)
    assert final["csat"]["score"] == 4 and final["disposition"] == "information_given"
    for status, expected in (("resolved", True), ("waiting", False), ("active", False)):
        code, listed = await call(client, "GET", f"/api/handoffs?status={status}", alice)
        assert all(h["status"] == status for h in listed)
        assert (record["id"] in [h["id"] for h in listed]) is expected
    assert [(a["actor"], a["action"]) for a in final["audit"]] == [
        ("bot", "open"), ("alice", "claim"), ("alice", "reply"), ("alice", "note"),
        ("alice", "resolve")]

    # back with the bot
    sent = len(sent_texts(bot_api, chat))
    assert await post_update(client, update(1003, "where is my order", chat=chat)) == 200
    await until(lambda: len(sent_texts(bot_api, chat)) > sent)
    assert "order number" in sent_texts(bot_api, chat)[-1].lower()


async def test_a_verified_customer_hands_over_the_order_and_slots(
        client: TestClient, bot_api: ProviderAPI) -> None:
    chat = 7100002
    for update_id, text in ((1100, "where is my order A1001"), (1101, "buyer1@example.com")):
        count = len(sent_texts(bot_api, chat))
        assert await post_update(client, update(update_id, text, chat=chat)) == 200
        await until(lambda count=count: len(sent_texts(bot_api, chat)) > count)
    record = await ask_for_a_person(client, bot_api, chat, 1102)
    assert record["customer"]["verified"] is True
    assert record["customer"]["contact"] == "b***@example.com"
    assert record["slots"]["order_id"] == "A1001"
    order = record["order"]
    assert order["order_id"] == "A1001" and order["items"] and order["total"]
    assert order["shipment"]["tracking_number"] == "1Z999AA10123456784"
    # the slots too: the contact the customer verified with reaches agents masked
    assert record["slots"]["contact"] == "b***@example.com"
    assert "buyer1@example.com" not in json.dumps({k: v for k, v in record.items()
                                                   if k != "transcript"})


async def test_the_api_needs_a_valid_token(client: TestClient,
                                            bot_api: ProviderAPI) -> None:
    for headers in ({}, bearer("wrong"), {"Authorization": ADMIN_TOKEN},
                    {"Authorization": "Basic YWRtaW46YWRtaW4="}):
        response = await client.get("/api/handoffs", headers=headers)
        assert response.status == 401
        assert "token" in (await response.json())["error"]
    response = await client.post("/api/handoffs/1/claim", json={"agent": "admin"})
    assert response.status == 401
    status, me = await call(client, "GET", "/api/me", ADMIN_TOKEN)
    assert status == 200 and me["admin"] is True
    status, listed = await call(client, "GET", "/api/handoffs?status=nonsense", ADMIN_TOKEN)
    assert status == 400
    status, queues = await call(client, "GET", "/api/queues", ADMIN_TOKEN)
    assert [q["queue"] for q in queues] == ["logistics", "returns_refunds", "payments_fraud",
                                            "general"]


async def test_agents_act_only_in_their_teams_and_for_themselves(
        client: TestClient, bot_api: ProviderAPI) -> None:
    record = await ask_for_a_person(client, bot_api, 7100003, 1200)
    path = f"/api/handoffs/{record['id']}"
    dan = await agent(client, "dan", "logistics")
    bea = await agent(client, "bea", "general")
    assert (await call(client, "POST", f"{path}/claim", dan, {"agent": "dan"}))[0] == 403
    assert (await call(client, "POST", f"{path}/claim", bea, {"agent": "dan"}))[0] == 403
    assert (await call(client, "POST", f"{path}/messages", bea, {"text": "hi"}))[0] == 409
    status, moved = await call(client, "POST", f"{path}/transfer", bea, {"queue": "logistics"})
    assert status == 200 and (moved["queue"], moved["status"]) == ("logistics", "waiting")
    assert (await call(client, "POST", f"{path}/transfer", bea, {"queue": "sales"}))[0] == 400
    # the admin claims for dan, who now owns it; bea cannot reply in his conversation
    status, claimed = await call(client, "POST", f"{path}/claim", ADMIN_TOKEN, {"agent": "dan"})
    assert status == 200 and claimed["agent"] == "dan"
    assert (await call(client, "POST", f"{path}/claim", dan, {"agent": "dan"}))[0] == 409
    assert (await call(client, "POST", f"{path}/messages", bea, {"text": "hi"}))[0] == 403
    assert (await call(client, "POST", f"{path}/messages", dan, {"text": " "}))[0] == 400
    status, final = await call(client, "GET", path, dan)
    assert [(a["actor"], a["action"]) for a in final["audit"]] == [
        ("bot", "open"), ("bea", "transfer"), ("admin", "claim")]
    assert final["audit"][1]["detail"] == {"from": "general", "to": "logistics"}
    assert (await call(client, "GET", "/api/handoffs/999999", dan))[0] == 404
    assert (await call(client, "GET", "/api/audit", dan))[0] == 403
    status, trail = await call(client, "GET", "/api/audit", ADMIN_TOKEN)
    mine = [(e["actor"], e["action"]) for e in trail if e["handoff_id"] == record["id"]]
    assert status == 200 and mine == [("bot", "open"), ("bea", "transfer"), ("admin", "claim")]


async def test_an_open_console_gets_the_escalation_live(
        client: TestClient, bot_api: ProviderAPI) -> None:
    refused = await client.ws_connect("/api/events")
    await refused.send_json({"token": "wrong"})
    await refused.receive()
    assert refused.close_code == 4401
    socket = await client.ws_connect("/api/events")
    await socket.send_json({"token": ADMIN_TOKEN})
    assert (await socket.receive_json(timeout=5))["type"] == "ready"
    record = await ask_for_a_person(client, bot_api, 7100004, 1300)
    events: List[Dict[str, Any]] = []
    while not any(e["type"] == "handoff.opened" for e in events):
        events.append(await socket.receive_json(timeout=10))
    opened = next(e for e in events if e["type"] == "handoff.opened")
    assert opened["handoff"]["id"] == record["id"]
    assert opened["handoff"]["transcript"][0]["text"] == "I want to talk to a human"
    await post_update(client, update(1301, "hello? anyone?", chat=7100004))
    message = await socket.receive_json(timeout=10)
    assert message["type"] == "handoff.message"
    assert message["handoff"]["transcript"][-1]["text"] == "hello? anyone?"
    await socket.close()


async def test_an_agent_reply_outside_the_whatsapp_window_sends_only_the_template(
        rasa_stack: RasaStack) -> None:
    """The customer wrote 25 hours ago and the bot was down: the agent's reply may not
    go out as free text, so the approved template invites the customer back, and the
    reply does not count as a first response."""
    graph = await ProviderAPI().start()

    async def accepted(request: RecordedRequest) -> web.Response:
        number = len(graph.calls(whatsapp_test.MESSAGES_PATH))
        return web.json_response({"messaging_product": "whatsapp",
                                  "contacts": [{"input": request.json["to"]}],
                                  "messages": [{"id": f"wamid.OUT{number}"}]})

    graph.answer("POST", whatsapp_test.MESSAGES_PATH, accepted)
    policy = load_channel_policy().copy(update={"bot_retry_seconds": 0.2})
    settings = dataclasses.replace(load_settings(), rasa_url=f"http://127.0.0.1:{free_port()}",
                                   database_url=rasa_stack.database_url,
                                   var_dir=rasa_stack.var_dir, agent_api_token=ADMIN_TOKEN)
    channel = WhatsAppChannel(whatsapp_test.credentials(graph.url), policy)
    client = TestClient(TestServer(create_app(settings, {"whatsapp": channel}, policy)))
    await client.start_server()
    try:
        old = whatsapp_test.inbound("text", {"body": "my parcel is late"}, wamid="wamid.OLD1")
        old["timestamp"] = str(int(time.time()) - 25 * 3600)
        assert await whatsapp_test.post_signed(client, whatsapp_test.notification([old])) == 200
        desk = desk_of(client)
        conversation = f"whatsapp:{whatsapp_test.CUSTOMER}"
        await until(lambda: desk.store.open_for(conversation) is not None)
        handoff = desk.store.open_for(conversation)
        assert handoff["reason_code"] == "bot_unavailable"
        assert handoff["customer_contact"] == "16*****1234"
        path = f"/api/handoffs/{handoff['id']}"
        assert (await call(client, "POST", f"{path}/claim", ADMIN_TOKEN, {"agent": "admin"}))[0] \
            == 200
        before = len(graph.calls(whatsapp_test.MESSAGES_PATH))
        status, replied = await call(client, "POST", f"{path}/messages", ADMIN_TOKEN,
                                     {"text": "Sorry for the wait, your parcel ships today."})
        assert status == 200
        assert [(d["status"], d["template"]) for d in replied["deliveries"]] == [
            ("sent", "support_follow_up"), ("blocked", "")]
        sent = [r.json for r in graph.calls(whatsapp_test.MESSAGES_PATH)[before:]]
        assert [m["type"] for m in sent] == ["template"]
        assert replied["handoff"]["first_response_at"] is None
    finally:
        await client.close()
        await graph.stop()


async def next_event(socket: Any, kind: str, handoff_id: int) -> Dict[str, Any]:
    while True:
        event: Dict[str, Any] = await socket.receive_json(timeout=15)
        if event.get("type") == kind and event["handoff"]["id"] == handoff_id:
            return event


async def test_a_claim_through_one_gateway_shows_on_the_other_gateways_console(
        rasa_stack: RasaStack, bot_api: ProviderAPI, redis_url: str) -> None:
    policy = load_channel_policy()
    first, second = [await gateway(rasa_stack.rasa_url, rasa_stack, bot_api, policy,
                                   redis_url=redis_url) for _ in range(2)]
    try:
        token = await agent(first, "erin", "general")
        console = await second.ws_connect("/api/events")
        await console.send_json({"token": token})
        assert (await console.receive_json(timeout=5))["type"] == "ready"
        chat = 7300000 + int(time.time()) % 100000
        record = await ask_for_a_person(first, bot_api, chat, chat)
        opened = await next_event(console, "handoff.opened", record["id"])
        assert opened["handoff"]["conversation_id"] == f"telegram:{chat}"
        # both gateways read the queues' live state from Redis
        live = desk_of(second).live
        assert isinstance(live, RedisLiveQueues)
        assert record["id"] in await live.waiting(record["queue"])
        status, _ = await call(first, "POST", f"/api/handoffs/{record['id']}/claim", token,
                               {"agent": "erin"})
        assert status == 200
        claimed = await next_event(console, "handoff.claimed", record["id"])
        assert (claimed["handoff"]["status"], claimed["handoff"]["agent"]) == ("active", "erin")
        assert record["id"] not in await live.waiting(record["queue"])
        assert (await live.active())[record["id"]] == "erin"
        await console.close()
    finally:
        await first.close()
        await second.close()


async def test_an_agent_sees_the_photo_the_customer_sent_while_waiting(
        client: TestClient, bot_api: ProviderAPI) -> None:
    chat = 7100005
    record = await ask_for_a_person(client, bot_api, chat, 1400)
    photo = update(1401, "", chat=chat)
    del photo["message"]["text"]
    photo["message"]["caption"] = "this is how it arrived"
    photo["message"]["photo"] = [{"file_id": "AgADsmall", "file_unique_id": "s1", "width": 90,
                                  "height": 90, "file_size": 900},
                                 {"file_id": "AgADbig", "file_unique_id": "b1", "width": 1280,
                                  "height": 960, "file_size": 90000}]
    assert await post_update(client, photo) == 200
    desk = desk_of(client)
    await until(lambda: any(t.attachments for t in desk.records.transcript(f"telegram:{chat}")))
    status, shown = await call(client, "GET", f"/api/handoffs/{record['id']}", ADMIN_TOKEN)
    [attachment] = shown["transcript"][-1]["attachments"]
    assert attachment["type"] == "image" and shown["transcript"][-1]["role"] == "customer"
    path = f"/api/handoffs/{record['id']}/attachment"
    response = await client.get(path, params={"url": attachment["url"]},
                                headers=bearer(ADMIN_TOKEN))
    assert response.status == 200 and await response.read() == PHOTO
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get(path, params={"url": attachment["url"]})).status == 401
    elsewhere = await client.get(path, params={"url": "tg-file:AgADsomeoneelse"},
                                 headers=bearer(ADMIN_TOKEN))
    assert elsewhere.status == 404
    dan = await agent(client, "dan2", "logistics")
    other_team = await client.get(path, params={"url": attachment["url"]}, headers=bearer(dan))
    assert other_team.status == 403
    assert response.content_type == "image/jpeg"
    assert response.headers["Content-Security-Policy"] == "sandbox"


async def test_a_file_the_customer_sent_is_downloaded_as_bytes_never_run(
        client: TestClient, bot_api: ProviderAPI) -> None:
    """An HTML page or an SVG carries script: served as the customer typed it, it would
    run on the gateway's origin when an agent opened it."""
    chat = 7100006
    record = await ask_for_a_person(client, bot_api, chat, 1500)
    for n, (name, mime) in enumerate((("x.html", "text/html"), ("y.svg", "image/svg+xml"))):
        document = update(1501 + n, "", chat=chat)
        del document["message"]["text"]
        document["message"]["document"] = {"file_id": f"BQADdoc{n}", "file_unique_id": f"d{n}",
                                           "file_name": name, "mime_type": mime,
                                           "file_size": 900}
        assert await post_update(client, document) == 200
    desk = desk_of(client)
    await until(lambda: sum(len(t.attachments)
                            for t in desk.records.transcript(f"telegram:{chat}")) >= 2)
    status, shown = await call(client, "GET", f"/api/handoffs/{record['id']}", ADMIN_TOKEN)
    urls = [a["url"] for turn in shown["transcript"] for a in turn.get("attachments", [])]
    assert len(urls) == 2
    for url in urls:
        response = await client.get(f"/api/handoffs/{record['id']}/attachment",
                                    params={"url": url}, headers=bearer(ADMIN_TOKEN))
        assert response.status == 200
        assert response.content_type == "application/octet-stream"
        assert response.headers["Content-Disposition"] == "attachment"
        assert response.headers["Content-Security-Policy"] == "sandbox"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_agents_pages_allow_only_their_own_scripts_and_no_framing(
        client: TestClient) -> None:
    for path in ("/agent", "/agent/agent.js", "/dashboard", "/dashboard/dashboard.js"):
        response = await client.get(path)
        assert response.status == 200, path
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
        assert "unsafe-inline" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" not in (await client.get("/")).headers  # web chat
