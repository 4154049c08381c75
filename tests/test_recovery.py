"""Resume, activation retries, cold starts and deadlines, in-process against the simulator."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bulkproc.files.rules import parse
from bulkproc.simulator import create_simulator, serve
from bulkproc.store import Run
from tests.support import hospitals_csv


def create_upstream(upstream, batch_id: str, row) -> dict:
    """What a process that died mid-batch left behind: a hospital created, its answer never recorded."""
    body = {"name": row.name, "address": row.address, "phone": row.phone, "creation_batch_id": batch_id}
    return requests.post(f"{upstream.url}/hospitals/", json=body, timeout=5).json()


def test_resume_of_an_interrupted_batch_creates_only_the_missing_rows(app, service, upstream):
    jobs = app.extensions["bulkproc"]
    rows = parse(hospitals_csv(6).encode())
    # A dead process's batch: its lease already lapsed, rows 1-3 created upstream, row 2 recorded.
    batch_id, _ = jobs.store.insert_batch("9b2f6f3a-1c4d-4e5f-8a9b-0c1d2e3f4a5b", rows, owner="dead:1", token="t",
                                          lease_until=time.time() - 1)
    made = [create_upstream(upstream, batch_id, r) for r in rows[:3]]
    jobs.store.mark_rows_in_flight(Run(batch_id, "t"), [1, 3], time.time())
    jobs.store.record_created(Run(batch_id, "t"), 2, made[1]["id"])
    assert service.get(f"/hospitals/bulk/{batch_id}").json()["status"] == "interrupted"
    creations_before = upstream.sim.stats["create_requests"]

    document = service.post(f"/hospitals/bulk/{batch_id}/resume").json()

    assert document["status"] == "completed"
    assert upstream.sim.stats["create_requests"] - creations_before == 3
    stored = upstream.sim.hospitals(batch_id)
    assert sorted(h["name"] for h in stored) == [r.name for r in rows]
    assert [r["hospital_id"] for r in document["hospitals"][:3]] == [h["id"] for h in made]
    assert all(h["active"] for h in stored)


def test_a_batch_whose_activation_failed_is_resumed_by_activating_only(app, service, upstream):
    attempts = app.config["MAX_ATTEMPTS"]
    upstream.sim.add_fault("activate", "error_500", times=attempts)

    first = service.upload(hospitals_csv(3)).json()
    assert first["status"] == "partially_failed"
    assert first["failed_hospitals"] == 0 and "could not be activated" in first["error"]
    assert [r["status"] for r in first["hospitals"]] == ["created"] * 3
    creations = upstream.sim.stats["create_requests"]

    document = service.post(f"/hospitals/bulk/{first['batch_id']}/resume").json()

    assert document["status"] == "completed" and document["error"] is None
    assert upstream.sim.stats["create_requests"] == creations
    assert all(h["active"] for h in upstream.sim.hospitals(first["batch_id"]))


def test_a_sleeping_upstream_is_woken_once_before_the_fan_out(make_app, serve_app):
    with serve(create_simulator(delay=0.05, create_limit=0, cold_start=1.5)) as sleepy:
        service = serve_app(make_app(HOSPITAL_API_BASE_URL=sleepy.url, READ_TIMEOUT=1.0, WAKE_TIMEOUT=10.0))

        document = service.upload(hospitals_csv(5)).json()

        assert document["status"] == "completed"
        # Without the wake-up call every creation would have timed out against the cold start.
        assert sleepy.sim.stats["create_requests"] == 5
        assert sleepy.sim.stats["batch_reads"] == 2  # the checks for late duplicates, none to reconcile


def test_rows_still_waiting_at_the_deadline_fail_clearly_and_can_be_resumed(make_app, serve_app, upstream):
    app = make_app(CREATE_RATE=(2, 30.0), BATCH_DEADLINE=1.0)
    service = serve_app(app)

    document = service.upload(hospitals_csv(4)).json()

    assert document["status"] == "partially_failed"
    assert [r["status"] for r in document["hospitals"]].count("created") == 2
    failed = [r for r in document["hospitals"] if r["status"] == "failed"]
    assert len(failed) == 2 and all("deadline" in r["error"] for r in failed)
    assert upstream.sim.stats["create_requests"] == 2


# A 0.5 s lease renewed on time is a wall-clock bound on the heartbeat thread: beside three busy
# workers on two cores a renewal came late once and the batch read interrupted for a moment.
@pytest.mark.serial
def test_a_live_batch_keeps_its_lease_through_a_long_wake_up(make_app, serve_app):
    with serve(create_simulator(delay=0.05, create_limit=0, cold_start=2.0)) as sleepy:
        app = make_app(HOSPITAL_API_BASE_URL=sleepy.url, LEASE_SECONDS=0.5, WAKE_TIMEOUT=10.0)
        service = serve_app(app)

        batch_id = service.upload(hospitals_csv(2), **{"async": "1"}).json()["batch_id"]
        # Returns at the first final state; a lapsed lease would read `interrupted` mid-wake.
        app.extensions["bulkproc"].wait_until_final(batch_id)

        assert service.get(f"/hospitals/bulk/{batch_id}").json()["status"] == "completed"


def test_resume_waits_for_a_creation_still_in_flight_instead_of_posting_it_twice(app, service, upstream):
    jobs = app.extensions["bulkproc"]
    rows = parse(hospitals_csv(3).encode())
    batch_id, _ = jobs.store.insert_batch("5c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5", rows, owner="dead:2", token="t",
                                          lease_until=time.time() - 1)
    # The dead process sent row 1 just before it died; the upstream stores it 0.5 s later.
    jobs.store.mark_rows_in_flight(Run(batch_id, "t"), [1], time.time())
    upstream.sim.delay = 0.5
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(create_upstream, upstream, batch_id, rows[0])

        document = service.post(f"/hospitals/bulk/{batch_id}/resume").json()

        assert in_flight.result()["id"] == document["hospitals"][0]["hospital_id"]
    assert document["status"] == "completed"
    names = [h["name"] for h in upstream.sim.hospitals(batch_id)]
    assert sorted(names) == [r.name for r in rows]


def test_resume_of_a_refused_row_does_not_wait_for_it_to_land(service, upstream, caplog):
    upstream.sim.add_fault("create", "reject_422")
    failed = service.upload(hospitals_csv(2)).json()
    assert failed["status"] == "partially_failed"

    with caplog.at_level("INFO", logger="bulkproc"):
        document = service.post(f"/hospitals/bulk/{failed['batch_id']}/resume").json()

    assert document["status"] == "completed"
    assert "resume: 1 of 2 rows exist upstream" in caplog.text
    assert "may still be in flight" not in caplog.text
