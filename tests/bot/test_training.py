"""`bot train` (bot/tools/launcher.py): a model is trained only when what it is trained from
changed, and `models/` keeps the newest few. `rasa train` itself writes a new model on
every call, so `make run` used to leave one more on every start."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from bot.tools.launcher import (
    fingerprint_file,
    keep_newest,
    train_if_changed,
    training_fingerprint,
)
from tests.conftest import REPO_ROOT

# training reads Rasa's version from its environment: these run in .venv
pytestmark = pytest.mark.rasa_env


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("config.yml", "domain.yml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(REPO_ROOT / "data", tmp_path / "data")
    return tmp_path


def test_the_fingerprint_follows_config_domain_and_data(project: Path) -> None:
    first = training_fingerprint(project)
    assert training_fingerprint(project) == first
    (project / "README.md").write_text("not training input")
    assert training_fingerprint(project) == first
    rules = project / "data" / "rules.yml"
    rules.write_text(rules.read_text() + "\n# a comment is a change\n")
    assert training_fingerprint(project) != first
    changed = training_fingerprint(project)
    (project / "config.yml").write_text((project / "config.yml").read_text() + "\n")
    assert training_fingerprint(project) != changed


def test_a_model_of_the_same_inputs_is_used_without_training(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    model = models / "20261203-000000-current.tar.gz"
    model.write_bytes(b"model")
    fingerprint_file(model).write_text(training_fingerprint())
    # no rasa on PATH for it: training would fail, so the model must be reused
    started = time.monotonic()
    assert train_if_changed({"PATH": ""}, tmp_path / "train.log", models) == model
    assert time.monotonic() - started < 5 and not (tmp_path / "train.log").exists()


def test_only_the_newest_models_are_kept(tmp_path: Path) -> None:
    for n in range(5):
        model = tmp_path / f"model-{n}.tar.gz"
        model.write_bytes(b"model")
        fingerprint_file(model).write_text(str(n))
        os.utime(model, (1000 + n, 1000 + n))
    keep_newest(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model-2.tar.gz", "model-2.tar.gz.fingerprint", "model-3.tar.gz",
        "model-3.tar.gz.fingerprint", "model-4.tar.gz", "model-4.tar.gz.fingerprint"]


def test_a_failed_training_is_an_error_naming_its_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rasa is replaced by a process that fails: what is tested is what the launcher
    does with a failure, not Rasa."""
    import bot.tools.launcher

    monkeypatch.setattr(bot.tools.launcher, "rasa_command",
                        lambda *args: [sys.executable, "-c", "raise SystemExit(3)"])
    models = tmp_path / "models"
    models.mkdir()
    log = tmp_path / "logs" / "train.log"
    with pytest.raises(RuntimeError, match="training failed; see .*train.log"):
        train_if_changed(dict(os.environ), log, models)
    assert log.exists() and list(models.iterdir()) == []
