# Two commands on a fresh clone: `make demo` and `make test`. Each builds .venv by itself.
# PYTHON=3.12 (or a path) picks the interpreter; VENV picks the environment directory.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.naq-installed

.PHONY: demo test faults faults-quick lint typecheck check bench clean

$(STAMP): pyproject.toml scripts/find-python
	@python=$$(scripts/find-python) || exit 1; \
	if [ ! -x "$(PY)" ] || ! "$(PY)" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'; then \
		echo "creating $(VENV) with $$python"; rm -rf "$(VENV)"; "$$python" -m venv "$(VENV)" || exit 1; \
	fi
	@echo "installing naq and its dev tools into $(VENV)"
	@$(PY) -m pip install --quiet -e ".[dev]" > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

# The fault suite: real faults injected into real processes; prints and writes
# faults-report.md. faults-quick is its part that CI runs.
faults: $(STAMP)
	$(PY) -m pytest -q -m faults tests/faults --timeout 600

faults-quick: $(STAMP)
	$(PY) -m pytest -q -m "faults and quick" tests/faults --timeout 300

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

bench: $(STAMP)
	$(PY) bench/throughput.py --runs 3

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache
