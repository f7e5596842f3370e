# RunLedger: `make run` starts the product with demo data; `make test` runs the whole suite.
# Both set everything up first (virtualenv in .venv, pinned dependencies, migrations).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.deps-installed
PORT   ?= 8000
SANDBOX_PORT ?= 8765
PYTEST_ARGS ?=

.PHONY: help setup migrate run test lint audit lock clean

help:
	@echo "make run    - set up, seed demo data and start web, worker, beat and the OpenAI sandbox"
	@echo "make test   - set up and run the whole test suite (PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set)"
	@echo "make lint   - ruff"
	@echo "make audit  - pip-audit of the pinned dependencies (needs internet access to its database)"
	@echo "make lock   - upgrade every dependency within pyproject's ranges and rewrite requirements.lock"
	@echo "make clean  - remove .venv and the local databases under var/ (the next make run seeds a new demo)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "RunLedger needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml requirements.lock
	@echo "==> installing pinned dependencies into $(VENV) (first time: a minute or two)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

migrate: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable

run: migrate
	$(BIN)/python manage.py run_stack --port $(PORT) --sandbox-port $(SANDBOX_PORT)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check apps config tests

audit: setup
	$(BIN)/python -m pip install --quiet -c requirements.lock pip-audit || $(BIN)/python -m pip install --quiet pip-audit
	$(BIN)/pip-audit -r requirements.lock

lock: $(BIN)/python
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -e ".[dev]"
	.venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^runledger' > requirements.lock
	rm -rf .venv-lock
	@echo "requirements.lock rewritten; run 'make test' and commit it."

clean:
	rm -rf $(VENV) var/*.sqlite3* var/celery* var/staticfiles
