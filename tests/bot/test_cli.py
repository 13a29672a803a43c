"""The `bot` console command."""
from __future__ import annotations

import pytest

from actions.store.sql import open_store
from bot.cli import main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "serve", "seed", "validate", "nlu-report"):
        assert command in out


def test_seed_resets_the_demo_store(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["seed", "--database-url", url]) == 0
    store = open_store(url)
    try:
        store.orders.cancel_order("A1004", reason="test")
        assert main(["seed", "--database-url", url]) == 0
        assert store.orders.get_order("A1004").status.value == "paid"
    finally:
        store.close()
    assert "216 orders" in capsys.readouterr().out


def test_nlu_report_has_its_own_help(capsys):
    with pytest.raises(SystemExit):
        main(["nlu-report", "--help"])
    assert "--eval-dir" in capsys.readouterr().out
