# One task runner for the README's commands and CI. Every target builds what it needs
# first (Debian packages, the virtual environment), so each works on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test quick lint typecheck unit bench simulate install system node clean

## Debian packages (one list, scripts/system-packages; CI installs the same).
system:
	bash scripts/system-packages

$(STAMP): pyproject.toml setup.py crdt/_columnar.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,dev,train]'
	touch $(STAMP)

## The pinned npm projects: JavaScript Automerge in the interoperability tests,
## automerge-repo beside us in the sync benchmark, and the dashboard's browser code
## (`npm ci` when a lockfile changes).
NODE_PROJECTS := tests/js benchmarks/automerge_repo web
NODE_STAMPS   := $(NODE_PROJECTS:%=%/node_modules/.package-lock.json)

%/node_modules/.package-lock.json: %/package-lock.json
	cd $* && npm ci --no-audit --no-fund --loglevel=error

## The dashboard's vendored browser code, built into the package from the pinned npm
## packages (the pages work with no internet): htmx as published, and the 3D viewer
## bundled with three.js by esbuild.
VENDOR := sync_server/dashboard/static/vendor
$(VENDOR)/.built: web/node_modules/.package-lock.json $(wildcard web/src/*.js)
	mkdir -p $(VENDOR)
	cp web/node_modules/htmx.org/dist/htmx.min.js $(VENDOR)/htmx.min.js
	cd web && node_modules/.bin/esbuild src/viewer.js --bundle --minify --format=esm \
		--log-level=warning --outfile=../$(VENDOR)/viewer.js
	touch $@

node: system $(NODE_STAMPS) $(VENDOR)/.built

install: system $(STAMP) node

## The main job: the end-to-end demo on embedded defaults.
demo: install
	$(BIN)/coherency demo

## Everything CI checks: lint, types, then the test suite.
test: install lint typecheck unit

## The inner loop: the suite without the slow end-to-end tests (marked `slow`).
quick: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q --durations=40

bench: install
	$(BIN)/python -m benchmarks.run --json benchmarks/results/latest.json

## The seeded booking simulation at full size (the suite runs 500 seeds): 10,000 seeds
## in process on SQLite, plus its PostgreSQL and HTTP runs; and the seeded stock run
## (the suite runs 200 seeds per database) at 10,000 seeds per database. SEEDS=n to change.
SEEDS ?= 10000
simulate: install
	COHERENCY_SIM_SEEDS=$(SEEDS) $(BIN)/pytest -q -s tests/server/test_bookings_simulation.py
	COHERENCY_COMMERCE_SEEDS=$(SEEDS) $(BIN)/pytest -q -s tests/server/test_commerce_simulation.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
