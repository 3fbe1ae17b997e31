# Two entry points (see README): `make experiment` and `make test`. Both create .venv and install everything first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache
export PYTHONHASHSEED := 0

.PHONY: install experiment test

$(VENV)/.installed: settings.ini setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

experiment: install
	mkdir -p runs
	$(BIN)/papermill nbs/train_excb.ipynb runs/train_excb.out.ipynb -k python3 $(ARGS)

test: install
	$(BIN)/nbdev_test --n_workers 2
	$(BIN)/python -m pytest -q tests
