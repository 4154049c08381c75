# bulkproc: `make run` starts the simulator and the service; `make test` runs the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000
SIMULATOR_PORT ?= 9000

.PHONY: install run test chaos fuzz bench clean

install: $(STAMP)

# Reinstall whenever a requirements file or the package's description changes. The package itself
# goes in editable, without resolving dependencies again (the pins above are the ones), so that
# .venv/bin/bulkproc runs this checkout's code.
$(STAMP): requirements.txt requirements-cli.txt requirements-dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The simulator stands in for the upstream unless HOSPITAL_API_BASE_URL names a real one.
# scripts/run.py refuses taken ports and bad variables with one line, and turns Ctrl-C into one
# signal per server, so everything stops within 5 s.
run: $(STAMP)
	@PORT=$(PORT) SIMULATOR_PORT=$(SIMULATOR_PORT) $(PY) scripts/run.py

# The suite in TEST_WORKERS processes (pytest-xdist; tests sharing a module's fixture stay on one),
# then the tests marked serial (wall-clock bounds, docker builds) alone, with nothing else running.
# Both parts run even if the first fails; Ctrl-C (pytest's exit status 2) stops both.
TEST_WORKERS ?= 4
test: $(STAMP)
	@status=0; \
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial" || status=$$?; \
	[ $$status -eq 2 ] || $(PY) -m pytest -p no:xdist -m serial || status=$$?; \
	exit $$status

# The chaos tests with many fresh examples (make test runs a small derandomized budget):
# upstream faults and kills of one process (test_chaos.py), and two instances on one store with
# pauses, kills, store errors and wrong answers (test_ownership_chaos.py, several seconds an example).
# CHAOS_SHRINK=0 reports a failure as found, without shrinking it.
CHAOS_EXAMPLES ?= 200
chaos: $(STAMP)
	HYPOTHESIS_PROFILE=long CHAOS_EXAMPLES=$(CHAOS_EXAMPLES) $(PY) -m pytest -m chaos -p no:cacheprovider \
	  --hypothesis-show-statistics tests/test_chaos.py tests/test_ownership_chaos.py

# A long schemathesis run against the live service: FUZZ_EXAMPLES generated requests per
# operation (make test sends a few); no per-test timeout, since it is one long test.
FUZZ_EXAMPLES ?= 1000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_api_fuzz.py -p no:cacheprovider -o timeout=0
	HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/test_csv_properties.py tests/test_reading_properties.py \
	  -p no:cacheprovider -o timeout=0

bench: $(STAMP)
	$(PY) bench/bulk_latency.py
	$(PY) bench/status_latency.py
	$(PY) bench/document_cost.py
	$(PY) bench/rate_limited.py
	$(PY) bench/slow_upstream.py
	$(PY) bench/import_pacing.py
	$(PY) bench/import_scale.py
	$(PY) bench/validator_cost.py
	$(PY) bench/directory_match.py
	$(PY) bench/webhook_latency.py
	$(PY) bench/cli_start.py

clean:
	rm -rf $(VENV) instance .pytest_cache
