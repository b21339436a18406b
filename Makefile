# Quick start: `make demo` then `make test`. Everything installs from uv.lock.
UV_VERSION := 0.13.8
VENV := .venv
TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
# uv trusts the system's CA store (the machine's package proxy may sign with it)
export UV_SYSTEM_CERTS := 1

.PHONY: setup demo test test-all lint bench clean

setup: $(VENV)/.installed

$(TOOLS)/bin/uv:
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	touch $@

demo: setup  ## simulate, ingest, clean, engineer, train, gate, promote, score
	$(VENV)/bin/aistack run fraud
	$(VENV)/bin/aistack materialize fraud
	@echo
	@echo "Serve the champion (127.0.0.1:8000):  $(VENV)/bin/aistack serve fraud --port 8000"
	@echo "Then score a transaction:"
	@echo "  curl -s -X POST 127.0.0.1:8000/v1/fraud/predict -H 'content-type: application/json' \\"
	@echo "       -d '{\"customer_id\": 12, \"terminal_id\": 345, \"tx_amount\": 250.5, \"tx_datetime\": \"2018-09-30T10:00:00\"}'"

test: setup  ## the default suite (what CI runs)
	$(VENV)/bin/pytest

test-all: setup  ## also the slow tests
	$(VENV)/bin/pytest -m "slow or not slow"

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: setup
	$(VENV)/bin/python bench/pipeline.py
	$(VENV)/bin/python bench/training_set.py
	$(VENV)/bin/python bench/serving.py
	$(VENV)/bin/python bench/drift.py
	$(VENV)/bin/python bench/realtime.py
	$(VENV)/bin/python bench/recommendations.py
	$(VENV)/bin/python bench/model_quality.py

clean:
	rm -rf $(VENV) $(TOOLS) .aistack
