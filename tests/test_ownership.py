"""One owner per run, over real loopback HTTP: queued work stays owned, a lost run stops, rollback is final.

The regressions of issue 13's "What was seen" 1, 3, 7 and 9 on one process; test_paused_owner.py
has the two-instance ones (a paused owner, seen 2).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bulkproc.errors import StoreUnavailable
from bulkproc.files.rules import parse
from bulkproc.store import Run
from tests.support import hospitals_csv, wait_until

FINAL = {"completed", "partially_failed", "failed", "interrupted", "rolled_back", "cancelled"}


def upload_async(service, csv_text: str) -> str:
    response = service.upload(csv_text, headers={"Prefer": "respond-async"})
    assert response.status_code == 202, response.text
    return response.json()["batch_id"]


def statuses(service) -> dict[str, str]:
    return {b["batch_id"]: b["status"] for b in service.get("/hospitals/bulk", params={"limit": 100}).json()["batches"]}


def create_upstream(upstream, batch_id: str, row) -> dict:
    """A creation sent by a process that died: it lands when the directory is done with it."""
    body = {"name": row.name, "address": row.address, "phone": row.phone, "creation_batch_id": batch_id}
    return requests.post(f"{upstream.url}/hospitals/", json=body, timeout=10).json()


# -- seen 1: queued work is owned while its process lives ------------------------------------


@pytest.mark.serial  # a lease of a second or less renewed on time: a wall-clock bound
def test_batches_queued_behind_the_batch_pool_never_read_interrupted(make_app, serve_app, upstream):
    # 40 one-row batches while each creation takes 2 s: 8 wait for one of the pool's 32 threads,
    # two leases long and more. Their process lives, so none may read interrupted.
    upstream.sim.rate_limits.limits["other"] = 0  # 40 batches read more than 50 times a minute
    service = serve_app(make_app(LEASE_SECONDS=1.0, READ_TIMEOUT=10.0, CONCURRENCY=40))
    upstream.sim.delay = 2.0
    ids = [upload_async(service, hospitals_csv(1, prefix=f"Queued {n}")) for n in range(40)]
    seen: set[str] = set()

    def all_final() -> bool:
        now = statuses(service)
        seen.update(now[i] for i in ids)
        return all(now[i] in FINAL for i in ids)

    wait_until(all_final, timeout=60, what="every batch to finish", interval=0.1)
    assert "interrupted" not in seen
    assert {statuses(service)[i] for i in ids} == {"completed"}
    assert len(upstream.sim.hospitals()) == 40


def test_a_queued_run_whose_batch_was_rolled_back_never_starts(make_app, serve_app, upstream):
    # The process stops renewing (as a frozen one would) while a batch waits in its queue; once it
    # reads interrupted, a rollback takes it. When a thread frees, the queued run must not start.
    upstream.sim.rate_limits.limits["other"] = 0  # 33 batches read more than 50 times a minute
    app = make_app(LEASE_SECONDS=1.0, READ_TIMEOUT=30.0, CONCURRENCY=40)
    service = serve_app(app)
    # Every busy creation is stored, then held until released: no batch thread frees before the
    # rollback, however slowly a loaded machine posts the uploads (a 3 s delay once let the queued
    # run start first, and the rollback then rightly waited for its creation to settle).
    upstream.sim.add_fault("create", "store_then_hang", times=32)
    busy = [upload_async(service, hospitals_csv(1, prefix=f"Busy {n}")) for n in range(32)]
    wait_until(lambda: upstream.sim.stats["create_requests"] >= 32, timeout=20, what="32 creations in flight")
    queued = upload_async(service, hospitals_csv(1, prefix="Queued"))
    app.extensions["bulkproc"].heartbeat.close()  # the process's renewals stop
    wait_until(lambda: service.get(f"/hospitals/bulk/{queued}").json()["status"] == "interrupted",
               timeout=10, what="the queued batch to read interrupted")

    rolled = service.delete(f"/hospitals/bulk/{queued}")
    upstream.sim.release_hangs()  # the busy creations answer; a thread frees for the queued run

    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["status"] == "rolled_back"
    wait_until(lambda: all(statuses(service)[b] in FINAL for b in busy), timeout=30, what="the busy batches")
    assert upstream.sim.wait_idle(10)
    app.extensions["bulkproc"].close()  # joins every batch thread: the queued run has had its turn
    assert upstream.sim.hospitals(queued) == []
    assert upstream.sim.stats["create_requests"] == 32
    document = service.get(f"/hospitals/bulk/{queued}").json()
    assert document["status"] == "rolled_back" and document["batch_activated"] is False


# -- seen 3: a store error in the heartbeat --------------------------------------------------


@pytest.mark.serial  # a lease of a second or less renewed on time: a wall-clock bound
def test_store_errors_in_the_heartbeat_do_not_make_a_live_import_read_interrupted(make_app, serve_app,
                                                                                   upstream, monkeypatch):
    app = make_app(LEASE_SECONDS=1.0, CREATE_RATE=(10, 1.0), CONCURRENCY=10)
    service = serve_app(app)
    store = app.extensions["bulkproc"].store
    renew, failures = store.renew_leases, {"left": 2}

    def locked_twice(*args):
        if failures["left"]:
            failures["left"] -= 1
            raise StoreUnavailable("database is locked")
        return renew(*args)

    monkeypatch.setattr(store, "renew_leases", locked_twice)
    response = service.upload(hospitals_csv(40), path="/hospitals/imports")
    import_id = response.json()["import_id"]
    seen: set[str] = set()

    def final() -> bool:
        document = service.get(f"/hospitals/imports/{import_id}").json()
        seen.add(document["status"])
        seen.update(b["status"] for b in document["batches"])
        return document["status"] in FINAL

    wait_until(final, timeout=30, what="the import to finish", interval=0.05)
    assert failures["left"] == 0
    assert "interrupted" not in seen
    assert service.get(f"/hospitals/imports/{import_id}").json()["status"] == "completed"
    assert len(upstream.sim.hospitals()) == 40


# -- seen 7: rollback is final, and waits --------------------------------------------------


def test_a_second_rollback_that_the_directory_fails_stays_rolled_back(service, upstream):
    batch_id = service.upload(hospitals_csv(3)).json()["batch_id"]
    assert service.delete(f"/hospitals/bulk/{batch_id}").json()["status"] == "rolled_back"
    upstream.sim.add_fault("delete_batch", "error_500", times=5)

    again = service.delete(f"/hospitals/bulk/{batch_id}")

    assert again.status_code == 200 and again.json()["status"] == "rolled_back"
    assert service.post(f"/hospitals/bulk/{batch_id}/resume").status_code == 409
    assert service.get(f"/hospitals/bulk/{batch_id}").json()["status"] == "rolled_back"
    assert upstream.sim.hospitals(batch_id) == []
    assert upstream.sim.stats["create_requests"] == 3


def test_a_rollback_of_an_interrupted_batch_waits_for_a_creation_still_in_flight(app, service, upstream):
    jobs = app.extensions["bulkproc"]
    rows = parse(hospitals_csv(2).encode())
    batch_id, _ = jobs.store.insert_batch(str(uuid.uuid4()), rows, owner="dead:1", token="dead-run",
                                          lease_until=time.time() - 1)
    # The dead process sent row 1 just before it died; the directory stores it 1 s later.
    jobs.store.mark_rows_in_flight(Run(batch_id, "dead-run"), [1], time.time())
    upstream.sim.delay = 1.0
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(create_upstream, upstream, batch_id, rows[0])

        rolled = service.delete(f"/hospitals/bulk/{batch_id}")

        assert in_flight.result()["id"]
    assert rolled.status_code == 200 and rolled.json()["status"] == "rolled_back"
    assert upstream.sim.hospitals(batch_id) == []


# -- seen 9 --------------------------------------------------------------------------------


def test_a_resumed_imports_settle_wait_does_not_hold_its_later_batches(app, service, upstream):
    imports = app.extensions["bulkproc.imports"]
    store = imports.store
    rows = parse(hospitals_csv(4).encode())
    import_id, first, second = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    store.insert_import(import_id, [(first, rows[:2]), (second, rows[2:])], owner="dead:1", token="dead-run",
                        lease_until=time.time() - 1)
    # The dead runner had sent the first batch's row 1: the resume gives it 4 s to land.
    store.start_run(Run(first, "dead-run"), time.time())
    store.mark_rows_in_flight(Run(first, "dead-run"), [1], time.time())

    assert service.post(f"/hospitals/imports/{import_id}/resume").status_code == 202

    def second_done() -> dict | None:
        batches = {b["batch_id"]: b for b in service.get(f"/hospitals/imports/{import_id}").json()["batches"]}
        return batches if batches[second]["status"] == "completed" else None

    batches = wait_until(second_done, timeout=10, what="the second batch to finish")
    assert batches[first]["status"] == "processing"  # still waiting for its creation to settle
    done = wait_until(lambda: (d := service.get(f"/hospitals/imports/{import_id}").json())["status"] in FINAL
                      and d, timeout=20, what="the import")
    assert done["status"] == "completed"
    assert len(upstream.sim.hospitals()) == 4


def test_attempted_at_is_when_the_post_goes_out_not_when_its_slot_was_taken(app, upstream):
    jobs = app.extensions["bulkproc"]
    batch_id, _ = jobs.start(parse(hospitals_csv(1).encode()))
    run = jobs.heartbeat.find("batch", batch_id)
    assert jobs.store.start_run(run, time.time())
    slot_at = time.time() - 1.0  # the slot was taken a second ago: the row waited for a thread
    assert jobs.store.start_rows(run, [1], slot_at)
    sent: list[float] = []
    real_create = jobs.client.create_hospital

    def create(*args):
        sent.append(time.time())
        return real_create(*args)

    jobs.client.create_hospital = create
    jobs.rows.post(run, jobs.store.get_batch(batch_id).rows[0], None, slot_at)

    attempted = jobs.store.get_batch(batch_id).rows[0].attempted_at
    assert slot_at + 1.0 <= attempted <= sent[0]
