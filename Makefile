# Two entry points for a fresh machine (Python 3.11 + pip): `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv test demo lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check eoseg tests bench examples training
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python examples/landsat/demo.py --out demo-out

lint: $(STAMP)
	$(BIN)/ruff check eoseg tests bench examples training

bench: $(STAMP)
	$(BIN)/python bench/predict.py
	$(BIN)/python bench/batch.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
