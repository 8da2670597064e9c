# Two entry points on a fresh Debian 12 machine with Python 3.11, as root:
#   make run   install everything, migrate, load demo data, start all processes on loopback
#   make test  install everything, run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export FLASK_APP := wsgi
export BACKOFFICE_INSTANCE_PATH ?= $(CURDIR)/instance
HOST ?= 127.0.0.1
PORT ?= 5000
# The built-in SMSC simulator `make run` starts; the dispatcher binds to SMSC_HOST:SMSC_PORT
# (the simulator unless the environment names a real SMSC).
SMSC_SIMULATOR_PORT ?= 2775
# Pango for WeasyPrint, harfbuzz-subset for fast font subsetting (13 s -> 0.2 s a contract),
# a CJK font, poppler for PDF checks in tests, Chromium for the browser tests, PostgreSQL's
# server for the tests that run on it (tests/postgresql start their own, on a Unix socket), and venv
# for Debian's own python3.11 (`python3.11 -m venv` needs ensurepip, which Debian ships apart).
SYSTEM_PACKAGES := python3.11-venv libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-wqy-zenhei fonts-dejavu-core poppler-utils chromium postgresql

.PHONY: run test lint install system-packages venv migrate demo clean

system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

venv: $(BIN)/.installed

$(BIN)/.installed: requirements.txt | $(BIN)/activate
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

install: system-packages venv

migrate: install
	@mkdir -p "$(BACKOFFICE_INSTANCE_PATH)"
	@test -f "$(BACKOFFICE_INSTANCE_PATH)/secret_key" || (umask 077; $(BIN)/python -c 'import secrets; print(secrets.token_hex(32))' > "$(BACKOFFICE_INSTANCE_PATH)/secret_key")
	$(BIN)/flask db upgrade

demo: migrate
	$(BIN)/flask demo load

# One process group: Ctrl-C (or the end of any one: `wait -n`) stops them all; the trap clears
# itself first, since `kill 0` signals this shell too.
run: demo
	@echo "web: http://$(HOST):$(PORT)/  (staff: admin/sales/finance, password <name>-demo-2026)"
	@echo "SMSC simulator: 127.0.0.1:$(SMSC_SIMULATOR_PORT); dispatcher worker bound to it"
	@trap 'trap - EXIT INT TERM; kill 0' EXIT INT TERM; \
	$(BIN)/flask smsc simulate --host 127.0.0.1 --port $(SMSC_SIMULATOR_PORT) & \
	SMSC_PORT=$${SMSC_PORT:-$(SMSC_SIMULATOR_PORT)} $(BIN)/flask dispatch worker & \
	$(BIN)/flask jobs run & \
	$(BIN)/gunicorn --bind $(HOST):$(PORT) --workers 2 --preload wsgi:app & \
	wait -n

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The suite in two processes (pytest-xdist), one a core of the 2-core machine CI runs on: each has
# its own app, databases, PostgreSQL server and simulators; TEST_WORKERS=0 runs it in one.
TEST_WORKERS ?= 2
test: install lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

clean:
	rm -rf $(VENV) instance .pytest_cache
