"""Settings from the environment: a local secret that several processes starting at
once (run-prod's gateways on a fresh var/) agree on."""
from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any, List

from bot.settings import local_secret

PROCESSES, ROUNDS = 6, 15


def _at_once(barrier: Any, directory: Path, results: Any) -> None:
    barrier.wait()
    results.put(local_secret(directory, "webchat.secret"))


def test_processes_starting_at_once_get_one_whole_secret(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(ROUNDS):
        directory = tmp_path / str(round_)
        barrier, results = context.Barrier(PROCESSES), context.Queue()
        workers = [context.Process(target=_at_once, args=(barrier, directory, results))
                   for _ in range(PROCESSES)]
        for worker in workers:
            worker.start()
        secrets: List[str] = [results.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join()
        assert len(set(secrets)) == 1 and len(secrets[0]) == 64, secrets
        assert [p.name for p in directory.iterdir()] == ["webchat.secret"]
        assert (directory / "webchat.secret").stat().st_mode & 0o077 == 0
