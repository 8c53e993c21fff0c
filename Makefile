# The two commands of the quick start, plus the benchmark and lint.
#   make run    create .venv, install, serve providers.yaml --demo on 127.0.0.1:8080
#   make test   create .venv, install, run the whole suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench soak lint check clean

run: $(STAMP)
	$(BIN)/router serve --config providers.yaml --demo

test: $(STAMP)
	$(BIN)/pytest -q -n 2

# make bench ARGS="--only c=1,c=64 --profiles full --seconds 2 --repeat 1"
bench: $(STAMP)
	$(BIN)/python -m tests.bench.run $(ARGS)

# make soak ARGS="--requests 50000"   (what Redis keeps per request, exporter on: tests/bench/ledger_soak.py)
soak: $(STAMP)
	$(BIN)/python -m tests.bench.ledger_soak $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check router tests
	$(BIN)/ruff format --check router tests
	$(BIN)/mypy router

check: $(STAMP)
	$(BIN)/router check --config providers.yaml --demo

$(STAMP): pyproject.toml
	@scripts/venv.sh "$(PYTHON)" "$(VENV)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
