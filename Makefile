# `make quickstart`: virtualenv + install + the whole pipeline on the offline default.
# `make test`: virtualenv + install + lint (ruff), types (mypy), the import rules
# (import-linter, contracts in pyproject.toml) and the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart test test-slow test-all install clean

$(BIN)/pretrain: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, from the CPU wheel; the project's range is satisfied by it afterwards
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/pretrain

quickstart: install
	$(BIN)/pretrain run --config configs/quickstart.toml

# the default tier (about 15 minutes on 2 cores); the tests marked slow deepen what it checks
# (4-process layouts, other variants, the longer benches and fuzzing) and run in `test-slow`
test: install
	$(BIN)/ruff check src tests bench tools
	$(BIN)/mypy src
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# both tiers, as CI runs them
test-all: test test-slow

clean:
	rm -rf $(VENV) runs .pytest_cache
