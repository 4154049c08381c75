# bulkproc: `make run` starts the simulator and the service; `make test` runs the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000
SIMULATOR_PORT ?= 9000

.PHONY: install run test fuzz bench clean

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

# A long schemathesis run against the live service: FUZZ_EXAMPLES generated requests per
# operation (make test sends a few); no per-test timeout, since it is one long test.
FUZZ_EXAMPLES ?= 1000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_api_fuzz.py -p no:cacheprovider -o timeout=0

bench: $(STAMP)
	$(PY) bench/bulk_latency.py
	$(PY) bench/status_latency.py
	$(PY) bench/rate_limited.py

clean:
	rm -rf $(VENV) instance .pytest_cache
