# Two commands: `make run` starts everything, `make test` runs the whole suite.
# Both create the virtual environment and install what they need on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Two workers (the suite's files are independent: free ports, own data dirs,
# own PostgreSQL schemas and Redis prefixes); PYTEST_ARGS= runs it serially.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: run test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/paywarden run

test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/confirm_throughput.py

clean:
	rm -rf $(VENV) .paywarden
