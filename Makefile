# Two entry points: `make run` (demo on DynamoDB Local) and `make test` (what CI runs).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench bench-compare schema deps system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

deps: $(STAMP)

# promtool (Debian's prometheus package) for the alert-rule tests.
system-deps:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing promtool (Debian package prometheus)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
	  || { echo "could not install prometheus (promtool); run: apt-get install prometheus" >&2; exit 1; }; }

run: deps
	$(BIN)/python -m fanout.testing.demo

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: deps
	$(BIN)/mypy fanout sinks tests bench

unit: deps
	$(BIN)/pytest tests/unit -q

test: deps system-deps lint typecheck
	$(BIN)/python -m fanout.testing.dynamodb_local fetch
	$(BIN)/pytest -q -p no:cacheprovider --cov --cov-branch --cov-report=term --cov-fail-under=80

bench: deps
	$(BIN)/python -m bench

# fanout as of BASELINE beside the current tree, same run, alternating rounds:
# make bench-compare BASELINE=base-arch ROUNDS=6
BASELINE ?= main
ROUNDS   ?= 4
bench-compare: deps
	$(BIN)/python -m bench -s throughput --consumers fanout --rounds $(ROUNDS) --baseline $(BASELINE)

schema: deps
	$(BIN)/fanout schema > config/schema.json

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache .coverage*
