# Two commands on a fresh machine: `make serve` and `make test`. Both install everything first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install serve test lint typecheck doctor bench bench-quick bench-engine bench-http bench-agents soak clean

$(STAMP): pyproject.toml requirements/clients.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -e '.[kernel,dev]'
	# the real Azure dynamic-sessions client libraries, for the conformance tests; --no-deps
	# because one of them caps pydantic below our pin (see requirements/clients.txt)
	$(PY) -m pip install --quiet --no-deps -r requirements/clients.txt
	# the agents tests run the 1.0.0b10 quickstart of azure-ai-projects (the Assistants-style
	# API) in a subprocess with PYTHONPATH on this side directory; the venv keeps 2.4.0 for the
	# Responses-style client. --no-deps: its dependencies (azure-core, isodate,
	# typing-extensions) are already in the venv
	$(PY) -m pip install --quiet --no-deps --upgrade --target $(VENV)/side/azure-ai-projects-b10 azure-ai-projects==1.0.0b10
	# best effort: a PostgreSQL server for the agents persistence tests (skipped without one)
	command -v /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ((apt-get update -q && apt-get install -y -q postgresql) >/dev/null 2>&1 || echo "PostgreSQL not installed: its tests will be skipped")
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(VENV)/bin/sessionpool serve

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

doctor: install
	$(VENV)/bin/sessionpool doctor

# benchmarks are scripts that report figures (results/ gets the JSON); not part of make test.
# bench: the whole suite beside the peers (installed into .bench/peers); writes
# benchmarks/results/<date>.{json,md,*.png} (docs/benchmarks.md explains them)
bench: install
	$(PY) -m benchmarks.suite

bench-quick: install
	$(PY) -m benchmarks.suite --quick

bench-engine: install
	$(PY) -m benchmarks.engine

bench-http: install
	$(PY) -m benchmarks.http_api

# the agent loop's own cost (a scripted model that answers at once): Responses and Assistants
bench-agents: install
	$(PY) -m benchmarks.agents

# soak: 100 sessions of random work against a real server; 10 minutes (MINUTES=2 to shorten)
soak: install
	$(PY) -m benchmarks.soak $(if $(MINUTES),--minutes $(MINUTES))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
