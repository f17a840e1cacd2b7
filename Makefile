# derot: two commands on a fresh machine.
#   make demo   run the mission end to end
#   make test   run the whole test suite
# Both set up everything they need: a Python venv (.venv) and the npm toolchain (contracts/node_modules).

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# Two pytest workers (pytest-xdist): each takes whole test files, so a file's module fixtures (an anvil, a
# devnet) stay in one process. `make test TEST_WORKERS=0` runs the suite in one process.
TEST_WORKERS ?= 2
PYTEST_ARGS ?= $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

.PHONY: all setup venv npm proto test demo bench clean contracts wheel

all: setup

setup: venv npm proto

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@echo "== creating $(VENV) and installing derot with the test and devnet extras"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,devnet]'
	@touch $@

npm: contracts/node_modules/.installed
contracts/node_modules/.installed: contracts/package.json contracts/package-lock.json
	@echo "== installing the npm toolchain (solc, OpenZeppelin, anvil) into contracts/node_modules"
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

proto: venv
	$(PY) -m derot._proto --generate

# a wheel that works on its own: stubs, .proto files, contract artifacts and attestation roots inside
wheel: venv
	$(PIP) wheel --no-deps --no-build-isolation -w dist .

contracts: setup
	$(PY) -m derot.devnet.compile

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m derot.cli.main demo

bench: setup
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) contracts/node_modules node/_proto/derot .pytest_cache .hypothesis build dist
