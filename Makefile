# Two commands on a fresh machine: `make serve` and `make test`. Each installs what it needs first:
# serve the server and the session runtime only, test (and every other dev target) the rest too.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SERVE_STAMP := $(VENV)/.installed-serve
DEV_STAMP   := $(VENV)/.installed-dev

.PHONY: install-serve install serve test lint typecheck doctor bench bench-quick bench-engine bench-http bench-agents soak clean

# the server and what runs inside the sessions: the project plus its kernel extra, nothing else
$(SERVE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -e '.[kernel]'
	touch $(SERVE_STAMP)

# on top of that, what the tests, linters and benchmarks need
$(DEV_STAMP): $(SERVE_STAMP) pyproject.toml requirements/clients.txt
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
	touch $(DEV_STAMP)

install-serve: $(SERVE_STAMP)

install: $(DEV_STAMP)

serve: install-serve
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

doctor: install-serve
	$(VENV)/bin/sessionpool doctor

# benchmarks are scripts that report figures (results/ gets the JSON); not part of make test.
# bench: the whole suite beside the peers (installed into .bench/peers); writes
# benchmarks/results/<date>.{json,md,*.png} (docs/benchmarks.md explains them)
bench: install
	$(PY) benchmarks/suite.py

bench-quick: install
	$(PY) benchmarks/suite.py --quick

bench-engine: install
	$(PY) benchmarks/engine.py

bench-http: install
	$(PY) benchmarks/http.py

# the agent loop's own cost (a scripted model that answers at once): Responses and Assistants
bench-agents: install
	$(PY) benchmarks/agents.py

# soak: 100 sessions of random work against a real server; 10 minutes (MINUTES=2 to shorten)
soak: install
	$(PY) benchmarks/soak.py $(if $(MINUTES),--minutes $(MINUTES))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
