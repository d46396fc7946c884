# Two commands do everything (see README.md):
#   make demo   create the environment if missing, run the whole workflow on the embedded data
#   make test   create the environment if missing, run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
CORES  ?= 2
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test report lint lock clean

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --workflow-profile profiles/local --cores $(CORES)
	$(BIN)/snakemake --report results/report.html
	$(BIN)/python -m nucleiflow.run_summary

# One pytest-xdist worker per core, one test module at a time each; the long runs first (workflow_tests/conftest.py).
test: $(STAMP)
	$(BIN)/python -m pytest -n $(CORES) --dist loadfile --no-loadscope-reorder

# Style and static checks: ruff (lint + format), snakefmt, Snakemake's own linter.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint

# Re-resolve the pinned set after editing requirements.in.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements.in
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^nucleiflow' > requirements.lock

clean:
	rm -rf results/* resources .snakemake
