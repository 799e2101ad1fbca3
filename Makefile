# HEAN: every target sets up its own virtual environment first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= $(if $(wildcard ../shared/data/README.md),$(abspath ../shared/data),)
export HEAN_DATA_DIR ?= $(DATA_DIR)
# TORCH_INDEX=https://download.pytorch.org/whl/cpu selects the CPU wheel on machines without one
TORCH_INDEX ?=

.PHONY: install run test test-fast lint format smoke bench schema clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned to the CPU build: a looser pin pulls a multi-GB CUDA wheel
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) torch==2.13.0
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/hean up

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not e2e"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

smoke: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH scripts/smoke_test.sh

bench: $(STAMP)
	$(BIN)/python -m hean.bench

schema: $(STAMP)
	$(BIN)/python -m hean_proto.schema_export

clean:
	rm -rf $(VENV) .hean .pytest_cache
