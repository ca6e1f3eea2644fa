# Everything installs into .venv from pinned versions (constraints.txt); no manual steps.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Offline copies of the named data sets, looked in first by the download stage.
export GPTPIPE_MIRROR ?= $(abspath ../shared/mirror)
export DVC_NO_ANALYTICS := 1

.PHONY: setup run test test-all bench lint typecheck clean

setup: $(VENV)/.installed .dvc/tmp/offline-plots.html

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

# The page template `dvc plots show` fills, with Vega inline (no CDN), and plots.html_template
# in .dvc/config.local pointing at it; both git-ignored (gptpipe/report/plots_page.py).
.dvc/tmp/offline-plots.html: $(VENV)/.installed gptpipe/report/plots_page.py
	$(BIN)/python -m gptpipe.report.plots_page

# The main job: the whole DAG on the offline default data set. A run whose dvc.lock is not
# committed is not yet a baseline (for dvc exp show, dvc metrics diff, the report's changes).
run: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	@test -z "$$(git status --porcelain -- dvc.lock 2>/dev/null)" || echo 'gptpipe: keep this run as the baseline that experiments and dvc metrics diff compare with: git add dvc.lock && git commit -m "Baseline run"'

# What CI runs (.ci/run): lint, type check, then the test suite but the tests marked slow
# (end-to-end tests of which another of the same kind runs here). test-all: every test.
test: lint typecheck
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m "not slow"

test-all: lint typecheck
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
