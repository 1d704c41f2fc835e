# Every target sets up what it needs; the README and .ci/run call these.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run example-model test test-unit lint typecheck check clean

$(BIN)/model-proxy: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/model-proxy

servers.json models.json:
	cp -n examples/$@ $@

# One command, one machine: embedded Redis, an in-process worker, the API on :8002 and the
# example model on :8011 (see README "Quickstart").
run: setup servers.json models.json
	$(BIN)/model-proxy example-model --port 8011 & \
	  trap 'kill $$!' EXIT INT TERM; \
	  $(BIN)/model-proxy serve --port 8002

example-model: setup
	$(BIN)/model-proxy example-model --port 8011

# The test command: system packages (Orthanc, its DICOMweb plugin, Redis) when missing, the
# virtualenv, lint, types, then every test with a coverage figure.
test: setup
	./scripts/install-system-packages.sh
	$(MAKE) check
	$(BIN)/pytest --cov=shared --cov=broker --cov=workers --cov=model_proxy --cov=example_model \
	  --cov-report=term:skip-covered

test-unit: setup
	$(BIN)/pytest tests/unit

lint: setup
	$(BIN)/ruff check shared broker workers model_proxy example_model tests

typecheck: setup
	$(BIN)/mypy

check: lint typecheck

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
