# Stratus: `make up` runs the all-in-one cloud, `make test` runs every test tier.
STATE_DIR ?= /var/lib/stratus
PORT ?= 8770
HOST ?= 127.0.0.1
PYTEST_ARGS ?=

.PHONY: up test deps test-deps bench clean-state

deps:
	./scripts/install-deps.sh

test-deps:
	./scripts/install-deps.sh --test

up: deps
	.venv/bin/stratus up --state-dir $(STATE_DIR) --host $(HOST) --port $(PORT)

test: test-deps
	.venv/bin/pytest -q -rs $(PYTEST_ARGS)

bench: test-deps
	for b in bench/*.py; do .venv/bin/python $$b || exit 1; done
