# Two commands on a fresh machine: `make run` and `make test` (see README.md).
# Rasa's environment and the gateway's (docs/development.md#two-environments)
BIN := .venv/bin
GATEWAY_BIN := .venv-gateway/bin

.PHONY: run run-prod test setup train validate seed lint nlu-report bench

run: setup
	$(BIN)/bot run

# the production shape from local processes: PostgreSQL and Redis (docs/operations.md)
run-prod: setup
	$(BIN)/bot run-prod

test: setup
	scripts/test.sh

setup:
	@scripts/setup.sh

train: setup
	$(BIN)/bot train

validate: setup
	$(BIN)/bot validate
	$(BIN)/rasa data validate --fail-on-warnings

seed: setup
	$(BIN)/bot seed

lint: setup
	$(BIN)/ruff check actions bot common connectors components tests bench
	$(BIN)/mypy actions bot common connectors components bench
	$(GATEWAY_BIN)/mypy --cache-dir .mypy_cache/gateway bot common connectors

nlu-report: setup
	$(BIN)/bot nlu-report

bench: setup
	$(BIN)/python bench/bench_nlu.py
	$(BIN)/python bench/bench_turns.py
	$(BIN)/python bench/bench_gateway.py
