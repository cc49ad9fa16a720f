# pretrainctl — every target creates the virtual environment first if it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export HF_DATASETS_OFFLINE := 1
export HF_HUB_OFFLINE := 1

.PHONY: help install train test test-slow test-gpu lint bench bench-kernels clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: 2.13.0 resolves to the local CPU wheel here and to CUDA on GPU boxes.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install pretrainctl with dev extras

train: $(STAMP)  ## train the default model on the embedded stdlib corpus
	$(VENV)/bin/pretrainctl train $(ARGS)

test: $(STAMP)  ## the CPU test suite (what CI runs)
	$(PY) -m pytest -m "not slow and not gpu" -q

test-slow: $(STAMP)  ## long training tests (minutes each)
	$(PY) -m pytest -m "slow and not gpu" -q

test-gpu: $(STAMP)  ## GPU tests (needs an NVIDIA GPU); kernels in their own process (no interpreter)
	$(PY) -m pytest -m gpu -q tests/kernels
	$(PY) -m pytest -m gpu -q --ignore=tests/kernels || [ $$? -eq 5 ]  # 5: no GPU tests there yet

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check pretrainctl kernels tests

bench: $(STAMP)  ## CPU benchmarks: framework overhead; MinHash dedup docs/s, MB/s, peak RSS at 1x/10x; shards vs raw
	$(PY) -m bench.overhead
	$(PY) -m pretrainctl.data.curation.bench
	$(PY) -m bench.data_throughput

bench-kernels: $(STAMP)  ## GPU kernel benchmarks against in-run references
	$(PY) -m pretrainctl_kernels.bench

clean:
	rm -rf runs outputs .pytest_cache
