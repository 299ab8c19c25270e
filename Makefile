# The two quick-start commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
COVERAGE_FLOOR ?= 95.0
# Test processes (pytest-xdist); a test file runs in one of them, whole.
TEST_PROCESSES ?= 2
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/driftwatch demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Line coverage of every package, worker and retrain-worker subprocesses included (coverage
# starts in each Python subprocess; see [tool.coverage] in pyproject.toml); fails below the
# floor, which only goes up.
test: $(STAMP) lint
	rm -f .coverage .coverage.*
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/python -m pytest -m "not slow" -q \
		-n $(TEST_PROCESSES) --dist loadfile --durations=25 --cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR)

bench: $(STAMP)
	$(BIN)/python -m pytest -m slow -q
	$(BIN)/python -m bench.bucket_reduction
	$(BIN)/python -m bench.backtest_speed
	$(BIN)/python -m bench.steady_instructions
	$(BIN)/python -m bench.labelled_instructions
	$(BIN)/python -m bench.validation_speed
	$(BIN)/python -m bench.backtest_memory
	$(BIN)/python -m bench.worker_memory
	$(BIN)/python -m bench.rocksdb_memory
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.throughput --batch 500 --out bench/results/throughput_batch500.json
	$(BIN)/python -m bench.throughput --live --events 150000 --batch 500 \
		--out bench/results/throughput_live_batch500.json
	$(BIN)/python -m bench.throughput --live --events 150000 --out bench/results/throughput_live.json
	$(BIN)/python -m bench.throughput --live --events 12000 --features 1000 --batch 40 \
		--out bench/results/throughput_live_1000features.json
	$(BIN)/python -m bench.throughput --workers 2 --partitions 4 \
		--out bench/results/throughput_2workers.json
	$(BIN)/python -m bench.processor_share --events 300000 --batch 500
	$(BIN)/python -m bench.eager_delivery
	$(BIN)/python -m bench.loop_lag
	$(BIN)/python -m bench.detection
	$(BIN)/python -m bench.performance
	$(BIN)/python -m bench.retrain_e2e
	$(BIN)/python -m bench.api_load
	$(BIN)/python -m bench.alert_latency
	$(BIN)/python -m bench.report_speed

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
