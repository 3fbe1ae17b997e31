# Two entry points (see README): `make experiment` and `make test`. Both create .venv and install the workbench and its
# test tools first (no lightly: `make peer` adds the benchmark peer).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache
export PYTHONHASHSEED := 0

.PHONY: install peer experiment test test-slow browser

$(VENV)/.installed: settings.ini setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The lightly peer of `ssl-workbench bench peer` (lightly and, with it, pytorch_lightning, hydra, omegaconf, torchmetrics)
peer: install
	$(BIN)/python -m pip install -e ".[bench]"

experiment: install
	mkdir -p runs
	$(BIN)/papermill nbs/train_excb.ipynb runs/train_excb.out.ipynb -k python3 $(ARGS)

# Chromium for tests/test_browser.py (Debian's package; Playwright drives it, no `playwright install`).
# Without root or apt the browser test skips with its reason.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	        echo "chromium could not be installed: tests/test_browser.py will skip"; \
	    else echo "no chromium and no root apt-get: tests/test_browser.py will skip"; fi; }

test: install browser
	$(BIN)/nbdev_test --n_workers 2
	$(BIN)/python -m pytest -q --durations=15 -m "not slow" tests

# The learning checks on real images (tests/test_learning.py, about 25 minutes on 2 cores); CI runs them after `make test`
test-slow: install
	$(BIN)/python -m pytest -q --durations=10 -m slow tests
