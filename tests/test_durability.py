"""Durability across processes: bulkproc under gunicorn with two workers sharing one SQLite store.

Each test runs a real gunicorn (tests/gunicorn_service.py) against the simulator on loopback. Which
worker serves a request is forced by pausing the other one (SIGSTOP), never by a test endpoint.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from bulkproc.simulator import ServedSimulator, create_simulator, serve
from tests.gunicorn_service import GunicornService
from tests.support import hospitals_csv, wait_until

pytestmark = pytest.mark.slow

ASYNC = {"async": "1"}


@pytest.fixture
def upstream() -> Iterator[ServedSimulator]:
    """The simulator on a free loopback port: 0.05 s per creation, no create limit (tests slow it down)."""
    served = serve(create_simulator(delay=0.05, create_limit=0))
    yield served
    served.stop()


@pytest.fixture
def service(start_service) -> GunicornService:
    return start_service()


def assert_each_row_once_and_active(sim, batch_id: str, rows: int) -> None:
    stored = sim.hospitals(batch_id)
    names = [h["name"] for h in stored]
    assert len(stored) == rows, names
    assert sorted(names) == sorted(f"Hospital {n}" for n in range(1, rows + 1))
    assert all(h["active"] for h in stored)


def assert_completed(document: dict, sim, rows: int) -> None:
    assert document["status"] == "completed", document
    assert document["batch_activated"] is True
    assert (document["processed_hospitals"], document["failed_hospitals"]) == (rows, 0)
    assert [r["status"] for r in document["hospitals"]] == ["created_and_activated"] * rows
    assert_each_row_once_and_active(sim, document["batch_id"], rows)
    assert {r["hospital_id"] for r in document["hospitals"]} == {h["id"] for h in sim.hospitals(document["batch_id"])}


def partially_failed_batch(service: GunicornService, sim, rows: int) -> dict:
    """A synchronous upload whose first creation the directory refuses: partially_failed, one row failed."""
    sim.add_fault("create", "reject_422", times=1)
    response = service.upload(hospitals_csv(rows))
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["status"] == "partially_failed", document
    assert (document["processed_hospitals"], document["failed_hospitals"]) == (rows - 1, 1)
    assert len(sim.hospitals(document["batch_id"])) == rows - 1
    return document


def test_a_batch_is_readable_from_each_worker_alone(service, upstream):
    upstream.sim.delay = 0.3  # long enough to read the batch while it runs
    response = service.upload(hospitals_csv(3), **ASYNC)
    assert response.status_code == 202, response.text
    batch_id = response.json()["batch_id"]
    location = response.headers["Location"]
    assert location.endswith(f"/hospitals/bulk/{batch_id}")
    workers = service.worker_pids()
    assert len(workers) == 2

    # Whichever worker took the POST wrote the batch; each worker on its own must find it.
    for worker in workers:
        with service.only(worker):
            running = service.get(location)
        assert running.status_code == 200, running.text
        assert (running.json()["batch_id"], running.json()["total_hospitals"]) == (batch_id, 3)

    service.wait_for_status(batch_id, {"completed"})
    documents = []
    for worker in workers:
        with service.only(worker):
            documents.append(service.batch(batch_id))
    assert documents[0] == documents[1]
    assert_completed(documents[0], upstream.sim, 3)


def test_a_killed_service_leaves_an_interrupted_batch_that_resume_finishes_creating_each_row_once(
        start_service, upstream):
    sim = upstream.sim
    sim.delay = 1.0
    # Five creations at a time, so the kill finds rows done, rows in flight and rows not yet sent.
    service = start_service(BULKPROC_CONCURRENCY="5")
    response = service.upload(hospitals_csv(20), **ASYNC)
    assert response.status_code == 202, response.text
    batch_id = response.json()["batch_id"]

    wait_until(lambda: sim.stats["created"] >= 5 and sim.stats["create_requests"] >= 10,
               timeout=15, what="the first creations to land and the next to be in flight")
    wait_until(lambda: service.batch(batch_id)["processing_time_seconds"] >= 1.5, timeout=15,
               what="the run to have lasted 1.5 s")
    service.kill()
    # The dead worker's last POSTs still land upstream; resume must find them, so let them finish
    # first (one the kill cut off mid-send is counted on arrival but never stored: wait for idle).
    assert sim.wait_idle(5), "the directory still had creations in flight 5 s after the kill"
    landed = len(sim.hospitals(batch_id))
    assert 5 <= landed < 20

    restarted = start_service(BULKPROC_CONCURRENCY="5")
    interrupted = restarted.wait_for_status(batch_id, {"interrupted"}, timeout=10)
    assert interrupted["batch_activated"] is False
    assert interrupted["processed_hospitals"] < 20
    assert any(r["status"] in ("pending", "in_progress") for r in interrupted["hospitals"])
    # The killed run's time, up to its last lease renewal (every third of a second here), is kept.
    assert interrupted["processing_time_seconds"] >= 1.0, interrupted

    sim.delay = 0.2
    resumed = restarted.post(f"/hospitals/bulk/{batch_id}/resume")
    assert resumed.status_code == 200, resumed.text
    assert_completed(resumed.json(), sim, 20)
    assert resumed.json()["processing_time_seconds"] > interrupted["processing_time_seconds"]
    # At most once: the rows that had landed were found, not posted again.
    assert sim.stats["created"] == 20
    assert sim.stats["activations"] == 1
    assert restarted.batch(batch_id)["status"] == "completed"


def test_a_live_batch_waiting_for_the_directory_to_wake_keeps_its_lease(service, upstream):
    sim = upstream.sim
    sim.cold_start = 2.5  # the first call waits this long, more than twice the 1 s lease
    started = time.monotonic()
    response = service.upload(hospitals_csv(3), **ASYNC)
    assert response.status_code == 202, response.text
    batch_id = response.json()["batch_id"]
    statuses = []

    def lease_lapsed_twice_over() -> bool:
        statuses.append(service.batch(batch_id)["status"])
        return time.monotonic() - started > 2.0

    wait_until(lease_lapsed_twice_over, timeout=5, what="two lease lengths to pass")
    assert sim.stats["create_requests"] == 0, "the directory woke too early for this test"
    resumed = service.post(f"/hospitals/bulk/{batch_id}/resume")
    assert resumed.status_code == 409, resumed.text

    assert_completed(service.wait_for_status(batch_id, {"completed", "partially_failed", "failed"}), sim, 3)
    assert "interrupted" not in statuses, statuses
    assert sim.stats["create_requests"] == 3


def test_a_partially_failed_batch_is_finished_by_resume_and_a_second_resume_changes_nothing(service, upstream):
    sim = upstream.sim
    document = partially_failed_batch(service, sim, 5)
    batch_id = document["batch_id"]
    assert not any(h["active"] for h in sim.hospitals(batch_id))

    resumed = service.post(f"/hospitals/bulk/{batch_id}/resume")
    assert resumed.status_code == 200, resumed.text
    assert_completed(resumed.json(), sim, 5)
    assert sim.stats["create_requests"] == 6  # five rows, and the refused one once more
    before = dict(sim.stats)

    again = service.post(f"/hospitals/bulk/{batch_id}/resume")
    assert again.status_code == 200, again.text
    assert_completed(again.json(), sim, 5)
    assert (sim.stats["create_requests"], sim.stats["activate_requests"]) == (
        before["create_requests"], before["activate_requests"])


def test_roll_back_is_refused_while_processing_then_deletes_the_batch_upstream_for_good(service, upstream):
    sim = upstream.sim
    sim.delay = 1.0
    response = service.upload(hospitals_csv(3), **ASYNC)
    assert response.status_code == 202, response.text
    batch_id = response.json()["batch_id"]

    early = service.delete(f"/hospitals/bulk/{batch_id}")
    assert early.status_code == 409, early.text
    assert early.json()["error"]

    assert_completed(service.wait_for_status(batch_id, {"completed"}), sim, 3)
    rolled_back = service.delete(f"/hospitals/bulk/{batch_id}")
    assert rolled_back.status_code == 200, rolled_back.text
    document = rolled_back.json()
    assert document["status"] == "rolled_back"
    assert document["batch_activated"] is False
    assert [(r["status"], r["hospital_id"]) for r in document["hospitals"]] == [("deleted", None)] * 3
    assert sim.hospitals(batch_id) == []

    resumed = service.post(f"/hospitals/bulk/{batch_id}/resume")
    assert resumed.status_code == 409, resumed.text
    assert resumed.json()["error"]
    assert sim.hospitals(batch_id) == []
    assert service.batch(batch_id)["status"] == "rolled_back"


def test_two_resumes_at_once_one_runs_and_the_other_gets_409(service, upstream):
    sim = upstream.sim
    batch_id = partially_failed_batch(service, sim, 5)["batch_id"]
    sim.delay = 0.5  # the winner is still creating when the loser arrives
    barrier = threading.Barrier(2)

    def resume():
        barrier.wait(5)
        return service.post(f"/hospitals/bulk/{batch_id}/resume")

    with ThreadPoolExecutor(2) as pool:
        responses = [f.result() for f in [pool.submit(resume) for _ in range(2)]]

    by_status = {r.status_code: r for r in responses}
    assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
    assert by_status[409].json()["error"]
    assert_completed(by_status[200].json(), sim, 5)
    assert sim.stats["create_requests"] == 6
    assert sim.stats["activations"] == 1


def test_events_stream_the_batch_until_it_is_final_then_end(service, upstream):
    upstream.sim.delay = 0.5
    response = service.upload(hospitals_csv(3), **ASYNC)
    assert response.status_code == 202, response.text
    batch_id = response.json()["batch_id"]

    documents = []
    started = time.monotonic()
    # The read timeout fails the test if the stream goes quiet instead of ending.
    with service.get(f"/hospitals/bulk/{batch_id}/events", stream=True, timeout=(5, 10)) as stream:
        assert stream.status_code == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("data:"):
                documents.append(json.loads(line[len("data:"):]))
            assert time.monotonic() - started < 20, "the stream did not end"

    assert len(documents) >= 2, documents
    assert {d["batch_id"] for d in documents} == {batch_id}
    statuses = [d["status"] for d in documents]
    assert statuses[-1] == "completed"
    assert "completed" not in statuses[:-1]
    assert_completed(documents[-1], upstream.sim, 3)


def test_an_idempotency_key_resent_to_the_other_worker_answers_the_same_batch(service, upstream):
    sim = upstream.sim
    first_worker, second_worker = service.worker_pids()
    key = {"Idempotency-Key": "durability-upload-1"}
    csv_text = hospitals_csv(4)

    with service.only(first_worker):
        first = service.upload(csv_text, headers=key)
    assert first.status_code == 200, first.text
    assert_completed(first.json(), sim, 4)
    creations = sim.stats["create_requests"]

    with service.only(second_worker):
        second = service.upload(csv_text, headers=key)
    assert second.status_code == 200, second.text
    assert second.json() == first.json()
    assert sim.stats["create_requests"] == creations
    assert len(sim.hospitals()) == 4

    other = service.upload(hospitals_csv(4, prefix="Other"), headers=key)
    assert other.status_code == 422, other.text
    assert other.json()["error"]
    assert sim.stats["create_requests"] == creations
    assert [b["batch_id"] for b in service.get("/hospitals/bulk").json()["batches"]] == [first.json()["batch_id"]]


def test_an_upload_sent_twice_at_once_with_one_idempotency_key_makes_one_batch(service, upstream):
    sim = upstream.sim
    sim.delay = 0.5
    barrier = threading.Barrier(2)

    def send():
        barrier.wait(5)
        return service.upload(hospitals_csv(4), headers={"Idempotency-Key": "durability-upload-2"})

    with ThreadPoolExecutor(2) as pool:
        responses = [f.result() for f in [pool.submit(send) for _ in range(2)]]

    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert responses[0].json()["batch_id"] == responses[1].json()["batch_id"]
    assert_completed(responses[0].json(), sim, 4)
    assert sim.stats["create_requests"] == 4
    assert len(sim.hospitals()) == 4


def test_a_graceful_stop_leaves_rows_waiting_for_the_window_pending_and_the_batch_resumable(start_service,
                                                                                             upstream):
    service = start_service(BULKPROC_CREATE_RATE="2/60")
    batch_id = service.upload(hospitals_csv(4), **ASYNC).json()["batch_id"]
    wait_until(lambda: len(upstream.sim.hospitals(batch_id)) == 2, timeout=20, what="the first window's 2 rows")

    service.stop()  # SIGTERM; the other two rows wait for a window a minute away

    document = start_service().batch(batch_id)
    assert document["status"] == "partially_failed", document
    assert [r["status"] for r in document["hospitals"]] == ["created", "created", "pending", "pending"]
