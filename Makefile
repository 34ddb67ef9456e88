# Two commands: `make run` installs and starts the service on SQLite; `make test` runs the tests.
# `make test-postgres` runs the same tests on PostgreSQL (TEST_POSTGRES_URL).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV_KEY := .dev-encryption-key
DEV_LOGIN := .dev-console-password
DEV_ENV = TRIAGE_ENCRYPTION_KEY="$$(cat $(DEV_KEY))"

TEST_POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test

.PHONY: install run test test-postgres bench lint

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

# A console account to try the service with, made once: "demo", role staff, its password
# kept (git-ignored) in .dev-console-password. Delete that file to make another.
$(DEV_LOGIN): | $(DEV_KEY)
	umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(12))" > $@.new
	$(DEV_ENV) $(BIN)/python -m bot staff add demo --role staff --config config.example.toml < $@.new
	mv $@.new $@

run: install $(DEV_KEY) $(DEV_LOGIN)
	@echo "Web chat:  http://127.0.0.1:8080/chat"
	@echo "Console:   http://127.0.0.1:8080/console  (username demo, password $$(cat $(DEV_LOGIN)))"
	$(DEV_ENV) $(BIN)/python -m bot run --config config.example.toml

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

test: install lint
	$(BIN)/python -m pytest -q

# The whole suite again on PostgreSQL, in a schema of its own (dropped at the end). It fails
# at once if that server cannot be reached: it never falls back to SQLite.
test-postgres: install
	TRIAGE_TEST_DATABASE_URL="$(TEST_POSTGRES_URL)" $(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m bench.inbound
