"""The web chat in headless Chromium, against a live gateway in front of the real bot:
our page at `/` (send, see the reply, reload, see the history), and the rasa-webchat
widget from the npm registry, embedded in another site, talking to the same gateway.
What the real bot rarely says (buttons, images) is checked against the channel alone,
with a stand-in gateway that answers at once."""
from __future__ import annotations

import base64
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, List, Optional

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from connectors.message import Button, Message, Reply, TranscriptTurn
from connectors.webchat import WebChatChannel
from tests.browser import Browser
from tests.connectors.conftest import RecordingContext

REPO_ROOT = Path(__file__).resolve().parents[2]
NPM_CACHE = REPO_ROOT / "var" / "cache" / "npm"
WIDGET_PACKAGE = "rasa-webchat@1.0.1"
WIDGET_BUNDLE = NPM_CACHE / "rasa-webchat-1.0.1" / "lib" / "index.js"

GREETING = "How can I help"            # domain.yml utter_greet
ASK_ORDER_NUMBER = "order number"       # domain.yml, the order form's question

OUR_BOT_MESSAGES = "#messages li.from-bot .text"
OUR_CUSTOMER_MESSAGES = "#messages li.from-customer .text"


async def test_our_page_answers_and_replays_the_history_after_a_reload(
        browser: Browser, live_gateway: str) -> None:
    await browser.get(f"{live_gateway}/")
    await browser.wait_for_text("#status", "Online")

    await browser.type("#text", "hello")
    await browser.click("#send")
    await browser.wait_for_text(OUR_BOT_MESSAGES, GREETING)
    await browser.wait_for_text("#messages li.from-customer:not(.pending) .text", "hello")

    await browser.type("#text", "where is my order")
    await browser.click("#send")
    before = await browser.wait_for_text(OUR_BOT_MESSAGES, ASK_ORDER_NUMBER)

    await browser.refresh()
    await browser.wait_for_text("#status", "Online")
    after = await browser.wait_for_text(OUR_BOT_MESSAGES, ASK_ORDER_NUMBER)
    assert after == before
    assert await browser.texts(OUR_CUSTOMER_MESSAGES) == ["hello", "where is my order"]
    # Nothing of it was kept in the page: the history came from the gateway.
    stored = await browser.execute("return Object.keys(window.localStorage);")
    assert stored == ["webchat.session_id"]
    assert await console_errors(browser) == []


@pytest.fixture(scope="session")
def rasa_webchat_bundle() -> Path:
    """rasa-webchat's UMD bundle (lib/index.js, React included), from the npm
    registry, kept under var/cache/npm."""
    if WIDGET_BUNDLE.exists():
        return WIDGET_BUNDLE
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm not found: it fetches the rasa-webchat widget from the registry")
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    try:
        packed = subprocess.run(
            [npm, "pack", WIDGET_PACKAGE, "--pack-destination", str(NPM_CACHE),
             "--cache", str(NPM_CACHE / "_cacache"), "--loglevel", "error"],
            capture_output=True, text=True, timeout=180, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        errors = (getattr(error, "stderr", "") or "").splitlines()
        detail = " ".join(line for line in errors if "complete log" not in line)[:300]
        pytest.skip(f"npm could not fetch {WIDGET_PACKAGE} (registry unreachable?): {detail}")
    tarball = NPM_CACHE / packed.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as archive:
        for member, target in (("package/lib/index.js", WIDGET_BUNDLE),
                               ("package/LICENSE", WIDGET_BUNDLE.parents[1] / "LICENSE")):
            source = archive.extractfile(member)
            assert source is not None, f"{member} missing from {tarball.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
    return WIDGET_BUNDLE


def widget_page(socket_url: str) -> str:
    # Configured as its README documents for a script tag; no delay between bot
    # messages, to keep the test short.
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A store's site</title></head>
<body>
<h1>A store's own site, embedding rasa-webchat</h1>
<div id="webchat"></div>
<script src="/rasa-webchat.js"></script>
<script>
  window.WebChat.default({{
    selector: "#webchat",
    socketUrl: "{socket_url}",
    initPayload: null,
    embedded: true,
    title: "Support",
    customData: {{ language: "en" }},
    customMessageDelay: function () {{ return 0; }}
  }}, null);
</script>
</body></html>"""


@pytest_asyncio.fixture
async def store_site(rasa_webchat_bundle: Path, live_gateway: str) -> AsyncIterator[str]:
    """Another origin than the gateway's: a page with the widget, as a store embeds it."""
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=widget_page(live_gateway), content_type="text/html")

    async def bundle(request: web.Request) -> web.FileResponse:
        return web.FileResponse(rasa_webchat_bundle)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/rasa-webchat.js", bundle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/"))


