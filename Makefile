# ddbcdc: two commands on a fresh machine
#   make demo   the whole pipeline on the local stack (make demo-streams: DynamoDB Streams)
#   make test   lint, type-check and every test
# and one for the edit loop:
#   make check  lint, type-check and the unit tests (property tests on fewer examples)
# and for CI: make package-check (the sdist and the wheel, installed and run outside the checkout)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
NODE_INSTALLED := node_modules/.installed

.PHONY: install demo demo-streams test check lint typecheck unit bench package-check clean

# pytest-xdist workers; they share one PostgreSQL cluster, and the end-to-end tests run on one
# of them at a time (xdist group "e2e"). TEST_WORKERS=0 runs every test in one process.
TEST_WORKERS ?= 2

SPEEDUPS := setup.py $(wildcard src/ddbcdc/decode/_speedups*.[ch])

$(INSTALLED): pyproject.toml $(SPEEDUPS)
	@command -v java >/dev/null || { echo "Java 17+ is required (Debian: apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,local]'
	$(PY) -c "import amazon_kclpy, pathlib, sys; jars = list((pathlib.Path(amazon_kclpy.__file__).parent / 'jars').glob('*.jar')); sys.exit(0 if jars else 'amazon-kclpy installed without its jars: reinstall it with Maven Central reachable')"
	@DDBCDC_SPEEDUPS=1 $(PY) -c "import ddbcdc.decode" 2>/dev/null || echo "warning: ddbcdc's C speedups did not build (no C compiler or Python headers?): decoding runs in pure Python, and the tests will fail on it" >&2
	@$(BIN)/ddbcdc worker --prepare >/dev/null || echo "warning: the DynamoDB Streams adapter jar or launcher is not ready (see above); DDBCDC_SOURCE=dynamodb-streams will try again on first use" >&2
	touch $@

$(NODE_INSTALLED): package.json package-lock.json
	@command -v npm >/dev/null || { echo "Node.js 18+ and npm are required (Debian: apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(INSTALLED) $(NODE_INSTALLED)

demo: install
	$(BIN)/ddbcdc demo

# The same pipeline reading the table's own DynamoDB stream (no Kinesis, no bridge).
demo-streams: install
	$(BIN)/ddbcdc demo --source dynamodb-streams

lint: $(INSTALLED)
	$(BIN)/ruff check src tests workers benchmarks migrations schemas .ci setup.py
	$(BIN)/ruff format --check src tests workers benchmarks migrations schemas .ci setup.py

typecheck: $(INSTALLED)
	$(BIN)/mypy

test: install lint typecheck
	$(BIN)/pytest -n $(TEST_WORKERS)

check: lint typecheck
	DDBCDC_QUICK_TESTS=1 $(BIN)/pytest -n $(TEST_WORKERS) tests/unit -q

unit: $(INSTALLED)
	$(BIN)/pytest tests/unit

bench: install
	$(PY) benchmarks/decode_bench.py

package-check: install
	$(PY) .ci/package_check.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info src/ddbcdc/decode/*.so
