"""POST /hospitals/bulk end to end: the app on a real server against the simulator on loopback."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import hospitals_csv


def assert_each_created_once(sim, document) -> None:
    stored = sim.hospitals(document["batch_id"])
    assert sorted(h["name"] for h in stored) == sorted(r["name"] for r in document["hospitals"])
    assert {h["id"] for h in stored} == {r["hospital_id"] for r in document["hospitals"]}


def assert_completed(sim, document, rows: int) -> None:
    assert document["status"] == "completed"
    assert document["batch_activated"] is True
    assert (document["total_hospitals"], document["processed_hospitals"], document["failed_hospitals"]) == (rows, rows, 0)
    assert [r["status"] for r in document["hospitals"]] == ["created_and_activated"] * rows
    assert_each_created_once(sim, document)
    assert all(h["active"] for h in sim.hospitals(document["batch_id"]))


def test_twenty_rows_are_created_concurrently_and_activated(service, upstream):
    response = service.upload(hospitals_csv(20))

    assert response.status_code == 200
    document = response.json()
    assert_completed(upstream.sim, document, 20)
    assert [r["row"] for r in document["hospitals"]] == list(range(1, 21))
    assert [r["name"] for r in document["hospitals"]] == [f"Hospital {n}" for n in range(1, 21)]
    assert isinstance(document["processing_time_seconds"], float)
    assert upstream.sim.stats["activations"] == 1
    assert upstream.sim.stats["max_in_flight"] >= 10  # the rows really went up together


def test_result_document_has_the_contract_fields_in_order(service):
    document = service.upload(hospitals_csv(1)).json()

    assert list(document) == ["batch_id", "status", "total_hospitals", "processed_hospitals", "failed_hospitals",
                              "processing_time_seconds", "batch_activated", "error", "hospitals", "created_at",
                              "updated_at"]
    assert list(document["hospitals"][0]) == ["row", "hospital_id", "name", "status", "error"]


@pytest.mark.parametrize("phone", [True, False])
def test_one_row_with_and_without_phone(service, upstream, phone):
    document = service.upload(hospitals_csv(1, phone=phone)).json()

    assert_completed(upstream.sim, document, 1)
    stored = upstream.sim.hospitals(document["batch_id"])[0]
    assert stored["phone"] == ("555-010-0001" if phone else None)
    assert stored["creation_batch_id"] == document["batch_id"]


FAULTS = ["error_500", "store_then_500", "store_then_drop", "store_then_hang", "html_502", "rate_limit"]


@pytest.mark.parametrize("kind", FAULTS)
def test_create_faults_never_duplicate_or_lose_a_row(service, upstream, kind):
    upstream.sim.add_fault("create", kind, times=3, after=2)

    document = service.upload(hospitals_csv(8)).json()

    assert upstream.sim.stats["faults_fired"] == 3
    assert_completed(upstream.sim, document, 8)


@pytest.mark.parametrize("kind", ["error_500", "store_then_500", "store_then_drop", "html_502", "rate_limit"])
def test_activation_faults_are_settled_by_reading_the_batch(service, upstream, kind):
    upstream.sim.add_fault("activate", kind)

    document = service.upload(hospitals_csv(3)).json()

    assert_completed(upstream.sim, document, 3)


def test_reconcile_read_faults_are_retried(service, upstream):
    upstream.sim.add_fault("create", "store_then_500", times=2)
    upstream.sim.add_fault("list_batch", "html_502", times=2)

    document = service.upload(hospitals_csv(4)).json()

    assert_completed(upstream.sim, document, 4)


def test_a_row_the_directory_refuses_leaves_the_batch_partially_failed(service, upstream):
    upstream.sim.add_fault("create", "reject_422", after=1)

    document = service.upload(hospitals_csv(3)).json()

    assert document["status"] == "partially_failed"
    assert document["batch_activated"] is False
    failed = [r for r in document["hospitals"] if r["status"] == "failed"]
    assert len(failed) == 1 and "refused it (422)" in failed[0]["error"]
    assert [r["status"] for r in document["hospitals"] if r is not failed[0]] == ["created", "created"]
    assert (document["processed_hospitals"], document["failed_hospitals"]) == (2, 1)
    assert not any(h["active"] for h in upstream.sim.hospitals(document["batch_id"]))
    assert upstream.sim.stats["activate_requests"] == 0


def test_two_uploads_at_once_make_two_complete_batches(service, upstream):
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(service.upload, hospitals_csv(20, prefix=p)) for p in ("North", "South")]
        documents = [f.result().json() for f in futures]

    assert documents[0]["batch_id"] != documents[1]["batch_id"]
    for document in documents:
        assert_completed(upstream.sim, document, 20)
    assert len(upstream.sim.hospitals()) == 40


def test_an_unreachable_directory_fails_every_row_and_says_why(make_app, serve_app):
    service = serve_app(make_app(HOSPITAL_API_BASE_URL="http://127.0.0.1:9", MAX_ATTEMPTS=2))

    document = service.upload(hospitals_csv(2)).json()

    assert document["status"] == "failed"
    assert all(r["status"] == "failed" and "could not connect" in r["error"] for r in document["hospitals"])
