# Two commands on a fresh clone: `make demo` and `make test`. Each builds .venv by itself.
# PYTHON=3.12 (or a path) picks the interpreter; VENV picks the environment directory.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.naq-installed

.PHONY: demo test browser faults faults-quick lint typecheck check bench bench-peers container clean

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

# The dashboard in Debian's chromium (scripts/install-system-deps installs it); also
# part of `make test`. Screenshots of each page land in tests/artifacts/.
browser: $(STAMP)
	$(PY) -m pytest -q -m browser tests/e2e/test_dashboard_browser.py

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

# The benchmarks (about 8 minutes on 2 cores): each prints its tables and writes its
# figures as JSON into BENCH_OUT; bench/plot.py then draws the charts and a summary
# beside them. The bench extra (matplotlib) is installed here only.
BENCH_OUT ?= bench/results
BENCH_STAMP := $(VENV)/.naq-bench-installed

$(BENCH_STAMP): $(STAMP)
	@echo "installing the bench extra into $(VENV)"
	@$(PY) -m pip install --quiet -e ".[dev,bench]" > $(VENV)/pip-bench.log 2>&1 || { cat $(VENV)/pip-bench.log; exit 1; }
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m pytest -q -m bench tests/bench
	@mkdir -p $(BENCH_OUT)
	$(PY) bench/throughput.py --runs 3 --json $(BENCH_OUT)/throughput.json
	$(PY) bench/executors.py --runs 3 --json $(BENCH_OUT)/executors.json
	$(PY) bench/latency.py --runs 3 --json $(BENCH_OUT)/latency.json
	$(PY) bench/plot.py $(BENCH_OUT)

# The image and the compose file, built and run with podman (root; about 2 minutes
# once the base image exists, plus about a minute to make it the first time):
# scripts/container-setup installs podman, runc and debootstrap and makes the local
# base image; the container extra brings podman-compose.
CONTAINER_STAMP := $(VENV)/.naq-container-installed

$(CONTAINER_STAMP): $(STAMP)
	@echo "installing the container extra into $(VENV)"
	@$(PY) -m pip install --quiet -e ".[dev,container]" > $(VENV)/pip-container.log 2>&1 || { cat $(VENV)/pip-container.log; exit 1; }
	@touch $(CONTAINER_STAMP)

container: $(CONTAINER_STAMP)
	scripts/container-setup
	$(PY) -m pytest -q -m container tests/container --timeout 900

# naq's process executor against huey's 2-process consumer on Redis, in one
# run (about a minute). Optional: it installs the peers extra (huey, redis) and needs a
# redis-server binary (Debian: apt-get install redis-server); not part of `make bench`.
PEERS_STAMP := $(VENV)/.naq-peers-installed

$(PEERS_STAMP): $(STAMP)
	@echo "installing the peers extra into $(VENV)"
	@$(PY) -m pip install --quiet -e ".[dev,peers]" > $(VENV)/pip-peers.log 2>&1 || { cat $(VENV)/pip-peers.log; exit 1; }
	@touch $(PEERS_STAMP)

bench-peers: $(PEERS_STAMP)
	@command -v redis-server > /dev/null || { echo "bench-peers needs redis-server (Debian: apt-get install redis-server)"; exit 1; }
	$(PY) -m pytest -q -m bench tests/bench/test_peers.py
	@mkdir -p $(BENCH_OUT)
	$(PY) bench/peers.py --runs 3 --json $(BENCH_OUT)/peers.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache
