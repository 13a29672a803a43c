"""A Redis server of a test's own, which the test can stop and start again (a shared
one cannot be restarted under other tests). It keeps an append-only file, as in
production, so what it held survives a clean restart, and may require a password."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional
from urllib.parse import quote

import pytest

from bot.tools.launcher import port_open
from tests.provider_api import free_port

needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None,
                                        reason="redis-server is not installed")


class RedisServer:
    def __init__(self, directory: Path, password: str = "") -> None:
        self.directory = directory
        self.password = password
        self.port = free_port()
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        credentials = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        password = ["--requirepass", self.password] if self.password else []
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--dir", str(self.directory), *password], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # a clean shutdown: the append-only file is complete
            self.process.wait(10)
