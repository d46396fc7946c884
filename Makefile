# Two commands do everything (see README.md):
#   make demo   create the environment if missing, run the whole workflow on the embedded data
#   make test   create the environment if missing, run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
CORES  ?= 2
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
BIOIMAGEIO_VENV  ?= .venv-bioimageio
BIOIMAGEIO_STAMP  = $(BIOIMAGEIO_VENV)/.installed

.PHONY: demo test report lint lock clean bioimageio-venv

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
test: $(STAMP) $(BIOIMAGEIO_STAMP)
	$(BIN)/python -m pytest -n $(CORES) --dist loadfile --no-loadscope-reorder --durations=15

# bioimageio.core's model test of exported packages runs in its own environment (requirements-bioimageio.txt):
# the project's packages through a .pth file, bioimageio.core and the pydantic it needs on top.
bioimageio-venv: $(BIOIMAGEIO_STAMP)
$(BIOIMAGEIO_STAMP): $(STAMP) requirements-bioimageio.txt
	@test -x $(BIOIMAGEIO_VENV)/bin/python || $(PYTHON) -m venv $(BIOIMAGEIO_VENV)
	$(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
		"$$($(BIOIMAGEIO_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/nucleiflow_venv.pth"
	$(BIOIMAGEIO_VENV)/bin/python -m pip install --quiet -r requirements-bioimageio.txt
	@touch $@

# Style and static checks: ruff (lint + format), snakefmt, Snakemake's own linter, the package's layers
# (import-linter contracts in pyproject.toml), the types (mypy, configured there too).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint
	$(BIN)/lint-imports
	$(BIN)/mypy

# Re-resolve the pinned set after editing requirements.in.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements.in
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^nucleiflow' > requirements.lock

clean:
	rm -rf results/* resources .snakemake
