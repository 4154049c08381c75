"""What answering a document costs in-process: the status read, the listing, an import's document.

status_latency.py measures reads over HTTP while batches run, on a shared 2-CPU machine whose
noise (several ms at p99) hides a cost of tens of microseconds. This one takes the network, the
client and the other processes away: one in-process app (SQLite in a temporary directory, the
upstream never called), a 20-row batch and a 1,000-row import written straight to the store,
and Flask's test client reading each document many times. Each read is reported against
/healthz, the fixed cost of a request through the same app, as a ratio.

Run: PYTHONPATH=$PWD .venv/bin/python bench/document_cost.py
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

from _harness import header, hospitals_csv, line, median

from bulkproc import create_app
from bulkproc.files import rules
from bulkproc.store import Run

READS = 400
ROUNDS = 5


def timed(client, path: str) -> float:
    """Median over ROUNDS of the mean microseconds of READS reads of `path` (each must answer 200)."""
    means = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(READS):
            response = client.get(path)
            assert response.status_code == 200, response.get_data()[:300]
        means.append((time.perf_counter() - started) / READS * 1e6)
    return median(means)


def batch_of(store, rows: int, finish: bool = True) -> str:
    """A batch of `rows` rows in the store, every row created (and the batch completed)."""
    batch_id, _ = store.insert_batch(str(uuid.uuid4()), rules.parse(hospitals_csv(rows, uuid.uuid4().hex[:6]),
                                                                    max_rows=rows),
                                     owner="bench", token="t", lease_until=0.0)
    run = Run(batch_id, "t")
    for n in range(1, rows + 1):
        store.record_created(run, n, 1000 + n)
    if finish:
        store.set_status(run, "completed")
    return batch_id


def main() -> int:
    header("document_cost")
    with tempfile.TemporaryDirectory(prefix="bulkproc-documents-") as tmp:
        app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{Path(tmp) / 'jobs.sqlite3'}",
                          "HOSPITAL_API_BASE_URL": "http://127.0.0.1:9"})
        store = app.extensions["bulkproc"].store
        batch_id = batch_of(store, 20)
        for _ in range(19):
            batch_of(store, 20)
        imports = app.extensions["bulkproc.imports"]
        import_id, _ = imports.start(rules.parse(hospitals_csv(1000, "Imported"), max_rows=1000))
        client = app.test_client()
        try:
            base = timed(client, "/healthz")
            line("/healthz (the fixed cost of a request)", f"{base:.0f} us")
            for label, path in (("GET a 20-row batch", f"/hospitals/bulk/{batch_id}"),
                                ("GET the listing of 20 batches", "/hospitals/bulk?limit=20"),
                                ("GET a 1,000-row import (50 batches)", f"/hospitals/imports/{import_id}")):
                cost = timed(client, path)
                line(label, f"{cost:.0f} us = {cost / base:.2f}x /healthz")
        finally:
            app.extensions["bulkproc.runtime"].close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
