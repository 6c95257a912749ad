# `make run` and `make test` each set up .venv themselves (idempotent).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Small head-to-head of the nine built-in strategies on the offline digits task;
# `compare` writes its report (tables, paired statistics, plots) next to the runs.
# Its trials are tiny, so they train inside the Tune trial (--num-workers 0): a
# Ray Train worker group per trial would cost more than the training itself
# (see benchmarks/trial_overhead.py). Drop that flag to use Ray Train workers.
# 75 epochs = 25 full trials: past every model-based searcher's random start-up.
RUN_ARGS ?= --strategies grid,random,optuna,gp,cmaes,hyperopt,dqn,hyperband,asha \
            --space digits_mlp --budget-epochs 75 --seeds 1 --num-workers 0

.PHONY: run test lint typecheck unit venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m tune_app compare $(RUN_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check tune_app tests benchmarks
	$(PY) -m ruff format --check tune_app tests benchmarks

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest -m "not slow"

test: lint typecheck
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
