"""Headless Chromium for tests, driven through chromedriver's W3C WebDriver HTTP API.

Why this driver: Debian ships chromium and a chromedriver of the same build, and the
WebDriver protocol is a handful of JSON-over-HTTP calls, which aiohttp (already in the
venv) makes without a new dependency. Unlike raw DevTools, WebDriver waits for page
loads and types and clicks through real input events, so React widgets see what a
person would do. The client is async, so a test can serve pages from its own event loop
while the browser loads them.

    async with Browser.open() as browser:
        await browser.get(url)
        await browser.type("#text", "hello")
        await browser.click("#send")
        await browser.wait_for_text(".from-bot .text", "How can I help")

`unavailable()` says why no browser can run here (tests skip with that reason).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any, AsyncIterator, Dict, List, Optional

import aiohttp

from tests.provider_api import free_port

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--no-first-run", "--window-size=1024,800"]
# W3C WebDriver's key for element references in JSON.
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"
ENTER = "\ue007"


class WebDriverError(RuntimeError):
    pass


def unavailable() -> Optional[str]:
    """Why the browser tests cannot run here, or None when they can."""
    for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not shutil.which(path):
            return (f"{name} not found at {path} (apt-get install chromium chromium-driver, "
                    f"or set {name.upper()})")
    return None


class Browser:
    """One WebDriver session: one headless Chromium window."""

    def __init__(self, http: aiohttp.ClientSession, base: str, session_id: str) -> None:
        self._http = http
        self._session_url = f"{base}/session/{session_id}"

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, startup_seconds: float = 30) -> AsyncIterator[Browser]:
        port = free_port()
        profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=60)) as http:
                await _wait_until_ready(http, base, driver, startup_seconds)
                capabilities = {"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:loggingPrefs": {"browser": "ALL"},
                    "goog:chromeOptions": {
                        "binary": shutil.which(CHROMIUM),
                        "args": [*FLAGS, f"--user-data-dir={profile.name}"]}}}}
                created = await _call(http, "POST", f"{base}/session", capabilities)
                browser = cls(http, base, created["sessionId"])
                try:
                    yield browser
                finally:
                    with contextlib.suppress(aiohttp.ClientError, WebDriverError):
                        await _call(http, "DELETE", browser._session_url)
        finally:
            driver.terminate()
            try:
                driver.wait(10)
            except subprocess.TimeoutExpired:
                driver.kill()
            profile.cleanup()

    async def command(self, method: str, path: str, body: Optional[Dict[str, Any]] = None
                      ) -> Any:
        return await _call(self._http, method, f"{self._session_url}{path}", body)

    async def get(self, url: str) -> None:
        await self.command("POST", "/url", {"url": url})

    async def refresh(self) -> None:
        await self.command("POST", "/refresh", {})

    async def execute(self, script: str, *args: Any) -> Any:
        return await self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    async def find(self, css: str, timeout: float = 10) -> str:
        """The element matching `css`, once there is one."""
        deadline = time.monotonic() + timeout
        while True:
            found = await self.command("POST", "/elements",
                                       {"using": "css selector", "value": css})
            if found:
                element: str = found[0][ELEMENT_KEY]
                return element
            if time.monotonic() > deadline:
                raise AssertionError(f"no element {css!r} after {timeout}s; "
                                     f"console: {await self.console()}")
            await asyncio.sleep(0.1)

    async def type(self, css: str, text: str) -> None:
        element = await self.find(css)
        await self.command("POST", f"/element/{element}/value", {"text": text})

    async def click(self, css: str) -> None:
        element = await self.find(css)
        await self.command("POST", f"/element/{element}/click", {})

    async def texts(self, css: str) -> List[str]:
        result: List[str] = await self.execute(
            "return Array.from(document.querySelectorAll(arguments[0]),"
            " e => e.textContent.trim());", css)
        return result

    async def wait_for_text(self, css: str, fragment: str, timeout: float = 20) -> List[str]:
        """The texts of the elements matching `css`, once one of them contains
        `fragment` (case-insensitive)."""
        deadline = time.monotonic() + timeout
        while True:
            texts = await self.texts(css)
            if any(fragment.lower() in text.lower() for text in texts):
                return texts
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {css!r} containing {fragment!r} after {timeout}s; found {texts}; "
                    f"console: {await self.console()}")
            await asyncio.sleep(0.1)

    async def wait_until(self, script: str, timeout: float = 20) -> Any:
        """The first truthy value `script` returns, polling until `timeout`."""
        deadline = time.monotonic() + timeout
        while not (value := await self.execute(script)):
            if time.monotonic() > deadline:
                raise AssertionError(f"still falsy after {timeout}s: {script}")
            await asyncio.sleep(0.1)
        return value

    async def console(self) -> List[str]:
        """The browser console since the last call (chromedriver's log extension)."""
        with contextlib.suppress(WebDriverError):
            entries = await self.command("POST", "/se/log", {"type": "browser"})
            return [f"{entry.get('level')}: {entry.get('message')}" for entry in entries]
        return []


async def _call(http: aiohttp.ClientSession, method: str, url: str,
                body: Optional[Dict[str, Any]] = None) -> Any:
    async with http.request(method, url, json=body) as response:
        answer = await response.json(content_type=None)
    value = answer.get("value") if isinstance(answer, dict) else None
    if response.status >= 400 or (isinstance(value, dict) and "error" in value):
        detail = value if isinstance(value, dict) else answer
        raise WebDriverError(f"{method} {url}: {detail.get('error')}: "
                             f"{str(detail.get('message', ''))[:500]}")
    return value


async def _wait_until_ready(http: aiohttp.ClientSession, base: str,
                            driver: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            raise WebDriverError(f"chromedriver exited with {driver.returncode}")
        with contextlib.suppress(aiohttp.ClientError):
            if (await _call(http, "GET", f"{base}/status")).get("ready"):
                return
        await asyncio.sleep(0.1)
    raise WebDriverError(f"chromedriver not ready after {seconds}s")
