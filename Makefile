# Two commands for a fresh machine: `make run` (service + bundled CouchDB) and `make test`.
# Everything they need is installed here: a venv with the package, and the devserver's npm set.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CHROMIUM ?= /usr/bin/chromium
AXE_STAMP := tests/browser/node_modules/.installed-stamp

.PHONY: run test lint imports typecheck unit install devserver browser bench bench-smoke bench-events clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) devserver

devserver: $(STAMP)
	$(BIN)/python -c 'from piston_vm.storage.devserver import ensure_installed; ensure_installed()'

run: install
	$(BIN)/piston-vm serve

lint: $(STAMP)
	$(BIN)/ruff check piston_vm tests bench

# The layer contract of setup.cfg [importlinter] (docs/architecture.md).
imports: $(STAMP)
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

# The browser tests of the inbox (tests/browser): Debian's Chromium driven by Playwright (a dev
# extra; never `playwright install`, which downloads a browser of its own), and axe-core from
# npm, which the tests inject. apt-get runs only when Chromium is missing, and needs root.
browser: $(AXE_STAMP)
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "Chromium is missing: apt-get install chromium (as root), or make CHROMIUM=/path"; \
	    exit 1; \
	  fi; }

$(AXE_STAMP): tests/browser/package-lock.json
	cd tests/browser && npm ci --no-audit --no-fund
	touch $@

unit: install browser
	PISTON_VM_TEST_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

test: install lint imports typecheck unit

clean:
	rm -rf $(VENV) couchdb/devserver/node_modules tests/browser/node_modules var

# The benchmark of issue 6 (not part of `make test`): BENCH_ARGS="--couchdb-url URL --sizes …".
bench: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The event engine's lag, throughput and idle cost (docs/events.md): BENCH_ARGS="--couchdb-url …".
bench-events: install
	$(BIN)/python -m bench.events $(BENCH_ARGS)

bench-smoke: install
	$(BIN)/python -m bench.run --smoke
