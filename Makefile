# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

# torch first, CPU build: a plain `torch` requirement would pull a multi-GB CUDA build. The local CPU wheel
# (torch==2.13.0+cpu) is taken where pip can find it, else PyTorch's CPU index. pyproject.toml only asks for
# torch>=2.2, so a GPU host keeps the CUDA build it already has.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0+cpu" || $(BIN)/pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

demo: setup
	$(BIN)/tagworker demo

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check worker models schemas migrations tests
	$(BIN)/mypy worker models schemas

bench: setup
	$(BIN)/tagworker bench --json

clean:
	rm -rf $(VENV) .tagworker
