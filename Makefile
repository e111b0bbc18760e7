# finsent — see README.md. Every target works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install up down test test-unit audit services-up services-down lock clean

install: $(STAMP)

# Reinstall only when the dependency pins change; pip's cache keeps a rebuild fast. The venv is made
# again when pip is missing: one whose ensurepip failed (no python3-venv) has python only.
$(STAMP): constraints.txt pyproject.toml
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

up: install
	$(BIN)/finsent up

down:
	-$(BIN)/finsent down

services-up: install
	$(BIN)/finsent services up

services-down:
	-$(BIN)/finsent services down

# The whole suite: unit tests, then integration tests against the real servers.
test: install
	$(BIN)/python -m tests.run

test-unit: install
	$(BIN)/python -m pytest tests/unit -q

# Known vulnerabilities in the pinned dependencies, from PyPI's advisory records (needs the network).
# Not part of `make test`, which must pass offline; `.ci/run` runs it as its own step.
audit: install
	$(BIN)/python -m finsent.dependency_audit constraints.txt

# Re-resolve the pins from requirements.in (commit the result).
lock:
	$(BIN)/pip install --quiet -r requirements.in -e '.[test]'
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache
