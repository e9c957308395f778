# Two set-up commands: `make run` (the main job on data/sample/) and `make test` (the whole suite).
# Each creates .venv from pyproject.toml (within the tested versions of constraints.txt) when it is missing or
# older than either file.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean-workspace

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cementrisk run --source data/sample --workspace var/workspace

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py

clean-workspace:
	rm -rf var/workspace
