# Every target sets up what it needs; the README and .ci/run call these.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo run example-model test test-unit lint typecheck check clean lock

# The dependencies come from the hashed lock file, then the project itself without them.
$(BIN)/model-proxy: pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

setup: $(BIN)/model-proxy

servers.json models.json:
	cp -n examples/$@ $@

# One command, one machine: embedded Redis, an in-process worker, the API on :8002 and the
# example model on :8011 (see README "Quickstart").
run: setup servers.json models.json
	$(BIN)/model-proxy example-model --port 8011 & model=$$!; \
	  trap 'kill $$model' EXIT INT TERM; \
	  $(BIN)/model-proxy serve --port 8002

# The quickstart: a demo Orthanc PACS with sample data on :8042, the example model on :8011 and
# model-proxy on :8002 with the example configs, all stopped together with Ctrl+C (or SIGTERM):
# the shell waits in `wait`, which a signal interrupts, and its EXIT trap stops every part and
# waits for them (the demo PACS removes its temporary folder). A port in use stops it at once.
demo: setup servers.json models.json
	./scripts/install-system-packages.sh
	$(BIN)/python -m devtools.ports 8042 8011 8002
	export DEMO_PACS_PASSWORD=$${DEMO_PACS_PASSWORD:-demo-only}; \
	  trap 'kill $$pacs $$model $$api 2>/dev/null; wait' EXIT; trap 'exit 130' INT TERM; \
	  $(BIN)/python scripts/demo_pacs.py --port 8042 & pacs=$$!; \
	  $(BIN)/model-proxy example-model --port 8011 & model=$$!; \
	  $(BIN)/model-proxy serve --port 8002 & api=$$!; \
	  wait $$api

example-model: setup
	$(BIN)/model-proxy example-model --port 8011

# The test command: system packages (Orthanc, its DICOMweb plugin, Redis) when missing, the
# virtualenv, lint, types, then every test with a coverage figure.
test: setup
	./scripts/install-system-packages.sh
	$(MAKE) check
	$(BIN)/pytest --cov \
	  --cov-report=term:skip-covered

test-unit: setup
	$(BIN)/pytest tests/unit

lint: setup
	$(BIN)/ruff check shared broker workers model_proxy example_model devtools tests scripts bench

typecheck: setup
	$(BIN)/mypy

check: lint typecheck

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage

# The load test (README "Reliability"): 200 concurrent clients of every kind for 60 s on
# loopback against the real stack; `make load LOAD_ARGS="--clients 50 --seconds 20"` is shorter.
.PHONY: load
load: setup
	./scripts/install-system-packages.sh
	$(BIN)/python -m bench.mixed_load $(LOAD_ARGS)

# The benchmark (README "Performance"): real Orthanc, Redis, API and workers; prints a table of
# ratios against baselines measured in the same run. `make bench BENCH_ARGS=--smoke` is quick.
.PHONY: bench
bench: setup
	./scripts/install-system-packages.sh
	$(BIN)/python -m bench $(BENCH_ARGS)

# Pin every dependency with its hashes after a change to pyproject.toml: requirements/dev.lock
# (tests and development) and requirements/runtime.lock (the image). CI and the image install
# only from these.
LOCK := $(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --quiet
lock: setup
	$(BIN)/pip install --quiet uv
	$(LOCK) --extra test --extra example-model -o requirements/dev.lock
	$(LOCK) --extra example-model -o requirements/runtime.lock
