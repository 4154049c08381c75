"""Imports of any size: split into batches, paced at the create-rate limit, cancelled, resumed, rolled back."""

from __future__ import annotations

import csv
import io
import json

import pytest

from bulkproc.simulator import create_simulator, serve
from tests.browser import choose_file, overflow, table, wait_for_text
from tests.postgres import postgres_url, store_url  # noqa: F401
from tests.support import hospitals_csv, wait_until

FINAL = {"completed", "partially_failed", "failed", "cancelled", "interrupted", "rolled_back"}
IMPORT_FIELDS = ["import_id", "status", "total_hospitals", "processed_hospitals", "failed_hospitals",
                 "processing_time_seconds", "estimated_seconds_remaining", "batches", "created_at", "updated_at"]
BATCH_FIELDS = ["batch_id", "first_row", "last_row", "status", "total_hospitals", "processed_hospitals",
                "failed_hospitals", "batch_activated", "created_at", "updated_at"]


def start_import(service, csv_text: str, **kwargs):
    response = service.upload(csv_text, path="/hospitals/imports", **kwargs)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/hospitals/imports/{response.json()['import_id']}"
    return response.json()


def wait_for(service, import_id: str, statuses=FINAL, timeout: float = 30.0, what: str = "") -> dict:
    def reached():
        document = service.get(f"/hospitals/imports/{import_id}").json()
        return document if document["status"] in statuses else None
    return wait_until(reached, timeout=timeout, what=what or f"import {import_id} to reach {sorted(statuses)}")


def names(hospitals) -> list[str]:
    return sorted((h["name"] for h in hospitals), key=lambda n: int(n.rsplit(" ", 1)[1]))


def assert_each_row_once_and_active(upstream, document: dict, prefix: str = "Hospital") -> None:
    """Every batch of the import holds its own rows upstream, once each, all active."""
    for part in document["batches"]:
        held = upstream.sim.hospitals(part["batch_id"])
        expected = [f"{prefix} {n}" for n in range(part["first_row"], part["last_row"] + 1)]
        assert names(held) == expected, part
        assert all(h["active"] for h in held), part


# -- the import document and its batches ---------------------------------------------------


def test_a_100_row_import_completes_as_5_active_batches_each_with_its_own_rows(service, upstream):
    started = start_import(service, hospitals_csv(100))

    assert list(started) == IMPORT_FIELDS
    assert started["status"] in {"queued", "processing"} and started["total_hospitals"] == 100
    document = wait_for(service, started["import_id"])

    assert document["status"] == "completed", document
    assert (document["processed_hospitals"], document["failed_hospitals"]) == (100, 0)
    assert document["estimated_seconds_remaining"] is None
    assert [(b["first_row"], b["last_row"]) for b in document["batches"]] == [
        (1, 20), (21, 40), (41, 60), (61, 80), (81, 100)]
    assert all(list(b) == BATCH_FIELDS for b in document["batches"])
    assert {(b["status"], b["batch_activated"], b["processed_hospitals"]) for b in document["batches"]} == {
        ("completed", True, 20)}
    assert_each_row_once_and_active(upstream, document)
    assert upstream.sim.stats["created"] == 100
    # Each batch is an ordinary batch whose rows keep the file's row numbers.
    third = service.get(f"/hospitals/bulk/{document['batches'][2]['batch_id']}").json()
    assert [h["row"] for h in third["hospitals"]] == list(range(41, 61))
    assert {h["status"] for h in third["hospitals"]} == {"created_and_activated"}


def test_the_batch_listing_can_leave_out_the_batches_of_imports(service, upstream):
    alone = service.upload(hospitals_csv(1, prefix="Alone")).json()["batch_id"]
    document = wait_for(service, start_import(service, hospitals_csv(25))["import_id"])
    of_import = [b["batch_id"] for b in document["batches"]]

    every = [b["batch_id"] for b in service.get("/hospitals/bulk").json()["batches"]]
    assert sorted(every) == sorted([alone, *of_import])
    standalone = service.get("/hospitals/bulk?standalone=true&limit=1").json()["batches"]
    assert [b["batch_id"] for b in standalone] == [alone]  # the limit counts standalone batches only
    assert [b["batch_id"] for b in service.get("/hospitals/bulk?standalone=false").json()["batches"]] == every
    refused = service.get("/hospitals/bulk?standalone=yes")
    assert refused.status_code == 400 and refused.json()["details"][0]["column"] == "standalone"


