# Two entry points: `make run` (demo on DynamoDB Local) and `make test` (what CI runs).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Stamps of finished installs (scripts/install-venv writes them only at the end, so an
# interrupted or failed install is redone from a fresh venv, never half-trusted).
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint typecheck unit bench bench-compare schema deps deps-run system-deps clean

# What the demo needs: fanout and its runtime dependencies.
$(RUN_STAMP): pyproject.toml scripts/install-venv
	@sh scripts/install-venv $(VENV) $(PYTHON) $@ .

# Everything the tests and the linters need.
$(TEST_STAMP): pyproject.toml scripts/install-venv
	@sh scripts/install-venv $(VENV) $(PYTHON) $@ '.[test]'

deps: $(TEST_STAMP)
deps-run: $(RUN_STAMP)

# promtool (Debian's prometheus package) for the alert-rule tests.
system-deps:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing promtool (Debian package prometheus)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
	  || { echo "could not install prometheus (promtool); run: apt-get install prometheus" >&2; exit 1; }; }

# One process under make: Ctrl-C reaches it with the terminal's process group, SIGTERM to make
# is passed on by make, and SIGINT to make alone is noticed by the demo (--stop-with-parent).
# It stops the worker, then DynamoDB Local, and exits.
run: $(RUN_STAMP)
	$(BIN)/python -m fanout.testing.demo --stop-with-parent

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: deps
	$(BIN)/mypy fanout sinks tests bench

unit: deps
	$(BIN)/pytest tests/unit -q

# Test modules run in two processes (pytest-xdist), a module's tests in one of them: most
# integration tests wait on workers and servers, so two share the machine's two cores well.
TEST_PROCESSES ?= 2

test: deps system-deps lint typecheck
	$(BIN)/python -m fanout.testing.dynamodb_local fetch
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_PROCESSES) --dist loadfile \
	  --cov --cov-branch --cov-report=term --cov-fail-under=80

bench: deps
	$(BIN)/python -m bench

# fanout as of BASELINE beside the current tree, same run, alternating rounds:
# make bench-compare BASELINE=base-arch ROUNDS=6
BASELINE ?= main
ROUNDS   ?= 4
bench-compare: deps
	$(BIN)/python -m bench -s throughput --consumers fanout,fanout-handlers --rounds $(ROUNDS) --baseline $(BASELINE)

schema: deps
	$(BIN)/fanout schema > config/schema.json

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache .coverage*
