# bulkproc: `make run` starts the simulator and the service; `make test` runs the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000
SIMULATOR_PORT ?= 9000

.PHONY: install run test chaos fuzz bench clean

install: $(STAMP)

# Reinstall whenever a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# The simulator stands in for the upstream unless HOSPITAL_API_BASE_URL names a real one.
# Ctrl-C reaches both processes (same process group); the trap also stops the simulator
# when gunicorn exits by itself.
run: $(STAMP)
	@set -e; \
	if [ -z "$$HOSPITAL_API_BASE_URL" ]; then \
	  $(PY) -m bulkproc.simulator --host 127.0.0.1 --port $(SIMULATOR_PORT) & sim=$$!; \
	  trap 'kill $$sim 2>/dev/null || true' EXIT; \
	  export HOSPITAL_API_BASE_URL=http://127.0.0.1:$(SIMULATOR_PORT); \
	fi; \
	$(VENV)/bin/gunicorn --config gunicorn.conf.py --bind 127.0.0.1:$(PORT) wsgi:app

test: $(STAMP)
	$(PY) -m pytest

# The chaos test with many fresh examples (make test runs a small derandomized budget).
CHAOS_EXAMPLES ?= 200
chaos: $(STAMP)
	HYPOTHESIS_PROFILE=long CHAOS_EXAMPLES=$(CHAOS_EXAMPLES) $(PY) -m pytest -m chaos -p no:cacheprovider \
	  --hypothesis-show-statistics tests/test_chaos.py

# A long schemathesis run against the live service: FUZZ_EXAMPLES generated requests per
# operation (make test sends a few); no per-test timeout, since it is one long test.
FUZZ_EXAMPLES ?= 1000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_api_fuzz.py -p no:cacheprovider -o timeout=0
	HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/test_csv_properties.py -p no:cacheprovider -o timeout=0

bench: $(STAMP)
	$(PY) bench/bulk_latency.py
	$(PY) bench/status_latency.py
	$(PY) bench/rate_limited.py
	$(PY) bench/slow_upstream.py
	$(PY) bench/import_pacing.py

clean:
	rm -rf $(VENV) instance .pytest_cache
