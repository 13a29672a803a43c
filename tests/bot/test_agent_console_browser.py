"""The agent console in headless Chromium, end to end: a customer asks for a person on
Telegram (a local server answers as the Bot API), the handoff appears live in the open
console, the agent claims it in the browser and replies, the customer receives the
reply, writes back (seen live), the agent resolves, and the bot asks for CSAT. Product
alerts and peak mode reach the open console live too."""
from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.bot.conftest import ADMIN_TOKEN
from tests.bot.test_agent_console import agent, call, desk_of
from tests.bot.test_gateway import post_update, sent_texts, until, update
from tests.browser import Browser
from tests.provider_api import ProviderAPI

CHAT = 7200001


async def test_an_agent_works_a_telegram_handoff_in_the_console(
        browser: Browser, client: TestClient, bot_api: ProviderAPI) -> None:
    token = await agent(client, "alice", "general")
    await browser.get(str(client.make_url("/agent")))
    await browser.type("#token", token)
    await browser.click("#sign-in")
    await browser.wait_for_text("#agent-name", "alice")
    await browser.wait_for_text("#live-status", "live")
    # the team hears of a product alert and of peak mode live
    await desk_of(client).bus.publish({"type": "monitor.alert", "alert": {
        "sku": "KTL-1", "product": "Blue kettle", "contacts": 6, "window_hours": 24}})
    await browser.wait_for_text("#console-status", "Product alert: 6 conversations about "
                                                   "Blue kettle (KTL-1) in 24 h")
    assert (await call(client, "POST", "/api/peak", ADMIN_TOKEN, {"on": True}))[0] == 200
    try:
        await browser.wait_until("return !document.querySelector('#peak').hidden")
        assert (await browser.texts("#peak"))[0].startswith("Peak mode")
    finally:
        await call(client, "POST", "/api/peak", ADMIN_TOKEN, {"on": False})
    await browser.wait_until("return document.querySelector('#peak').hidden")

    assert await post_update(client, update(2000, "I want to talk to a human", chat=CHAT)) == 200
    desk = desk_of(client)
    await until(lambda: desk.store.open_for(f"telegram:{CHAT}") is not None)
    handoff = desk.store.open_for(f"telegram:{CHAT}")
    item = f'.handoff-item[data-id="{handoff["id"]}"]'
    await browser.find(item)  # arrived by WebSocket: the page does not poll
    await browser.click(item)
    await browser.wait_for_text("#transcript .turn-customer", "talk to a human")
    await browser.wait_for_text("#record", "customer_request")

    await browser.click("#claim")
    await browser.wait_until("return !document.querySelector('#reply-send').disabled")
    await browser.type("#reply-text", "Hi, I'm Alice from customer care.")
    await browser.click("#reply-send")
    await until(lambda: "Hi, I'm Alice from customer care." in sent_texts(bot_api, CHAT))
    await browser.wait_for_text("#transcript .turn-agent", "I'm Alice")

    assert await post_update(client, update(2001, "Thanks, my parcel never came",
                                            chat=CHAT)) == 200
    await browser.wait_for_text("#transcript .turn-customer", "parcel never came")
    photo = update(2002, "", chat=CHAT)
    del photo["message"]["text"]
    photo["message"]["photo"] = [{"file_id": "AgADphoto", "file_unique_id": "p1", "width": 800,
                                  "height": 600, "file_size": 5000}]
    assert await post_update(client, photo) == 200
    # fetched with the agent's token through the gateway, shown from a blob
    await browser.wait_until("const img = document.querySelector("
                             "'#transcript .turn-customer .turn-attachments img');"
                             "return img && img.src.startsWith('blob:');")

    await browser.execute("document.querySelector('#disposition').value = arguments[0];",
                          "information_given")
    await browser.type("#resolve-note", "explained the delivery")
    await browser.click("#resolve")
    await until(lambda: "How would you rate" in sent_texts(bot_api, CHAT)[-1])
    record = await desk.get(handoff["id"], desk.admin)
    assert (record["status"], record["agent"], record["disposition"]) == (
        "resolved", "alice", "information_given")
    assert [a["action"] for a in record["audit"]] == ["open", "claim", "reply", "resolve"]
    # the next customer: "Take next" claims and opens the first one offered
    assert await post_update(client, update(2100, "I want to talk to a human",
                                            chat=CHAT + 1)) == 200
    await until(lambda: desk.store.open_for(f"telegram:{CHAT + 1}") is not None)
    second = desk.store.open_for(f"telegram:{CHAT + 1}")
    await browser.find(f'.handoff-item[data-id="{second["id"]}"]')
    # the session's database may hold older waiting handoffs: those come first
    offered = desk.store.list("waiting", ["general"])[0]
    await browser.click("#take-next")
    await browser.wait_for_text("#conversation-title", f"H-{offered['id']}")
    await until(lambda: desk.store.get(offered["id"])["agent"] == "alice")
    errors = [line for line in await browser.console() if line.startswith("SEVERE")]
    assert errors == []
