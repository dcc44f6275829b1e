# Two commands on a fresh machine: `make train` and `make test` (each creates .venv on first use).
#   make train ARGS="--recipe=full --strategy=mirrored"     extra trainer flags
#   make test TF=2.20                                       the suite against TF 2.20 (the last tensorflow-tpu)
#   make test TEST_WORKERS=0 PYTEST_ARGS="-k resume -x"     one process, a subset
PYTHON ?= $(shell command -v python3.11 || command -v python3)
TF ?= 2.21
VENV := $(if $(filter 2.21,$(TF)),.venv,.venv-tf$(TF))
# The shared datasets beside the checkout, when present; else $DATA_DIR / ~/.keras/datasets / download.
DATA_DIR ?= $(if $(wildcard ../shared/datasets/mnist.npz),$(abspath ../shared/datasets),)
export DATA_DIR
export TF_CPP_MIN_LOG_LEVEL ?= 2
# A GPU box (nvidia-smi runs) gets TensorFlow with its CUDA libraries: plain tensorflow brings none.
TF_EXTRA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo '[and-cuda]')
# The stamp names the flavour installed, so a venv made on a CPU node is reinstalled on a GPU node.
STAMP := $(VENV)/.installed-tf$(TF)-$(if $(TF_EXTRA),cuda,cpu)
PYTEST_ARGS ?=
# Test processes (pytest-xdist): much of a test is one-core work (tracing, TensorFlow imports in the
# subprocesses of CLI tests) or waiting on other processes (a killed worker's health check), so
# 3 workers on 2 cores keep both busy. 0 runs in this process.
TEST_WORKERS ?= 3

.PHONY: setup train test test-fast lint mnist benchmarks clean
setup: $(STAMP)

$(STAMP): requirements.txt
	rm -f $(VENV)/.installed*
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	sed -e 's/^tensorflow==.*/tensorflow$(TF_EXTRA)==$(TF).0/' -e 's/^tensorboard==.*/tensorboard==$(TF).0/' \
	    requirements.txt > $(VENV)/requirements.txt
	$(VENV)/bin/python -m pip install -q -r $(VENV)/requirements.txt
	touch $@

train: setup
	$(VENV)/bin/python -m trainers.cifar $(ARGS)

mnist: setup
	$(VENV)/bin/python -m trainers.mnist $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The unit tests only (no CLI subprocesses, no training beyond a few steps): the edit-and-run loop.
FAST_TESTS := -m "not slow and not cli" -k "not efficientnet"
test-fast: setup
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(FAST_TESTS) $(PYTEST_ARGS)

# ruff (pinned in requirements.txt, configured in pyproject.toml): lint, and the formatter's check.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Every report under benchmarks/reports/, from the current code, stamped with the commit (on an idle
# machine: the figures are timings). One report: make benchmarks BENCH_ARGS="--only=soak".
benchmarks: setup
	$(VENV)/bin/python -m benchmarks.regenerate $(BENCH_ARGS)

clean:
	rm -rf .venv .venv-tf* runs
