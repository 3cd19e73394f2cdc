# Two commands on a fresh machine: `make serve` and `make test`. Each installs what it needs first:
# serve the server and the session runtime only, test (and every other dev target) the rest too.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SERVE_STAMP := $(VENV)/.installed-serve
DEV_STAMP   := $(VENV)/.installed-dev
# every version of the full test venv, so each machine installs the same set (make lock remakes it)
CONSTRAINTS := requirements/constraints.txt
PIP         := $(PY) -m pip install --quiet -c $(CONSTRAINTS)
# make test's pytest workers: one a vCPU (tests/conftest.py says which tests share a worker)
TEST_WORKERS ?= $(shell nproc)

.PHONY: install-serve install console lock runtimes runtimes-dev lock-runtimes serve test unit lint format typecheck imports doctor bench bench-quick bench-tools bench-paired bench-idle bench-ramp bench-copies bench-ondemand bench-engine bench-runtimes bench-e2b bench-auth bench-http bench-agents bench-cluster bench-egress soak clean

# the server alone: what runs inside the sessions is a runtime of its own (make runtimes)
$(SERVE_STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip==25.3
	$(PIP) -e .
	# from Debian: mksquashfs and patchelf build the runtimes, Node.js runs the node runtime
	command -v mksquashfs >/dev/null && command -v patchelf >/dev/null && command -v node >/dev/null \
	  || (apt-get update -q && apt-get install -y -q squashfs-tools patchelf nodejs) >/dev/null
	touch $(SERVE_STAMP)

# the web console (/console): the front end in console/, built with the locked npm packages
# (CodeMirror, esbuild) into the directory the server serves; npm comes from Debian. Without
# npm the server still runs and /console says how to build it
CONSOLE_STAMP := src/sessionpool/faces/console/static/.built
$(CONSOLE_STAMP): console/package.json console/package-lock.json console/build.mjs console/index.html console/console.css $(wildcard console/src/*.js) | $(SERVE_STAMP)
	command -v npm >/dev/null || (apt-get update -q && apt-get install -y -q npm) >/dev/null 2>&1 || true
	if command -v npm >/dev/null; then \
	  cd console && npm ci --no-audit --no-fund --ignore-scripts >/dev/null && node build.mjs && touch ../$(CONSOLE_STAMP); \
	else echo "npm not installed: the console (/console) is not built"; fi

console: $(CONSOLE_STAMP)

# on top of that, what the tests, linters and benchmarks need
$(DEV_STAMP): $(SERVE_STAMP) pyproject.toml requirements/clients.txt requirements/deepagents.txt $(CONSTRAINTS) tests/clients/e2b_js/package-lock.json tests/clients/llamaindex_ts/package-lock.json
	$(PIP) -e '.[kernel,cluster,otel,dev]'
	# the real Azure dynamic-sessions client libraries, for the conformance tests; --no-deps
	# because one of them caps pydantic below our pin (see requirements/clients.txt)
	$(PIP) --no-deps -r requirements/clients.txt
	# the agents tests run the 1.0.0b10 quickstart of azure-ai-projects (the Assistants-style
	# API) in a subprocess with PYTHONPATH on this side directory; the venv keeps 2.4.0 for the
	# Responses-style client. --no-deps: its dependencies (azure-core, isodate,
	# typing-extensions) are already in the venv. No -c here: the constraints pin the venv's
	# 2.4.0; this exact pin, with no dependencies, is the side directory's whole lock
	$(PY) -m pip install --quiet --no-deps --upgrade --target $(VENV)/side/azure-ai-projects-b10 azure-ai-projects==1.0.0b10
	# deepagents 0.6 (for LangChain's SessionsBashBackend) wants a newer langchain-core than the
	# venv's: its own side directory, the exact set in requirements/deepagents.txt, --no-deps
	$(PY) -m pip install --quiet --no-deps --upgrade --target $(VENV)/side/deepagents -r requirements/deepagents.txt
	# best effort: a PostgreSQL server for the agents persistence tests (skipped without one)
	command -v /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ((apt-get update -q && apt-get install -y -q postgresql) >/dev/null 2>&1 || echo "PostgreSQL not installed: its tests will be skipped")
	# best effort: a Prometheus server, for the test that scrapes /metrics (skipped without one)
	command -v prometheus >/dev/null 2>&1 || ((apt-get update -q && apt-get install -y -q --no-install-recommends prometheus) >/dev/null 2>&1 || echo "Prometheus not installed: its scrape test will be skipped")
	# best effort: Debian's Chromium, for the console's browser tests (skipped without it);
	# Playwright drives it as it is, it downloads no browser
	command -v chromium >/dev/null 2>&1 || ((apt-get update -q && apt-get install -y -q chromium) >/dev/null 2>&1 || echo "Chromium not installed: the console's browser tests will be skipped")
	# the E2B JavaScript SDKs, exactly as locked, for the JS conformance test (Node.js comes with
	# the serve step; npm with Debian's nodejs)
	if command -v npm >/dev/null; then cd tests/clients/e2b_js && npm ci --no-audit --no-fund --ignore-scripts >/dev/null; \
	  else echo "npm not installed: the E2B JS SDK test will be skipped"; fi
	# LlamaIndex TS's Azure dynamic-sessions tool (@llamaindex/azure), exactly as locked
	if command -v npm >/dev/null; then cd tests/clients/llamaindex_ts && npm ci --no-audit --no-fund --ignore-scripts >/dev/null; \
	  else echo "npm not installed: the LlamaIndex TS test will be skipped"; fi
	touch $(DEV_STAMP)

install-serve: $(SERVE_STAMP)

install: $(DEV_STAMP) runtimes runtimes-dev console

# the session runtimes (runtimes/<name>: a pinned package set, built into its own image under
# .venv/share/sessionpool/runtimes). Quick when nothing changed: a build is skipped while its
# definition and interpreter are the same
runtimes: $(SERVE_STAMP)
	$(VENV)/bin/sessionpool runtime build runtimes/python runtimes/node

# a runtime on another CPython, for the tests (skipped, with a message, where there is none)
runtimes-dev: $(SERVE_STAMP)
	$(VENV)/bin/sessionpool runtime build runtimes/python-3.13 || echo "no CPython 3.13 here: its tests will be skipped"

# re-resolves every runtimes/*/requirements.in into its requirements.txt (after changing a pin)
lock-runtimes: $(SERVE_STAMP)
	$(VENV)/bin/sessionpool runtime lock runtimes/python runtimes/python-3.13

# remakes $(CONSTRAINTS) from scratch: resolve pyproject.toml's pins (kernel and dev extras) and
# requirements/clients.txt in a fresh temporary venv, without the old constraints, and freeze it.
# Run after changing a pin; then make install picks the new set up (the stamps depend on it)
lock:
	@set -e; tmp=$$(mktemp -d /tmp/sessionpool-lock.XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	echo "resolving in $$tmp/venv"; \
	$(PYTHON) -m venv $$tmp/venv; \
	$$tmp/venv/bin/python -m pip install --quiet --upgrade pip==25.3; \
	$$tmp/venv/bin/python -m pip install --quiet -e '.[kernel,cluster,otel,dev]'; \
	$$tmp/venv/bin/python -m pip install --quiet --no-deps -r requirements/clients.txt; \
	{ \
	  echo "# Every package of the full test venv, pinned: each pip install in the Makefile passes"; \
	  echo "# -c with this file, so every machine installs exactly these versions (Python 3.11,"; \
	  echo "# linux x86_64). Generated by make lock; do not edit by hand. Regenerate with make lock"; \
	  echo "# after changing a pin in pyproject.toml or requirements/clients.txt: it builds a fresh"; \
	  echo "# temporary venv, installs -e '.[kernel,cluster,otel,dev]' and then --no-deps -r requirements/clients.txt"; \
	  echo "# (both without this file), and writes pip freeze --all --exclude-editable below."; \
	  echo "# Not in here: sessionpool itself, and the azure-ai-projects 1.0.0b10 side directory"; \
	  echo "# (pinned in the Makefile). pip check on this set reports one known conflict,"; \
	  echo "# semantic-kernel -> pydantic (requirements/clients.txt says why)."; \
	  $$tmp/venv/bin/python -m pip freeze --all --exclude-editable; \
	} > $$tmp/constraints.txt; \
	mv $$tmp/constraints.txt $(CONSTRAINTS); \
	echo "wrote $(CONSTRAINTS); pip check says:"; \
	$$tmp/venv/bin/python -m pip check || true

serve: install-serve runtimes console
	$(VENV)/bin/sessionpool serve

# the whole suite, with a coverage report of the test process's own code (report only)
test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --cov=sessionpool --cov-report=term:skip-covered

# the tests that need no jail (no root, namespaces or seccomp)
unit: install
	$(PY) -m pytest -m "not jail"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# fixes what ruff can fix, then formats
format: install
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

# the allowed imports between layers (pyproject.toml [tool.importlinter]; docs/architecture.md)
imports: install
	$(VENV)/bin/lint-imports --no-cache

doctor: install-serve
	$(VENV)/bin/sessionpool doctor

# benchmarks are scripts that report figures (results/ gets the JSON); not part of make test.
# bench: the whole suite beside the peers (installed into .bench/peers); writes
# benchmarks/results/<date>.{json,md,*.png} (docs/benchmarks.md explains them)
bench: install bench-tools
	$(PY) -m benchmarks.suite

# the same targets at small sizes (a few minutes), each printed PASS or MISS: the regression guard
bench-quick: install bench-tools
	$(PY) -m benchmarks.suite --quick

# the scaling ramp alone, to where admission refuses (about half an hour; page merging on)
bench-ramp: install
	$(PY) -m benchmarks.suite --ramp

# wrk (Debian's), the light load generator of the throughput figure: the Python clients spend as
# much CPU per request as the server, on the same cores. Best effort: the suite says it is missing
bench-tools:
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk) >/dev/null || echo "wrk not installed: no wrk throughput figure"

# two builds side by side (BASE, default HEAD, against the working tree), requests interleaved:
# server and kernel CPU per request, for changes smaller than the run-to-run noise
# (PAIRED="--wrk 5" measures under wrk's load instead of one request at a time)
BASE ?= HEAD
bench-paired: install
	$(PY) -m benchmarks.paired --base $(BASE) $(PAIRED)

# one request after a pause against one at once: wall time, server and kernel CPU (a minute)
bench-idle: install
	$(PY) -m benchmarks.idle

bench-engine: install
	$(PY) -m benchmarks.engine

# where sessions make their copy-on-write copies, and whether one session's predict another's
# (could page merging mark narrower ranges?); reads /proc/PID/pagemap, so as root
bench-copies: install
	$(PY) -m benchmarks.copies

# where an on-demand session's allocation spends its time, step by step (a real engine)
bench-ondemand: install
	$(PY) -m benchmarks.ondemand

# allocation, x += 1 and idle memory for each runtime (python, python-3.13, node, a custom image)
bench-runtimes: install
	$(PY) -m benchmarks.runtimes

# the E2B face through the unmodified SDK, beside a local Jupyter kernel
bench-e2b: install
	$(PY) -m benchmarks.e2b

# x += 1 with each kind of credential (server key, tenant key, identity token)
bench-auth: install
	$(PY) -m benchmarks.auth

bench-http: install
	$(PY) -m benchmarks.http_api

# a gateway over a local 3-node Ray cluster beside a single server: allocation, x += 1, a
# burst of 500 and a node loss (writes benchmarks/results/cluster-<date>.json)
bench-cluster: install
	$(PY) -m benchmarks.cluster

# the agent loop's own cost (a scripted model that answers at once): Responses and Assistants
bench-agents: install
	$(PY) -m benchmarks.agents

# the egress proxy: latency it adds to HTTP and HTTPS (with and without secrets), requests and
# TLS connections per second, one tunnel's MiB/s and the bandwidth cap holding,
# against the tests' internet in a network namespace (root)
bench-egress: install
	$(PY) -m benchmarks.egress

# soak: 100 sessions of random work against a real server; 10 minutes (MINUTES=2 to shorten)
soak: install
	$(PY) -m benchmarks.soak $(if $(MINUTES),--minutes $(MINUTES))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