def read_events(service, import_id: str) -> list[dict]:
    """Every document of the import's event stream, which must end by itself."""
    documents = []
    with service.get(f"/hospitals/imports/{import_id}/events", stream=True, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                documents.append(json.loads(line[len("data: "):]))
    return documents


def test_the_next_batch_starts_while_the_one_before_still_has_rows_in_flight(make_app, serve_app):
    with serve(create_simulator(delay=0.3, create_limit=0)) as slow:
        service = serve_app(make_app(HOSPITAL_API_BASE_URL=slow.url))
        import_id = start_import(service, hospitals_csv(40))["import_id"]

        documents = read_events(service, import_id)

    assert documents[-1]["status"] == "completed"
    # Batch 1 took every slot it needed at once, so batch 2 did not wait for batch 1 to finish.
    both = [d for d in documents if [b["status"] for b in d["batches"]] == ["processing", "processing"]]
    assert both, [[b["status"] for b in d["batches"]] for d in documents]


def test_an_import_and_small_uploads_at_once_share_the_limit_with_no_429(make_app, serve_app):
    # Scaled time: 30 creations per 1 s window upstream, 0.05 s per creation. The service's window is
    # half as long again: on a loaded test machine a POST can land a few hundred ms after its slot
    # was taken. Budgets that were not shared (the import's and the uploads' apart) would still
    # send 60 creations into one upstream window, and be refused.
    with serve(create_simulator(delay=0.05, create_limit=30, window=1.0)) as limited:
        service = serve_app(make_app(HOSPITAL_API_BASE_URL=limited.url, CREATE_RATE=(30, 1.5), CONCURRENCY=30))
        started = start_import(service, hospitals_csv(100))
        wait_until(lambda: service.get(f"/hospitals/imports/{started['import_id']}").json()["processed_hospitals"],
                   timeout=10, what="the import's first creations")
        uploads = [service.upload(hospitals_csv(n, prefix=f"Small{n}"), **{"async": "1"}).json()["batch_id"]
                   for n in (5, 20)]

        small = [wait_until(lambda b=b: (d := service.get(f"/hospitals/bulk/{b}").json())["status"] in FINAL and d,
                            timeout=30, what=f"upload {b}") for b in uploads]
        document = wait_for(service, started["import_id"])
        stats = dict(limited.sim.stats)

    assert [d["status"] for d in small] == ["completed", "completed"]
    assert document["status"] == "completed"
    assert stats["rate_limited"] == 0 and stats["created"] == 125
    # Not queued behind the import: both uploads were done while the import still had rows to create.
    assert max(d["updated_at"] for d in small) < document["updated_at"]
    last_batch = service.get(f"/hospitals/bulk/{document['batches'][-1]['batch_id']}").json()
    assert max(d["updated_at"] for d in small) < last_batch["updated_at"]


def slow_service(make_app, serve_app, **overrides):
    """A service whose limiter lets 10 creations through per second: an import takes a while."""
    return serve_app(make_app(CREATE_RATE=(10, 1.0), CONCURRENCY=10, **overrides))


def import_rows(service, document: dict) -> list[dict]:
    """Every row of the import, read from its batches."""
    return [h for b in document["batches"] for h in service.get(f"/hospitals/bulk/{b['batch_id']}").json()["hospitals"]]


def test_cancel_stops_new_rows_and_resume_finishes_every_row_once(make_app, serve_app, upstream):
    service = slow_service(make_app, serve_app)
    import_id = start_import(service, hospitals_csv(60))["import_id"]
    wait_until(lambda: service.get(f"/hospitals/imports/{import_id}").json()["processed_hospitals"] >= 10,
               timeout=10, what="the first window's creations")

    cancelled = service.post(f"/hospitals/imports/{import_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["import_id"] == import_id
    not_started = {h["row"] for h in import_rows(service, cancelled.json()) if h["status"] == "cancelled"}
    document = wait_for(service, import_id)

    assert document["status"] == "cancelled", [(b["status"], b["processed_hospitals"]) for b in document["batches"]]
    assert document["estimated_seconds_remaining"] is None
    rows = import_rows(service, document)
    assert {h["status"] for h in rows} <= {"created_and_activated", "created", "cancelled"}
    # The rows the cancel found not started never start; the ones in flight finished.
    assert not_started & set(range(1, 21)), "the cancel should find the first batch part-way"
    assert {h["row"] for h in rows if h["status"] == "cancelled"} == not_started
    # What exists upstream is exactly what the import says was created: nothing started after the cancel.
    assert upstream.sim.stats["created"] == document["processed_hospitals"] < 60
    last = document["batches"][-1]
    assert (last["status"], last["processed_hospitals"]) == ("cancelled", 0)
    again = service.post(f"/hospitals/imports/{import_id}/cancel")  # cancelled already: nothing to do
    assert (again.status_code, again.json()["status"]) == (200, "cancelled")

    resumed = service.post(f"/hospitals/imports/{import_id}/resume")
    assert resumed.status_code == 202
    document = wait_for(service, import_id, what="the resumed import")

    assert document["status"] == "completed", document
    assert_each_row_once_and_active(upstream, document)
    assert upstream.sim.stats["created"] == 60


def test_cancel_and_resume_are_refused_when_they_cannot_apply(service):
    import_id = start_import(service, hospitals_csv(3))["import_id"]
    assert wait_for(service, import_id)["status"] == "completed"

    assert service.post(f"/hospitals/imports/{import_id}/cancel").status_code == 409
    resumed = service.post(f"/hospitals/imports/{import_id}/resume")
    assert (resumed.status_code, resumed.json()["status"]) == (200, "completed")
    assert service.get("/hospitals/imports/00000000-0000-4000-8000-000000000000").status_code == 404
    assert service.post("/hospitals/imports/not-an-id/cancel").status_code == 404


def test_rollback_deletes_every_batch_upstream_and_is_refused_while_running(make_app, serve_app, upstream):
    service = slow_service(make_app, serve_app)
    import_id = start_import(service, hospitals_csv(30))["import_id"]

    busy = service.delete(f"/hospitals/imports/{import_id}")
    assert busy.status_code == 409 and "being processed" in busy.json()["error"]
    assert wait_for(service, import_id)["status"] == "completed"

    rolled = service.delete(f"/hospitals/imports/{import_id}")

    assert rolled.status_code == 200
    document = rolled.json()
    assert document["status"] == "rolled_back" and document["processed_hospitals"] == 0
    assert {b["status"] for b in document["batches"]} == {"rolled_back"}
    assert upstream.sim.hospitals() == []
    assert service.post(f"/hospitals/imports/{import_id}/resume").status_code == 409


def test_on_either_store_an_import_is_cancelled_resumed_and_rolled_back(store_url, make_app, serve_app, upstream):
    service = serve_app(make_app(DATABASE_URL=store_url, CREATE_RATE=(10, 1.0), CONCURRENCY=10))
    import_id = start_import(service, hospitals_csv(45))["import_id"]
    wait_until(lambda: service.get(f"/hospitals/imports/{import_id}").json()["processed_hospitals"] >= 10,
               timeout=10, what="the first window's creations")

    assert service.post(f"/hospitals/imports/{import_id}/cancel").status_code == 200
    assert wait_for(service, import_id)["status"] == "cancelled"
    assert service.post(f"/hospitals/imports/{import_id}/resume").status_code == 202
    document = wait_for(service, import_id, what="the resumed import")
    assert document["status"] == "completed"
    assert_each_row_once_and_active(upstream, document)

    assert service.delete(f"/hospitals/imports/{import_id}").json()["status"] == "rolled_back"
    assert upstream.sim.hospitals() == []
    assert [i["status"] for i in service.get("/hospitals/imports").json()["imports"]] == ["rolled_back"]


# -- validation ----------------------------------------------------------------------------


def test_a_refused_file_lists_every_problem_and_creates_nothing(make_app, serve_app, upstream):
    service = serve_app(make_app(MAX_IMPORT_ROWS=50))
    bad = hospitals_csv(30).replace("Hospital 7,", ",").replace("555-010-0025", "call me")

    refused = service.upload(bad, path="/hospitals/imports")

    assert refused.status_code == 422
    assert {(d["row"], d["column"]) for d in refused.json()["details"]} == {(7, "name"), (25, "phone")}
    too_many = service.upload(hospitals_csv(51), path="/hospitals/imports")
    assert too_many.status_code == 422 and "at most 50" in too_many.json()["details"][0]["message"]
    assert service.get("/hospitals/imports").json() == {"imports": []}
    assert service.get("/hospitals/bulk").json() == {"batches": []}
    assert upstream.sim.stats["create_requests"] == 0


def test_validate_uses_the_import_row_limit(make_app, serve_app, upstream):
    service = serve_app(make_app(MAX_IMPORT_ROWS=50))

    good = service.upload(hospitals_csv(45), path="/hospitals/imports/validate").json()
    over = service.upload(hospitals_csv(51), path="/hospitals/imports/validate").json()
    batch_sized = service.upload(hospitals_csv(45), path="/hospitals/bulk/validate").json()

    assert (good["valid"], good["total_hospitals"], len(good["hospitals"])) == (True, 45, 45)
    assert good["hospitals"][44] == {"row": 45, "name": "Hospital 45", "address": "45 Main St, Springfield",
                                     "phone": "555-010-0045"}
    assert (over["valid"], over["total_hospitals"], over["hospitals"]) == (False, 51, [])
    assert batch_sized["valid"] is False
    assert upstream.sim.stats["create_requests"] == 0


def test_malformed_import_requests_get_400(service):
    assert service.post("/hospitals/imports", data={"x": "1"}).status_code == 400
    assert service.get("/hospitals/imports?limit=0").status_code == 400


# -- idempotency, listing, events, result files, auth ----------------------------------------


def test_the_same_idempotency_key_and_file_answers_the_first_import(service, upstream):
    key = {"Idempotency-Key": "import-42"}
    first = start_import(service, hospitals_csv(25), headers=key)
    again = start_import(service, hospitals_csv(25), headers=key)
    other = service.upload(hospitals_csv(26), path="/hospitals/imports", headers=key)

    assert again["import_id"] == first["import_id"]
    assert other.status_code == 422
    wait_for(service, first["import_id"])
    assert len(service.get("/hospitals/imports").json()["imports"]) == 1
    assert upstream.sim.stats["created"] == 25


def test_the_listing_is_newest_first_without_batches(service):
    ids = [start_import(service, hospitals_csv(2, prefix=f"List{n}"))["import_id"] for n in range(3)]
    for import_id in ids:
        wait_for(service, import_id)

    listed = service.get("/hospitals/imports?limit=2").json()["imports"]

    assert [i["import_id"] for i in listed] == ids[:0:-1]
    assert list(listed[0]) == [f for f in IMPORT_FIELDS if f != "batches"]


def test_the_event_stream_follows_the_import_to_its_end(make_app, serve_app):
    service = slow_service(make_app, serve_app, SSE_HEARTBEAT_SECONDS=0.2)
    import_id = start_import(service, hospitals_csv(45))["import_id"]

    documents = read_events(service, import_id)

    assert documents[-1]["status"] == "completed"
    processed = [d["processed_hospitals"] for d in documents]
    assert processed == sorted(processed) and len(set(processed)) > 2
    # The third batch waits longer than a lease (2 s) to start: the runner keeps it from reading interrupted.
    assert {b["status"] for d in documents for b in d["batches"]} <= {"queued", "processing", "activating",
                                                                      "completed"}
    # While rows wait for the window, the estimate is the time the limit still needs.
    assert any(d["estimated_seconds_remaining"] and d["estimated_seconds_remaining"] >= 1.0 for d in documents)


def test_result_files_list_every_row_and_failed_rows_ready_to_upload_again(service, upstream):
    upstream.sim.add_fault("create", "reject_422", times=1, after=0)
    csv_text = hospitals_csv(22).replace("555-010-0003", "+1 555 010 0003")
    import_id = start_import(service, csv_text)["import_id"]
    document = wait_for(service, import_id)
    assert document["status"] == "partially_failed" and document["failed_hospitals"] == 1

    results = service.get(f"/hospitals/imports/{import_id}/results.csv")
    failed = service.get(f"/hospitals/imports/{import_id}/failed.csv")

    assert results.headers["Content-Type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(results.text)))
    assert [int(r["row"]) for r in lines] == list(range(1, 23))
    assert {r["batch_id"] for r in lines} == {b["batch_id"] for b in document["batches"]}
    assert lines[2]["phone"] == "'+1 555 010 0003"  # a spreadsheet would read it as a formula
    failed_rows = list(csv.DictReader(io.StringIO(failed.text)))
    failed_row = next(r for r in lines if r["status"] == "failed")
    assert [(r["name"], r["error"]) for r in failed_rows] == [(failed_row["name"], failed_row["error"])]
    assert failed_row["error"] and failed_row["hospital_id"] == ""


def test_results_csv_of_many_batches_lists_each_row_once_in_file_order_with_its_batch(make_app, serve_app):
    # 30 batches of 2 rows: more than one read of rows, so the seams between reads are covered too.
    # Their 60-odd batch reads would pass the upstream's 50 a window: no read limit here.
    with serve(create_simulator(delay=0.05, create_limit=0, other_limit=0)) as unlimited:
        service = serve_app(make_app(MAX_ROWS=2, HOSPITAL_API_BASE_URL=unlimited.url))
        import_id = start_import(service, hospitals_csv(60))["import_id"]
        document = wait_for(service, import_id)

    lines = list(csv.DictReader(io.StringIO(service.get(f"/hospitals/imports/{import_id}/results.csv").text)))

    assert [int(r["row"]) for r in lines] == list(range(1, 61))
    batch_of = {n: b["batch_id"] for b in document["batches"] for n in range(b["first_row"], b["last_row"] + 1)}
    assert [r["batch_id"] for r in lines] == [batch_of[n] for n in range(1, 61)]
    assert [r["name"] for r in lines] == [f"Hospital {n}" for n in range(1, 61)]


def test_with_a_token_every_import_request_needs_it(make_app, serve_app):
    service = serve_app(make_app(API_TOKEN="s3cret"))

    refused = service.upload(hospitals_csv(2), path="/hospitals/imports")
    accepted = service.upload(hospitals_csv(2), path="/hospitals/imports",
                              headers={"Authorization": "Bearer s3cret"})

    assert refused.status_code == 401
    assert accepted.status_code == 202


# -- durability: a killed service, two workers ------------------------------------------------


@pytest.mark.slow
def test_a_killed_import_reads_interrupted_on_every_worker_and_resumes_creating_each_row_once(
        start_service, upstream):
    sim = upstream.sim
    sim.delay = 0.3
    # 10 creations a second: the kill finds batches done, rows in flight and batches not started.
    paced = {"BULKPROC_CREATE_RATE": "10/1", "BULKPROC_CONCURRENCY": "10"}
    service = start_service(**paced)
    response = service.post("/hospitals/imports", files={"file": ("big.csv", hospitals_csv(60).encode(), "text/csv")})
    assert response.status_code == 202, response.text
    import_id = response.json()["import_id"]

    wait_until(lambda: sim.stats["created"] >= 15 and sim.stats["create_requests"] > sim.stats["created"],
               timeout=20, what="some creations landed and the next in flight")
    service.kill()
    # A creation the kill cut off mid-send is counted on arrival but never stored: wait for the
    # directory to be idle, not for the two counts to meet.
    assert sim.wait_idle(5), "the directory still had creations in flight 5 s after the kill"
    assert 15 <= sim.stats["created"] < 60

    restarted = start_service(**paced)
    interrupted = wait_for(restarted, import_id, {"interrupted"}, timeout=10)
    assert interrupted["processed_hospitals"] < 60
    assert interrupted["estimated_seconds_remaining"] is None and interrupted["processing_time_seconds"] > 0
    for pid in restarted.worker_pids():  # any worker answers for any import: it is all in the store
        with restarted.only(pid):
            assert restarted.get(f"/hospitals/imports/{import_id}").json()["status"] == "interrupted"

    resumed = restarted.post(f"/hospitals/imports/{import_id}/resume")
    assert resumed.status_code == 202, resumed.text
    document = wait_for(restarted, import_id, timeout=30, what="the resumed import")

    assert document["status"] == "completed", document
    assert_each_row_once_and_active(upstream, document)
    # At most once: what had landed before the kill was found, not posted again.
    assert sim.stats["created"] == 60
    assert document["processing_time_seconds"] >= interrupted["processing_time_seconds"]


# -- the upload page (headless Chromium) ---------------------------------------------------

@pytest.fixture
def page_service(make_app, serve_app):
    """A page in front of a service whose limiter lets 10 creations through per second."""
    return serve_app(make_app(CREATE_RATE=(10, 1.0), CONCURRENCY=10))


def test_a_file_over_20_rows_becomes_an_import_with_overall_and_per_batch_progress(
        browser, page_service, tmp_path, upstream):
    browser.set_window_size(400, 900)
    try:
        browser.get(page_service.url + "/")
        choose_file(browser, tmp_path, hospitals_csv(45))
        browser.find_element("id", "check").click()
        wait_for_text(browser, "validation-result", "Valid, 45 hospitals. It will be imported in 3 batches")

        browser.find_element("id", "create").click()
        wait_for_text(browser, "import-remaining", "left at the directory's rate limit")
        assert browser.find_element("id", "import-cancel").is_displayed()
        wait_for_text(browser, "import-summary", "Import completed")
        assert overflow(browser) == {"page": 0, "elements": []}
    finally:
        browser.set_window_size(1000, 900)

    batches = table(browser, "import-batches")
    # Lines of the file (its header is line 1), the page's one numbering of rows.
    assert [b[:3] for b in batches] == [["2–21", "completed", "20 of 20"], ["22–41", "completed", "20 of 20"],
                                        ["42–46", "completed", "5 of 5"]]
    assert browser.find_element("id", "import-counter").text == "45 of 45 rows done: 45 created."
    assert browser.find_element("id", "import-progress").get_attribute("value") == "45"
    assert browser.find_element("id", "import-remaining").text == ""
    assert not browser.find_element("id", "import-cancel").is_displayed()
    assert browser.find_element("id", "import-download-results").get_attribute("href").endswith("/results.csv")
    assert not browser.find_element("id", "batch").is_displayed()
    assert len(upstream.sim.hospitals()) == 45


def test_the_page_cancels_an_import_and_resumes_it(browser, page_service, tmp_path, upstream):
    browser.get(page_service.url + "/")
    choose_file(browser, tmp_path, hospitals_csv(60))
    browser.find_element("id", "create").click()
    wait_until(lambda: len(upstream.sim.hospitals()) >= 10, timeout=10, what="the first creations")

    browser.find_element("id", "import-cancel").click()
    wait_for_text(browser, "import-summary", "Import cancelled")

    assert "cancelled" in [b[1] for b in table(browser, "import-batches")]
    created = len(upstream.sim.hospitals())
    assert created < 60
    assert browser.find_element("id", "import-download-failed").is_displayed()
    browser.find_element("id", "import-resume").click()
    wait_for_text(browser, "import-summary", "Import completed")
    assert len(upstream.sim.hospitals()) == 60
