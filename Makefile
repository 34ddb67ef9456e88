# Two commands: `make run` installs and starts the service on SQLite; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV_KEY := .dev-encryption-key

.PHONY: install run test bench lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# A development key, made once with `python -m bot keygen` and kept out of git.
$(DEV_KEY): | install
	umask 077 && $(BIN)/python -m bot keygen > $@

run: install $(DEV_KEY)
	TRIAGE_ENCRYPTION_KEY="$$(cat $(DEV_KEY))" $(BIN)/python -m bot run --config config.example.toml

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

test: install lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m bench.inbound
