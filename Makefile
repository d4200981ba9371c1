# The two commands of README.md. Both create .venv and install mailbot into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install install-test bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The package is installed in editable mode: code changes need no reinstall, only a change of
# pyproject.toml (dependencies) does. The stamps remember the last install. An editable install
# is not compiled: compileall does it (where PYTHONDONTWRITEBYTECODE is set, every start would
# compile the modules again).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	$(BIN)/python -m compileall -q mailbot
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q mailbot
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The development mail server writes no Authentication-Results: staff mail is trusted by its
# From: alone here (insecure, and logged as such); never for real mail (docs/operations.md).
run: install
	MAILBOT_STAFF_AUTHENTICATION=none $(BIN)/mailbot run

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-test
	$(BIN)/python benchmarks/ingest.py
