# Everything installs into .venv from pinned versions (constraints.txt); no manual steps.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Offline copies of the named data sets, looked in first by the download stage.
export GPTPIPE_MIRROR ?= $(abspath ../shared/mirror)
export DVC_NO_ANALYTICS := 1

.PHONY: setup run test bench lint typecheck clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

# The main job: the whole DAG on the offline default data set.
run: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# What CI runs (.ci/run): lint, type check, then the whole test suite.
test: lint typecheck
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

# Every benchmark, one after another (hours on 2 cores; not part of CI): benchmarks/RESULTS.md.
bench: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks.run_all

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# mypy with the [tool.mypy] settings of pyproject.toml (the package, the stages, the benchmarks).
typecheck: setup
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
