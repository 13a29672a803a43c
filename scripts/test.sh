#!/usr/bin/env bash
# Everything `make test` runs: lint, types, Rasa data checks, one (cached) training,
# then every test: the gateway's tests in the gateway's environment, the rest in Rasa's
# (docs/development.md#tests). `bot train` skips when config, domain and data are
# unchanged. Arguments go to both pytest runs (options such as -x or -k, not paths).
set -euo pipefail
cd "$(dirname "$0")/.."
RASA=.venv/bin
GATEWAY=.venv-gateway/bin
export PYTHONDONTWRITEBYTECODE=1

echo "== ruff"; $RASA/ruff check actions bot common connectors components tests bench
echo "== mypy (.venv)"; $RASA/mypy actions bot common connectors components bench
# the gateway's code against the gateway's releases; a cache of its own, not to thrash .venv's
echo "== mypy (.venv-gateway)"; $GATEWAY/mypy --cache-dir .mypy_cache/gateway bot common connectors
echo "== policy"; $GATEWAY/bot validate
# Rasa's and TensorFlow's warning walls go to the log, and to the terminal only on failure
echo "== rasa data validate (var/logs/rasa-validate.log)"
mkdir -p var/logs
$RASA/rasa data validate --fail-on-warnings --quiet > var/logs/rasa-validate.log 2>&1 \
  || { cat var/logs/rasa-validate.log; exit 1; }
echo "== services"; scripts/services.sh
echo "== browser"; scripts/browser.sh
echo "== train (skipped when nothing changed)"; $RASA/bot train
failed=0
echo "== pytest, the gateway's tests (.venv-gateway)"
$GATEWAY/python -m pytest -m gateway_env tests/bot tests/connectors "$@" || failed=1
echo "== pytest, the other tests (.venv)"
$RASA/python -m pytest -m "not gateway_env" "$@" || failed=1
exit $failed
