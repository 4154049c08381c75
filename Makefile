# bulkproc: `make run` starts the simulator and the service; `make test` runs the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000
SIMULATOR_PORT ?= 9000

.PHONY: install run test bench clean

install: $(STAMP)

# Reinstall whenever a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# The simulator stands in for the upstream unless HOSPITAL_API_BASE_URL names a real one.
# scripts/run.py refuses taken ports and bad variables with one line, and turns Ctrl-C into one
# signal per server, so everything stops within 5 s.
run: $(STAMP)
	@PORT=$(PORT) SIMULATOR_PORT=$(SIMULATOR_PORT) $(PY) scripts/run.py

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/bulk_latency.py
	$(PY) bench/status_latency.py
	$(PY) bench/rate_limited.py

clean:
	rm -rf $(VENV) instance .pytest_cache
