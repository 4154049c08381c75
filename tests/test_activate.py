"""Finishing a partly failed batch or import without its failed rows: POST …/activate, over loopback HTTP."""

from __future__ import annotations

import csv
import io
import time
from concurrent.futures import ThreadPoolExecutor

from bulkproc.files.rules import parse
from bulkproc.store import Run
from tests.support import hospitals_csv, metric
from tests.test_recovery import create_upstream


def _failed_csv(service, path: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(service.get(path + "/failed.csv").text)))


def test_activate_makes_the_created_rows_live_and_leaves_the_failed_ones_out(service, upstream):
    upstream.sim.add_fault("create", "reject_422", after=1)  # the 2nd creation is refused
    first = service.upload(hospitals_csv(3, phone=False)).json()
    assert first["status"] == "partially_failed"
    batch_id = first["batch_id"]

    answer = service.post(f"/hospitals/bulk/{batch_id}/activate")

    assert answer.status_code == 200
    document = answer.json()
    assert document["status"] == "partially_activated" and document["batch_activated"] is True
    by_status = {r["status"] for r in document["hospitals"]}
    assert by_status == {"created_and_activated", "failed"}
    failed = [r for r in document["hospitals"] if r["status"] == "failed"]
    assert len(failed) == 1 and "refused" in failed[0]["error"]
    active = {h["id"] for h in upstream.sim.hospitals(batch_id) if h["active"]}
    created = {r["hospital_id"] for r in document["hospitals"] if r["status"] == "created_and_activated"}
    assert active == created and len(created) == 2
    assert [r["name"] for r in _failed_csv(service, f"/hospitals/bulk/{batch_id}")] == [failed[0]["name"]]
    assert metric(service.get("/metrics").text, "bulkproc_batches_finished_total",
                  status="partially_activated") >= 1


def test_a_partially_activated_batch_is_final_but_can_be_rolled_back(service, upstream):
    upstream.sim.add_fault("create", "reject_422")
    batch_id = service.upload(hospitals_csv(2)).json()["batch_id"]
    assert service.post(f"/hospitals/bulk/{batch_id}/activate").json()["status"] == "partially_activated"
    failed_row = next(r["row"] for r in service.get(f"/hospitals/bulk/{batch_id}").json()["hospitals"]
                      if r["status"] == "failed")

    assert service.post(f"/hospitals/bulk/{batch_id}/resume").status_code == 409
    assert service.post(f"/hospitals/bulk/{batch_id}/activate").status_code == 409
    patched = service.http.patch(f"{service.url}/hospitals/bulk/{batch_id}/rows/{failed_row}",
                                 json={"name": "Fixed"}, timeout=10)
    assert patched.status_code == 409

    rolled = service.delete(f"/hospitals/bulk/{batch_id}")
    assert rolled.status_code == 200 and rolled.json()["status"] == "rolled_back"
    assert upstream.sim.hospitals(batch_id) == []
    assert service.post(f"/hospitals/bulk/{batch_id}/activate").status_code == 409


def test_activate_answers_409_when_nothing_of_the_batch_exists_upstream(service, upstream):
    upstream.sim.add_fault("create", "reject_422", times=2)
    document = service.upload(hospitals_csv(2)).json()
    assert document["status"] == "failed"

    answer = service.post(f"/hospitals/bulk/{document['batch_id']}/activate")

    assert answer.status_code == 409 and "resume it or roll it back" in answer.json()["error"].lower()
    assert upstream.sim.stats["activate_requests"] == 0


def test_activate_of_a_completed_batch_changes_nothing(service, upstream):
    batch_id = service.upload(hospitals_csv(2)).json()["batch_id"]
    activations = upstream.sim.stats["activate_requests"]

    answer = service.post(f"/hospitals/bulk/{batch_id}/activate")

    assert answer.status_code == 200 and answer.json()["status"] == "completed"
    assert upstream.sim.stats["activate_requests"] == activations


def test_activate_answers_409_while_the_batch_is_processed(app, service, upstream):
    upstream.sim.add_fault("create", "store_then_hang", seconds=10)
    batch_id = service.upload(hospitals_csv(1), **{"async": "1"}).json()["batch_id"]
    try:
        answer = service.post(f"/hospitals/bulk/{batch_id}/activate")
        assert answer.status_code == 409
    finally:
        upstream.sim.release_hangs()
    app.extensions["bulkproc"].wait_until_final(batch_id)


