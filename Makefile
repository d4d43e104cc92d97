# escrowguard developer entry points. Two matter (the README opens with them):
#   make demo   the main job end to end, on embedded servers (no Docker needed)
#   make test   every check CI runs: lint, format, types, the whole test suite
# Both create .venv when it is missing and (re)install the package only when pyproject.toml
# changed (a stamp file records the last install).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.escrowguard-installed
# benchmarks/ may not exist yet in a fresh clone
CODE := $(wildcard escrowguard tests benchmarks)

.PHONY: help install demo test lint clean

help:
	@echo "make demo    run escrowguard end to end on embedded servers"
	@echo "make test    ruff, ruff format --check, mypy, pytest (unit + integration + faults)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/escrowguard demo

lint: $(STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy

# pytest exits 5 when it collected no tests: that is a failure here, like any non-zero code.
test: lint
	@$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache out
