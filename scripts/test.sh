#!/usr/bin/env bash
# Everything `make test` runs: lint, types, Rasa data checks, one (cached) training,
# then every test. `bot train` skips when config, domain and data are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export PYTHONDONTWRITEBYTECODE=1

echo "== ruff"; $BIN/ruff check actions bot common connectors components tests bench
echo "== mypy"; $BIN/mypy actions bot common connectors components bench
echo "== policy"; $BIN/bot validate
# Rasa's and TensorFlow's warning walls go to the log, and to the terminal only on failure
echo "== rasa data validate (var/logs/rasa-validate.log)"
mkdir -p var/logs
$BIN/rasa data validate --fail-on-warnings --quiet > var/logs/rasa-validate.log 2>&1 \
  || { cat var/logs/rasa-validate.log; exit 1; }
echo "== services"; scripts/services.sh
echo "== browser"; scripts/browser.sh
echo "== train (skipped when nothing changed)"; $BIN/bot train
echo "== pytest"; $BIN/pytest "$@"
