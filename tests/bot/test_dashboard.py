"""The dashboard after real conversations through the gateway: its API (agents' tokens,
the KPIs, product alerts, the CSV) and the page in headless Chromium (sign in, tiles, charts, the
oldest open handoff, the CSV download, the peak-mode banner)."""
from __future__ import annotations

import csv
import io
import time
from typing import List

from aiohttp.test_utils import TestClient

from bot.outreach.policy import load_monitor_policy
from bot.outreach.products import SkuContacts, record_alert
from bot.policies import load_channel_policy
from tests.bot.conftest import ADMIN_TOKEN
from tests.bot.test_agent_console import agent, ask_for_a_person, bearer, call, desk_of
from tests.bot.test_gateway import post_update, sent_texts, until, update
from tests.browser import Browser
from tests.provider_api import ProviderAPI

CHAT = 7500001


def oldest_open(client: TestClient, limit: int = 10) -> List[str]:
    """References of the open handoffs, oldest first (the session's database holds
    earlier tests' too)."""
    store = desk_of(client).store
    still_open = store.list("waiting", limit=1000) + store.list("active", limit=1000)
    return [f"H-{h['id']}" for h in sorted(still_open, key=lambda h: h["created_at"])][:limit]


async def test_the_kpis_for_agents_as_json_and_csv(client: TestClient,
                                                   bot_api: ProviderAPI) -> None:
    assert await post_update(client, update(5000, "where is my order?", chat=CHAT)) == 200
    await until(lambda: len(sent_texts(bot_api, CHAT)) >= 1)
    handoff = await ask_for_a_person(client, bot_api, CHAT + 1, 5001)
    token = await agent(client, "kim", "logistics")
    desk = desk_of(client)
    products = load_monitor_policy(load_channel_policy()).products
    sku = f"SKU-DASH-{int(time.time())}"
    await desk.records.write(record_alert, desk.records.engine, SkuContacts(
        sku, "Blue kettle", {f"telegram:{n}" for n in range(6)}), products, time.time())

    assert (await client.get("/api/kpis")).status == 401
    assert (await client.get("/api/kpis", params={"days": "0"},
                             headers=bearer(token))).status == 400
    response = await client.get("/api/kpis", params={"days": "7"}, headers=bearer(token))
    assert response.status == 200
    data = await response.json()
    assert len(data["days"]) == 7 and data["days"][-1] == data["daily"][-1]["day"]
    today = data["daily"][-1]
    assert today["conversations"] >= 2 and today["handoffs"] >= 1
    assert [h["reference"] for h in data["oldest_open"]] == oldest_open(client)
    assert handoff["reference"] in oldest_open(client, 1000)
    reasons = {r["reason"]: r for r in data["top_reasons"]}
    assert reasons["order_status"]["label"] == "Where is my order"
    assert any(q["key"] == handoff["queue"] for q in data["period"]["queue"])
    [alert] = [a for a in data["product_alerts"] if a["sku"] == sku]
    assert (alert["product"], alert["contacts"]) == ("Blue kettle", 6)

    csv_response = await client.get("/api/kpis.csv", params={"days": "7"},
                                    headers=bearer(ADMIN_TOKEN))
    assert csv_response.status == 200
    assert csv_response.content_type == "text/csv"
    assert f'filename="kpis-{data["days"][0]}-{data["days"][-1]}.csv"' in \
        csv_response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await csv_response.text())))
    assert {r["dimension"] for r in rows} == {"all", "channel", "intent", "queue"}
    assert (await client.get("/api/kpis.csv")).status == 401


async def test_the_dashboard_in_a_browser(browser: Browser, client: TestClient,
                                          bot_api: ProviderAPI) -> None:
    await ask_for_a_person(client, bot_api, CHAT + 2, 5100)  # one open handoff at least
    status, _ = await call(client, "POST", "/api/peak", ADMIN_TOKEN, {"on": True})
    assert status == 200
    try:
        await see_the_dashboard(browser, client)
    finally:
        await call(client, "POST", "/api/peak", ADMIN_TOKEN, {"on": False})


async def see_the_dashboard(browser: Browser, client: TestClient) -> None:
    await browser.get(str(client.make_url("/dashboard")))
    await browser.type("#token", "not-a-token")
    await browser.click("#sign-in")
    await browser.wait_for_text("#login-error", "not accepted")
    await browser.console()  # the refused token's 401, expected
    await browser.execute("document.querySelector('#token').value = '';")
    await browser.type("#token", ADMIN_TOKEN)
    await browser.click("#sign-in")
    await browser.wait_until("return document.querySelector('#dashboard').dataset.loaded")
    # peak mode is on: the banner says so
    assert (await browser.texts("#peak"))[0].startswith("Peak mode")
    assert await browser.execute("return !document.querySelector('#peak').hidden;")
    conversations = await browser.texts('.tile[data-kpi="conversations"] dd')
    assert int(conversations[0]) >= 1
    # today's bars (the teams' today): conversations and handoffs
    summary = await client.get("/api/kpis", headers=bearer(ADMIN_TOKEN))
    today = (await summary.json())["days"][-1]
    bars = await browser.execute(
        "return document.querySelectorAll('#chart-volume rect.bar[data-day=\"' + arguments[0]"
        " + '\"]').length;", today)
    assert bars == 2
    await browser.wait_for_text("#oldest-open td", oldest_open(client)[0])
    await browser.wait_for_text("#top-reasons td", "Reason not stated")
    await browser.wait_for_text("#product-alerts td", "Blue kettle")

    await browser.execute("document.querySelector('#days').value = '30';"
                          "document.querySelector('#days').dispatchEvent(new Event('change'));")
    await browser.click("#csv")
    await browser.wait_until("return document.querySelector('#csv-link').href.startsWith('blob:')")
    text = await browser.execute("return fetch(document.querySelector('#csv-link').href)"
                                 ".then(r => r.text());")
    assert text.startswith("day,dimension,key,conversations")
    name = await browser.execute("return document.querySelector('#csv-link').download;")
    assert name.startswith("kpis-") and name.endswith(f"-{today}.csv")
    # the same tab is signed in to the agent console too
    await browser.get(str(client.make_url("/agent")))
    await browser.wait_for_text("#agent-name", "admin")
    errors = [line for line in await browser.console() if line.startswith("SEVERE")]
    assert errors == []
