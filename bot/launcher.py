"""`bot run`: train if the data changed, seed the demo store, start the action server,
Rasa and the gateway, wait until /health says every part is up, and stop them all
cleanly on Ctrl-C."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

from bot.settings import REPO_ROOT, Settings, load_settings, local_secret

BIN = Path(sys.executable).parent
ADMIN_TOKEN_FILE = "agent-admin.token"
STARTUP_TIMEOUT_SECONDS = 180


def rasa_command(*args: str) -> List[str]:
    return [str(BIN / "rasa"), *args]


def child_environment(settings: Settings) -> Dict[str, str]:
    env = dict(os.environ)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    env.setdefault("ACTION_SERVER_URL", settings.action_server_url)
    env.setdefault("RASA_TRACKER_DB", str(settings.var_dir / "rasa_tracker.db"))
    env.setdefault("AGENT_API_TOKEN", local_secret(settings.var_dir, ADMIN_TOKEN_FILE))
    return env


def train_if_changed(env: Dict[str, str]) -> None:
    """`rasa train` compares the data's fingerprint with the newest model and skips
    training when nothing changed."""
    subprocess.run(rasa_command("train", "--quiet"), cwd=REPO_ROOT, env=env, check=True)


def start_components(settings: Settings, env: Dict[str, str]) -> Dict[str, subprocess.Popen]:
    logs = settings.var_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    commands = {
        "action server": rasa_command("run", "actions", "--actions", "actions",
                                      "--port", str(settings.action_port)),
        "rasa": rasa_command("run", "--model", "models", "--port", str(settings.rasa_port),
                             "--endpoints", "endpoints.yml", "--credentials", "credentials.yml",
                             "--interface", "127.0.0.1"),
        "gateway": [sys.executable, "-m", "bot", "serve"],
    }
    processes = {}
    for name, command in commands.items():
        log_file = (logs / f"{name.replace(' ', '_')}.log").open("ab")
        processes[name] = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file,
                                           stderr=subprocess.STDOUT, start_new_session=True)
    return processes


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until_healthy(settings: Settings, processes: Dict[str, subprocess.Popen]) -> None:
    url = f"http://127.0.0.1:{settings.gateway_port}/health"
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not healthy(url):
        dead = [name for name, p in processes.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} stopped during start-up; see "
                               f"{settings.var_dir / 'logs'}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not healthy after {STARTUP_TIMEOUT_SECONDS}s: {url}")
        time.sleep(0.5)


def stop(processes: Dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def run_system(train: bool = True, seed: bool = True) -> int:
    settings = load_settings()
    env = child_environment(settings)
    if train:
        train_if_changed(env)
    if seed:
        from actions.store.seed import seed_demo_store
        from actions.store.sql import open_store

        count = seed_demo_store(open_store())
        print(f"demo store seeded: {count} orders")
    processes = start_components(settings, env)
    # explicit for both: a process started in the background inherits SIGINT ignored
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        wait_until_healthy(settings, processes)
        base = f"http://localhost:{settings.gateway_port}"
        print(f"ready: web chat {base}/ , agent console {base}/agent , dashboard "
              f"{base}/dashboard , REST channel {base}/webhooks/rest/webhook, health "
              f"{base}/health, metrics {base}/metrics", flush=True)
        token = ("$AGENT_API_TOKEN" if os.environ.get("AGENT_API_TOKEN")
                 else f"var/{ADMIN_TOKEN_FILE}")
        print(f"agent console and dashboard: sign in with the admin token in {token}, or add "
              "agents with 'bot agents add'; channel webhooks: see README, 'Channels'",
              flush=True)
        print("logs in var/logs/; press Ctrl-C to stop", flush=True)
        return _supervise(processes)
    except KeyboardInterrupt:
        return 0
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        stop(processes)
        print("stopped", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _supervise(processes: Dict[str, subprocess.Popen]) -> int:
    """Wait; if any component dies, stop the rest and say which one."""
    while True:
        for name, process in processes.items():
            code: Optional[int] = process.poll()
            if code is not None:
                print(f"error: {name} exited with code {code}; see var/logs/", file=sys.stderr)
                return 1
        time.sleep(1)
