"""The job store failing: 503 naming the batch, no row left in_progress, and recovery without a restart.

The faults are SQLite's own errors, raised on the app's engine at the driver seam while a test
wants them (as root, the tests cannot make a directory read-only, and filling a disk is not
something a test should do to its machine):
- "read-only": each connection handed out meanwhile gets `PRAGMA query_only` and keeps it after
  the fault ends, as a connection opened while the SQLite file was read-only stays read-only
  once it is writable again: its writes fail with SQLITE_READONLY until it is dropped.
- "full": every write fails with SQLITE_FULL ("database or disk is full").
- "down": every statement fails with SQLITE_CANTOPEN, as when the file's directory is gone.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import event

from bulkproc.files.rules import parse
from bulkproc.logs import BatchIdFilter
from bulkproc.states import RowStatus
from tests.support import hospitals_csv, wait_until

WRITES = ("INSERT", "UPDATE", "DELETE")
ERRORS = {"full": ("SQLITE_FULL", "database or disk is full"),
          "down": ("SQLITE_CANTOPEN", "unable to open database file")}


class StoreFaults:
    """Switches the faults above on and off for one engine."""

    def __init__(self, engine) -> None:
        self.kind: str | None = None
        self.when: Callable[[], bool] = lambda: True
        event.listen(engine, "checkout", self._on_checkout)
        event.listen(engine, "before_cursor_execute", self._before_execute)

    def start(self, kind: str, when: Callable[[], bool] = lambda: True) -> None:
        self.kind, self.when = kind, when

    def stop(self) -> None:
        self.kind = None

    def _active(self, kind: str) -> bool:
        return self.kind == kind and self.when()

    def _on_checkout(self, dbapi_connection, _record, _proxy) -> None:
        if self._active("read-only"):
            dbapi_connection.execute("PRAGMA query_only = ON")

    def _before_execute(self, _conn, _cursor, statement: str, *_args) -> None:
        writes = statement.lstrip().upper().startswith(WRITES)
        if self._active("down") or (writes and self._active("full")):
            name, message = ERRORS[self.kind]
            error = sqlite3.OperationalError(message)
            error.sqlite_errorname = name
            raise error


@pytest.fixture
def faulty(make_app, serve_app):
    """(app, served app, faults) on a SQLite store; 20 rows in flight at once."""
    app = make_app(CONCURRENCY=20)
    return app, serve_app(app), StoreFaults(app.extensions["bulkproc"].store.engine)


@pytest.fixture
def batch_logs(caplog):
    caplog.handler.addFilter(BatchIdFilter())
    caplog.set_level(logging.INFO, logger="bulkproc")
    return caplog


def assert_503(response, batch_id: str | None = None) -> str:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    body = response.json()
    assert set(body) == {"error", "details"} and "job store is unavailable" in body["error"]
    if batch_id is not None:
        assert batch_id in body["error"]
    return body["error"]


def created_upstream(upstream) -> bool:
    return len(upstream.sim.hospitals()) >= 1


@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_a_store_failure_mid_batch_is_a_503_naming_the_batch_then_it_closes_and_resume_finishes_it(
        faulty, upstream, batch_logs, kind):
    app, service, faults = faulty
    # The store fails once the first row exists upstream: every write after fails, so a row whose
    # attempt could not be written first is never sent; the directory has those sent, the store none.
    faults.start(kind, when=lambda: created_upstream(upstream))

    response = service.upload(hospitals_csv(20))

    batch_id = app.extensions["bulkproc"].store.recent(1)[0].id
    assert_503(response, batch_id)
    assert 1 <= len(upstream.sim.hospitals(batch_id)) <= 20
    logged = [r for r in batch_logs.records if "job store" in r.getMessage() and r.levelno >= logging.ERROR]
    assert logged and {r.batch_id for r in logged} == {batch_id}

    faults.stop()
    closed = wait_until(lambda: _closed(service.get(f"/hospitals/bulk/{batch_id}").json()), timeout=20,
                        what="the batch closed once the store answers")
    assert closed["status"] == "failed"
    assert {r["status"] for r in closed["hospitals"]} == {RowStatus.FAILED}
    assert "resume" in closed["hospitals"][0]["error"]

    # A pooled connection opened while the file was read-only is found out by its first write: that
    # request answers 503 with Retry-After once and the pool is emptied; retrying as told works.
    resumed = wait_until(lambda: (r := service.post(f"/hospitals/bulk/{batch_id}/resume")).status_code != 503 and r,
                         timeout=10, what="the resume to be accepted once the store answers")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "completed"
    assert len(upstream.sim.hospitals(batch_id)) == 20  # each hospital once: none posted again
    assert upstream.sim.stats["create_requests"] == 20
    for _ in range(3):  # the pool holds no broken connection: later uploads just work
        assert service.upload(hospitals_csv(2, prefix="Later")).json()["status"] == "completed"


def _closed(document: dict) -> dict | None:
    running = document["status"] in ("queued", "processing", "activating")
    in_flight = any(r["status"] == RowStatus.IN_PROGRESS for r in document["hospitals"])
    return None if running or in_flight else document


def test_read_only_connections_are_dropped_so_uploads_succeed_again_without_a_restart(faulty, upstream):
    app, service, faults = faulty
    assert service.upload(hospitals_csv(1)).status_code == 200
    faults.start("read-only")
    for _ in range(3):
        assert_503(service.upload(hospitals_csv(1, prefix="During")))
    faults.stop()
    wait_until(lambda: service.upload(hospitals_csv(1, prefix="After")).status_code == 200, timeout=20,
               what="an upload to succeed once the store is writable")
    statuses = [service.upload(hospitals_csv(1, prefix=f"Then {n}")).status_code for n in range(10)]
    assert statuses == [200] * 10


def test_reads_answer_503_naming_the_batch_while_the_store_is_down_and_health_stays_ok(faulty, upstream):
    app, service, faults = faulty
    batch_id = service.upload(hospitals_csv(1)).json()["batch_id"]
    faults.start("down")
    assert_503(service.get(f"/hospitals/bulk/{batch_id}"), batch_id)
    assert_503(service.get("/hospitals/bulk"))
    assert_503(service.post(f"/hospitals/bulk/{batch_id}/resume"), batch_id)
    assert service.get("/healthz").status_code == 200  # liveness: the process is fine
    faults.stop()
    assert service.get(f"/hospitals/bulk/{batch_id}").json()["status"] == "completed"


@pytest.mark.parametrize("kind", ["batch", "import"])
def test_an_event_stream_ends_cleanly_when_the_store_fails(make_app, serve_app, batch_logs, kind):
    caplog = batch_logs
    app = make_app(SSE_HEARTBEAT_SECONDS=0.05)
    service, faults = serve_app(app), StoreFaults(app.extensions["bulkproc"].store.engine)
    # Work another live process holds: its stream stays open.
    store, rows = app.extensions["bulkproc"].store, parse(hospitals_csv(1).encode(), max_rows=20)
    if kind == "batch":
        work_id, _ = store.insert_batch(str(uuid.uuid4()), rows, owner="elsewhere", lease_until=time.time() + 3600)
        path = f"/hospitals/bulk/{work_id}/events"
    else:
        work_id, _ = store.insert_import(str(uuid.uuid4()), [(str(uuid.uuid4()), rows)], owner="elsewhere",
                                         lease_until=time.time() + 3600)
        path = f"/hospitals/imports/{work_id}/events"
    with service.get(path, stream=True, timeout=10) as stream:
        lines = stream.iter_lines(decode_unicode=True)
        assert next(line for line in lines if line.startswith("data: "))
        faults.start("down")
        # It ends: a hung stream would raise ReadTimeout, one broken off by the server ChunkedEncodingError.
        remaining = list(lines)
    assert not any(line.startswith("data: ") for line in remaining)
    wait_until(lambda: app.extensions["bulkproc.streams"].open == 0, timeout=10, what="the stream's slot")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []  # no traceback
    ended = [r for r in caplog.records if "event stream ended" in r.getMessage()]
    assert ended and all(getattr(r, f"{kind}_id") == work_id for r in ended)  # logged as its own kind
