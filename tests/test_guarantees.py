"""The guarantees under faults (issue 7): one hospital per row however slow the upstream, never-sent
rows known absent, outages waited out, time kept, and a stop that says why."""

from __future__ import annotations

import pytest
import requests

from bulkproc.simulator import create_simulator, serve
from tests.support import free_port, hospitals_csv, metric, wait_until


def names(sim, batch_id: str) -> list[str]:
    return sorted(h["name"] for h in sim.hospitals(batch_id))


def test_creations_slower_than_the_read_timeout_make_one_hospital_each(make_app, serve_app, upstream):
    # Each creation takes 1.5 read timeouts: every POST times out, and the hospital lands after.
    upstream.sim.delay = 1.5
    service = serve_app(make_app(READ_TIMEOUT=1.0))

    document = service.upload(hospitals_csv(10)).json()

    assert document["status"] == "completed", document
    assert names(upstream.sim, document["batch_id"]) == sorted(f"Hospital {n}" for n in range(1, 11))
    assert upstream.sim.stats["create_requests"] == 10  # none posted again
    assert {r["hospital_id"] for r in document["hospitals"]} == {h["id"] for h in upstream.sim.hospitals()}
    # Rows failing together share their reads: at most two for the timeouts, two once they could
    # have landed (a tick may split the group), and the two checks around activation.
    assert upstream.sim.stats["batch_reads"] <= 6


def test_a_late_duplicate_is_deleted_before_activation_and_counted(make_app, serve_app, upstream, caplog):
    service = serve_app(make_app())
    upstream.sim.add_fault("create", "reject_422", after=1)
    first = service.upload(hospitals_csv(2)).json()
    assert first["status"] == "partially_failed"
    created = next(r for r in first["hospitals"] if r["status"] == "created")
    n = created["row"]
    # The created row's twin lands late, as a retried creation slower than our wait for it would.
    twin = requests.post(f"{upstream.url}/hospitals/", timeout=5, json={
        "name": f"Hospital {n}", "address": f"{n} Main St, Springfield", "phone": f"555-010-{n:04d}",
        "creation_batch_id": first["batch_id"]}).json()
    removed_before = metric(service.get("/metrics").text, "bulkproc_duplicates_removed_total")

    with caplog.at_level("INFO", logger="bulkproc"):
        document = service.post(f"/hospitals/bulk/{first['batch_id']}/resume").json()

    assert document["status"] == "completed", document
    assert names(upstream.sim, first["batch_id"]) == ["Hospital 1", "Hospital 2"]
    assert twin["id"] not in {h["id"] for h in upstream.sim.hospitals()}
    assert document["hospitals"][n - 1]["hospital_id"] == created["hospital_id"]
    assert metric(service.get("/metrics").text, "bulkproc_duplicates_removed_total") == removed_before + 1
    assert "duplicates_removed=1" in caplog.text


def test_rows_whose_attempts_never_reached_the_directory_are_resumed_without_waiting(make_app, serve_app,
                                                                                   upstream, caplog):
    service = serve_app(make_app(MAX_ATTEMPTS=2, READ_TIMEOUT=5.0, OUTAGE_GRACE=0))  # a resume would wait 15 s
    upstream.refuse_connections(60, after_requests=1)  # the wake-up call is answered, then no connection
    failed = service.upload(hospitals_csv(1)).json()
    assert failed["status"] == "failed" and "could not connect" in failed["hospitals"][0]["error"]
    upstream.accept()

    with caplog.at_level("INFO", logger="bulkproc"):
        document = service.post(f"/hospitals/bulk/{failed['batch_id']}/resume").json()

    assert document["status"] == "completed"
    assert "may still be in flight" not in caplog.text
    assert names(upstream.sim, failed["batch_id"]) == ["Hospital 1"]


def test_429s_never_fail_a_row_however_many_come(make_app, serve_app, upstream):
    service = serve_app(make_app(MAX_ATTEMPTS=2))
    upstream.sim.add_fault("create", "rate_limit", times=4)  # twice the attempts: each one never processed

    document = service.upload(hospitals_csv(1)).json()

    assert document["status"] == "completed", document
    assert upstream.sim.stats["rate_limited"] == 4
    assert names(upstream.sim, document["batch_id"]) == ["Hospital 1"]


@pytest.mark.serial  # a lease of a second or less renewed on time: a wall-clock bound
def test_an_outage_is_waited_out_and_the_batch_says_so_meanwhile(make_app, serve_app):
    port = free_port()
    app = make_app(HOSPITAL_API_BASE_URL=f"http://127.0.0.1:{port}", OUTAGE_GRACE=30.0, LEASE_SECONDS=0.6)
    service = serve_app(app)
    batch_id = service.upload(hospitals_csv(2), **{"async": "1"}).json()["batch_id"]

    waiting = wait_until(lambda: (service.get(f"/hospitals/bulk/{batch_id}").json()["error"] or "")
                         .startswith("Waiting for the directory"), timeout=10, what="the batch to say it waits")
    assert waiting
    with serve(create_simulator(delay=0.05, create_limit=0), port=port) as back:
        app.extensions["bulkproc"].wait_until_final(batch_id)
        document = service.get(f"/hospitals/bulk/{batch_id}").json()

        assert document["status"] == "completed", document
        assert document["error"] is None
        assert names(back.sim, batch_id) == ["Hospital 1", "Hospital 2"]


def test_an_outage_longer_than_the_grace_fails_the_rows_and_says_why(make_app, serve_app):
    service = serve_app(make_app(HOSPITAL_API_BASE_URL=f"http://127.0.0.1:{free_port()}", OUTAGE_GRACE=0.3))

    document = service.upload(hospitals_csv(2)).json()

    assert document["status"] == "failed"
    assert "stayed unreachable" in document["error"]
    assert all("could not connect" in r["error"] for r in document["hospitals"])


def test_a_graceful_stop_says_why_rows_are_pending(make_app, serve_app, upstream):
    app = make_app(CREATE_RATE=(2, 60.0))
    service = serve_app(app)
    jobs = app.extensions["bulkproc"]
    batch_id = service.upload(hospitals_csv(4), **{"async": "1"}).json()["batch_id"]
    wait_until(lambda: len(upstream.sim.hospitals(batch_id)) == 2, timeout=10, what="the first window's rows")

    jobs.close()  # what gunicorn's SIGTERM does: the other two wait for a window a minute away

    document = service.get(f"/hospitals/bulk/{batch_id}").json()
    assert document["status"] == "partially_failed"
    pending = [r for r in document["hospitals"] if r["status"] == "pending"]
    assert len(pending) == 2
    assert all("service stopped" in r["error"] and "resume" in r["error"] for r in pending)
    assert "service stopped" in document["error"] and "resume" in document["error"]
