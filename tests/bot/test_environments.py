"""The gateway's own environment (.venv-gateway): no Rasa in it, the maintained releases
the gateway needs, and `bot serve` as the launcher starts it really runs there."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Tuple

from bot.settings import load_settings
from bot.tools.launcher import GATEWAY_BIN, gateway, start_components, stop
from tests.conftest import gateway_python
from tests.provider_api import free_port

PACKAGES_REPORT = """
import importlib.metadata, importlib.util, json, sys
print(json.dumps({
    "python": "%d.%d" % sys.version_info[:2],
    "importable": [name for name in ("rasa", "rasa_sdk", "tensorflow", "sanic")
                   if importlib.util.find_spec(name)],
    "versions": {name: importlib.metadata.version(name)
                 for name in ("aiohttp", "SQLAlchemy", "redis", "pydantic")}}))
"""


def version(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_the_gateway_environment_has_no_rasa_and_maintained_releases() -> None:
    done = subprocess.run([str(GATEWAY_BIN / "python"), "-c", PACKAGES_REPORT],
                          capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    assert report["importable"] == []
    assert report["python"] == gateway_python()
    versions: Dict[str, str] = report["versions"]
    assert version(versions["aiohttp"]) >= (3, 13, 3)
    assert version(versions["SQLAlchemy"])[:2] == (2, 0)
    assert version(versions["redis"]) >= (5,)
    assert version(versions["pydantic"]) >= (2,)


def test_the_launcher_starts_the_gateway_in_its_environment(tmp_path: Path) -> None:
    """The gateway as `bot run` and `bot run-prod` start it: its responses name the
    Python and aiohttp it runs on (aiohttp's Server header)."""
    port = free_port()
    part = gateway("gateway", port, GATEWAY_HOST="127.0.0.1")
    assert part.command[0] == str(GATEWAY_BIN / "bot")
    settings = dataclasses.replace(load_settings(), var_dir=tmp_path)
    env = {"PATH": "/usr/bin:/bin", "VAR_DIR": str(tmp_path), "REDIS_URL": "",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
           "RASA_URL": f"http://127.0.0.1:{free_port()}"}
    processes = start_components(settings, env, [part])
    try:
        server = server_header(f"http://127.0.0.1:{port}/health", processes["gateway"])
    finally:
        stop(processes)
    python, aiohttp = re.fullmatch(r"Python/(\S+) aiohttp/(\S+)", server).groups()
    assert python == gateway_python()
    assert version(aiohttp) >= (3, 13, 3)


def server_header(url: str, process: subprocess.Popen, seconds: float = 60) -> str:
    """The Server header of the first answer from `url`, whatever its status."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the gateway exited"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return str(response.headers["Server"])
        except urllib.error.HTTPError as answer:
            return str(answer.headers["Server"])
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {seconds}s")
