# Developer shortcuts; each target sets up .venv first (see tools/bootstrap.py).
PY := python3 tools/bootstrap.py
VENV := .venv/bin

.PHONY: demo test test-all lint bench setup docs

setup:
	$(PY) setup

demo:
	$(PY) demo

test:
	$(PY) test

test-all:
	$(PY) test --slow

lint: setup
	$(VENV)/python -m pip install -q ruff mypy
	$(VENV)/ruff check pyro_causalgen tests benchmarks
	$(VENV)/ruff format --check pyro_causalgen tests benchmarks

bench: setup
	$(VENV)/python benchmarks/bench_foundation.py

docs: setup
	$(VENV)/python -m pip install -q -e ".[docs]"
	$(VENV)/python -m sphinx -b html -W --keep-going docs docs/_build/html
