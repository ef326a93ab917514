# The README's commands: `make run` and `make test`. Everything they need is set up here.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
UV_VERSION ?= 0.13.9
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell command -v $(PYTHON))
# uv from PATH when present, else a project-local copy installed from PyPI.
UV ?= $(shell command -v uv 2>/dev/null || echo .state/tools/bin/uv)
RUN := $(UV) run --frozen --quiet
# helm renders the Kubernetes chart in the tests (tests/test_deploy.py); built once from the Go module proxy.
HELM_VERSION ?= v4.3.2
HELM := $(CURDIR)/.state/tools/helm-$(HELM_VERSION)/helm
export HELM
PARTNER ?= demo
SCOPES ?= read,write

.PHONY: help setup run up down logs bench test check lint typecheck schemas schemas-check schemas-release infra-up infra-down infra-status browser token user console-messages console-screenshots ops pytest clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.state/tools/bin/uv:
	@echo "[setup] uv not found: installing uv $(UV_VERSION) from PyPI into .state/tools"
	$(PYTHON) -m venv .state/tools
	.state/tools/bin/pip install --quiet "uv==$(UV_VERSION)"

$(HELM):
	@command -v go >/dev/null || { echo "[setup] Go is needed to build helm $(HELM_VERSION) (apt-get install golang, or go.dev/dl)"; exit 1; }
	@echo "[setup] building helm $(HELM_VERSION) from the Go module proxy into $(dir $(HELM)) (once; a few minutes)"
	GOBIN=$(dir $(HELM)) nice -n 19 go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

setup: $(if $(filter .state/tools/bin/uv,$(UV)),.state/tools/bin/uv) ## install the Python environment (idempotent)
	@$(UV) sync --frozen --all-packages --quiet --compile-bytecode
	@# Bytecode written once here: where PYTHONDONTWRITEBYTECODE is set (as on the CI machine) every process would
	@# otherwise compile every module it imports from source, about half of a service's start.
	@$(RUN) python -m compileall -q -j 0 libs services >/dev/null
	@echo "[setup] Python environment ready (.venv)"

infra-up: setup ## start Kafka and PostgreSQL (reuses what runs)
	@$(RUN) python -m devtools.infra up

infra-down: ## stop Kafka and PostgreSQL
	@$(RUN) python -m devtools.infra down

infra-status: ## show what runs
	@$(RUN) python -m devtools.infra status

lint: setup ## ruff
	@$(RUN) ruff check .
	@$(RUN) ruff format --check --quiet .

typecheck: setup ## mypy --strict
	@$(RUN) mypy

schemas: setup ## export the JSON Schemas of all contracts
	@$(RUN) python -m contracts.schema_export

schemas-check: setup ## fail when the committed JSON Schemas are stale or break compatibility
	@$(RUN) python -m contracts.schema_export --check

schemas-release: setup ## record the contracts' schemas as released (the guard's baseline); refuses breaking changes
	@$(RUN) python -m contracts.schema_export --release

pytest: ## the test suite alone (infrastructure must be up); one test: make pytest PYTEST_ARGS="path::name"
	@$(RUN) pytest $(PYTEST_ARGS)

check: setup $(HELM) lint typecheck schemas-check ## the inner loop: ruff, mypy and every test that needs no Kafka or PostgreSQL
	@$(RUN) pytest -m "not infra" -q $(PYTEST_ARGS)

browser: setup ## Debian's Chromium for the console's browser tests (installed with apt-get when missing)
	@$(RUN) python -m devtools.browser

# The whole suite in two pytest-xdist workers, a test file each at a time: most of a test's time is waiting (for
# Kafka, PostgreSQL, a browser, a service starting), so two files at once use the two cores the one file leaves idle.
# Every test has its own database and topic prefix. TEST_WORKERS=0: one process, as `make pytest` runs.
TEST_WORKERS ?= 2

test: setup $(HELM) infra-up browser lint typecheck schemas-check ## everything: set-up, Kafka + PostgreSQL, Chromium, ruff, mypy, the whole suite
	@$(RUN) pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

ops: ## operate topics: make ops ARGS="topics | lag | dlq list <topic> | dlq replay <topic> [--id ID] | tail <topic>"
	@$(RUN) python -m devtools.ops $(ARGS)

bench: setup infra-up ## throughput, latency, CPU and memory against baselines; JSON report in bench/results/
	@$(RUN) python -m devtools.bench

user: setup infra-up ## create a console user: make user PARTNER=<id> EMAIL=<email> ROLE=admin|marketer|viewer (ROLE=ops: no PARTNER)
	@$(RUN) python -m console.cli --email "$(EMAIL)" --role "$(ROLE)" $(if $(filter command line environment,$(origin PARTNER)),--partner "$(PARTNER)")

console-screenshots: setup infra-up browser ## run the console's browser tests and keep their screenshots in docs/console/
	@CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console $(RUN) pytest tests/browser -q

console-messages: setup ## extract the console's messages and merge new ones into its catalogues (then translate them)
	@cd services/console && $(CURDIR)/.venv/bin/pybabel extract -F babel.cfg -k _ -k gettext -k N_ --no-location \
		--sort-output -o $(CURDIR)/.state/console-messages.pot . \
		&& $(CURDIR)/.venv/bin/pybabel update -i $(CURDIR)/.state/console-messages.pot -d src/console/locale \
		--width 120 --ignore-obsolete

token: ## print a partner's access token from identity (make up first): make token PARTNER=<id> [SCOPES=orders:read,...]
	@$(RUN) python -m devtools.tokens "$(PARTNER)" --scopes "$(SCOPES)"

run: setup infra-up ## start everything and play the example scenario (Ctrl-C stops)
	@$(RUN) python -m devtools.run

up: setup infra-up ## the same as run, in the background (idempotent)
	@$(RUN) python -m devtools.run up

down: ## stop what make up started (Kafka and PostgreSQL keep running: make infra-down)
	@$(RUN) python -m devtools.run down

logs: ## follow the logs of make up
	@$(RUN) python -m devtools.run logs

clean: infra-down ## stop the infrastructure and delete the state folder
	rm -rf .state