async def test_the_rasa_webchat_widget_works_against_the_gateway_unchanged(
        browser: Browser, store_site: str) -> None:
    await browser.get(store_site)

    await browser.type(".rw-new-message", "hello")
    await browser.click(".rw-send")
    await browser.wait_for_text(".rw-response", GREETING)

    await browser.type(".rw-new-message", "where is my order")
    await browser.click(".rw-send")
    await browser.wait_for_text(".rw-response", ASK_ORDER_NUMBER)
    assert await browser.texts(".rw-client") == ["hello", "where is my order"]


# the page's buttons and images, with a stand-in gateway

PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@dataclass
class AnsweringContext(RecordingContext):
    """The gateway's side in memory: each message gets the reply at once, kept in the
    transcript as the gateway keeps it."""

    channel: Optional[WebChatChannel] = None
    reply: Reply = Reply()

    async def accept(self, message: Message) -> bool:
        if not await super().accept(message):
            return False
        assert self.channel is not None
        self.turns[message.conversation_id].append(TranscriptTurn(
            "bot", self.reply.text, time.time(), self.reply.buttons, self.reply.image_url))
        await self.channel.send(message.sender, [self.reply], self)
        return True


@pytest_asyncio.fixture
async def answering_gateway() -> AsyncIterator[tuple[str, AnsweringContext]]:
    channel = WebChatChannel(b"browser-test-secret")
    context = AnsweringContext(channel=channel, reply=Reply(
        text="Did that help?", image_url="/parcel.png",
        buttons=(Button("Yes, thanks", "/affirm"), Button("No", "/deny"))))

    async def parcel(request: web.Request) -> web.Response:
        return web.Response(body=PIXEL, content_type="image/png")

    app = web.Application()
    channel.install(app, context)
    app.router.add_get("/parcel.png", parcel)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/"), context
    await channel.stop()


async def test_our_page_shows_buttons_and_images_and_sends_a_buttons_payload(
        browser: Browser, answering_gateway: tuple[str, AnsweringContext]) -> None:
    url, context = answering_gateway
    await browser.get(f"{url}/")
    await browser.wait_for_text("#status", "Online")
    await browser.type("#text", "did my parcel arrive?")
    await browser.click("#send")

    await browser.wait_for_text(".quick-replies button", "Yes, thanks")
    loaded = await browser.wait_until(
        "const img = document.querySelector('#messages li.from-bot img');"
        "return img && img.complete && img.naturalWidth;")
    assert loaded == 1  # the 1x1 picture, decoded

    await browser.click(".quick-replies button")
    await browser.wait_for_text("#messages li.from-customer:not(.pending) .text", "Yes, thanks")
    assert [m.text for m in context.accepted] == ["did my parcel arrive?", "/affirm"]

    await browser.refresh()
    await browser.wait_for_text("#status", "Online")
    customer: List[str] = await browser.wait_for_text(OUR_CUSTOMER_MESSAGES, "Yes, thanks")
    assert customer == ["did my parcel arrive?", "Yes, thanks"]
    # Answered questions keep their buttons, inactive; the last one can still be used.
    enabled = await browser.execute(
        "return Array.from(document.querySelectorAll('.quick-replies'),"
        " g => Array.from(g.querySelectorAll('button'), b => !b.disabled));")
    assert enabled == [[False, False], [True, True]]
    assert await console_errors(browser) == []


async def console_errors(browser: Browser) -> List[str]:
    """Errors in the page's console, a CSP violation (which would block the websocket)
    among them."""
    return [line for line in await browser.console() if line.startswith("SEVERE")]
