# Two commands for a newcomer: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3

.PHONY: demo test deps env-up env-down unit coverage integration lint typecheck bench action-image clean

deps:            ## install Debian packages and Python dependencies (idempotent)
	bash scripts/install-deps.sh

env-up: deps     ## start Docker engine, registry and control plane; writes .testenv/env
	bash scripts/env-up.sh

env-down:        ## stop everything env-up started
	bash scripts/env-down.sh

lint:
	$(PYTHON) -m ruff check deployer tests entrypoint.py bench testenv
	$(PYTHON) -m ruff format --check deployer tests entrypoint.py bench testenv
	$(PYTHON) -m mypy
	$(PYTHON) scripts/check_size.py
	$(PYTHON) scripts/check_imports.py
	PYTHON=$(PYTHON) bash scripts/lint-workflows.sh

unit:
	$(PYTHON) -m pytest tests/unit

# Unit coverage of the rollout engine (its orchestration runs on tests/fakecluster): the
# tests of deployer/rollout only (Argo Rollouts and Flagger too), about a minute; fails under 90 %.
ROLLOUT_TESTS = tests/unit/test_rollout*.py tests/unit/test_progressive.py tests/unit/test_watch.py tests/unit/test_hostile_input.py::test_hostile_pod_logs_and_events_through_the_rollout_report
coverage:
	$(PYTHON) -m coverage run --data-file=.coverage.rollout --source=deployer/rollout -m pytest -q -p no:cacheprovider $(ROLLOUT_TESTS)
	$(PYTHON) -m coverage report --data-file=.coverage.rollout --fail-under=90

test: env-up lint coverage ## everything CI runs: services, lint, type check, all tests
	$(PYTHON) -m pytest tests

demo: env-up     ## build, push and roll out an example app, then a broken one that rolls back
	bash scripts/demo.sh

bench: env-up
	$(PYTHON) -m bench

action-image: deps
	bash scripts/action-image.sh
