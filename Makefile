# kerasseg — the two commands a newcomer needs are `make demo` and `make test`.
# Both bootstrap a virtual environment in .venv (Python >= 3.10) and install the
# package into it in editable mode; the install is redone only when setup.cfg or
# setup.py change.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
INSTALL_STAMP := $(VENV)/.kerasseg-installed
DEV_STAMP := $(VENV)/.kerasseg-dev-installed
DEMO_DIR ?= kerasseg_demo
PYTEST_ARGS ?=
# pytest worker processes: TensorFlow leaves much of a 2-core machine idle in tracing and
# small ops, and half the suite waits on subprocesses; whole test files go to one worker
# (--dist loadfile) so module fixtures (converted data, trained models) are built once
TEST_WORKERS ?= 2

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo demo-quick test bench bench-quick docker notebooks clean help

help:
	@echo "make demo    - run the end-to-end demo (phantom labelme data -> U-Net -> SavedModel)"
	@echo "make test    - lint (ruff), type check (mypy) and run the test suite"
	@echo "make bench   - run the benchmarks, write benchmarks/RESULTS.md and results.json"
	@echo "make bench-quick - run every benchmark at toy size and check its keys (the 'benchmark' tests)"
	@echo "make docker  - build the CPU and GPU images (needs a Docker engine)"

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("kerasseg needs Python >= 3.10, found " + sys.version.split()[0]) if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

$(INSTALL_STAMP): $(BIN)/python setup.cfg setup.py
	$(PIP) install --quiet -e .
	@touch $@

$(DEV_STAMP): $(INSTALL_STAMP)
	$(PIP) install --quiet -e '.[dev]'
	@touch $@

demo: $(INSTALL_STAMP)
	$(BIN)/kerasseg demo --workdir $(DEMO_DIR)

demo-quick: $(INSTALL_STAMP)
	$(BIN)/kerasseg demo --workdir $(DEMO_DIR) --quick

# tests marked `benchmark` only run the benchmark scripts at toy size (`make bench-quick` runs them)
test: $(DEV_STAMP)
	$(BIN)/ruff check kerasseg data_tools benchmarks tests
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not benchmark" $(PYTEST_ARGS)

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/run_all.py

bench-quick: $(DEV_STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m benchmark $(PYTEST_ARGS)

docker:
	docker build -f docker/Dockerfile -t kerasseg:cpu .
	docker build -f docker/Dockerfile.gpu -t kerasseg:gpu .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache $(DEMO_DIR)
