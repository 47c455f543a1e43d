# skyhop — `make demo` and `make test` work on a fresh machine with Python 3.11, git, make and Node.js.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml package.json 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: setup test demo lint format bench clean

$(STAMP): pyproject.toml package.json
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	@rm -f $(VENV)/.installed-*
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

setup: $(STAMP) node_modules/.installed sysdeps

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: setup
	$(BIN)/python -m benchmarks.demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) node_modules build *.egg-info .pytest_cache