def test_activate_of_an_interrupted_batch_waits_for_a_creation_still_landing(app, service, upstream):
    jobs = app.extensions["bulkproc"]
    rows = parse(hospitals_csv(3).encode())
    # A dead process's batch: row 1 created and recorded, row 2 sent just before it died (the
    # upstream stores it 0.5 s later), row 3 never sent.
    batch_id, _ = jobs.store.insert_batch("7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6", rows, owner="dead:3", token="t",
                                          lease_until=time.time() - 1)
    made = create_upstream(upstream, batch_id, rows[0])
    jobs.store.record_created(Run(batch_id, "t"), 1, made["id"])
    jobs.store.mark_rows_in_flight(Run(batch_id, "t"), [2], time.time())
    upstream.sim.delay = 0.5
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(create_upstream, upstream, batch_id, rows[1])

        document = service.post(f"/hospitals/bulk/{batch_id}/activate").json()

        late = in_flight.result()
    assert document["status"] == "partially_activated"
    assert [r["status"] for r in document["hospitals"]] == ["created_and_activated", "created_and_activated",
                                                            "failed"]
    assert document["hospitals"][1]["hospital_id"] == late["id"]
    assert upstream.sim.stats["create_requests"] == 2  # the dead process's two: nothing posted again
    assert {h["id"] for h in upstream.sim.hospitals(batch_id) if h["active"]} == {made["id"], late["id"]}
    assert [r["name"] for r in _failed_csv(service, f"/hospitals/bulk/{batch_id}")] == [rows[2].name]


def test_activate_and_resume_race_one_wins_and_nothing_is_duplicated(app, service, upstream):
    upstream.sim.add_fault("create", "reject_422")
    batch_id = service.upload(hospitals_csv(3)).json()["batch_id"]
    upstream.sim.add_fault("list_batch", "slow", seconds=0.3)  # holds the winner inside its run

    with ThreadPoolExecutor(2) as pool:
        racing = [pool.submit(service.post, f"/hospitals/bulk/{batch_id}/{action}")
                  for action in ("activate", "resume")]
        codes = sorted(f.result().status_code for f in racing)

    assert codes == [200, 409]
    final = service.get(f"/hospitals/bulk/{batch_id}").json()
    assert final["status"] in ("partially_activated", "completed")
    names = [h["name"] for h in upstream.sim.hospitals(batch_id)]
    assert len(names) == len(set(names))
    assert all(h["active"] for h in upstream.sim.hospitals(batch_id))


def test_an_imports_activate_finishes_each_batch_that_needs_it(make_app, serve_app, upstream):
    app = make_app(MAX_ROWS=2)
    service = serve_app(app)
    imports = app.extensions["bulkproc.imports"]
    upstream.sim.add_fault("create", "reject_422", after=2)  # row 3 (the 2nd batch's first) is refused
    import_id = service.upload(hospitals_csv(5), path="/hospitals/imports").json()["import_id"]
    for _ in imports.watch(import_id, 5.0):
        pass
    before = service.get(f"/hospitals/imports/{import_id}").json()
    assert before["status"] == "partially_failed"

    answer = service.post(f"/hospitals/imports/{import_id}/activate")
    assert answer.status_code == 202
    for _ in imports.watch(import_id, 5.0):
        pass

    document = service.get(f"/hospitals/imports/{import_id}").json()
    assert document["status"] == "partially_activated"
    assert [b["status"] for b in document["batches"]] == ["completed", "partially_activated", "completed"]
    assert document["processed_hospitals"] == 4 and document["failed_hospitals"] == 1
    assert all(h["active"] for h in upstream.sim.hospitals())
    assert len(upstream.sim.hospitals()) == 4
    assert len(_failed_csv(service, f"/hospitals/imports/{import_id}")) == 1
    assert service.post(f"/hospitals/imports/{import_id}/resume").status_code == 409
    assert service.post(f"/hospitals/imports/{import_id}/activate").status_code == 409
