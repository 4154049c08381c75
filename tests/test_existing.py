"""existing=skip: rows the directory already holds (active, same name and address) are not created."""

from __future__ import annotations

import csv
import io

import pytest
import requests
import responses
from responses.registries import OrderedRegistry

from bulkproc.errors import GaveUp
from bulkproc.files.rules import HospitalRow, parse
from bulkproc.states import RowStatus
from bulkproc.upstream.client import DirectoryClient, Hospital
from bulkproc.work.reconcile import in_directory
from tests.test_directory_client import CountingPacer

CSV = ("name,address,phone\n"
       "General Hospital,1 Main St,555-0100\n"
       "Saint Mary,2 Elm St,555-0101\n"
       "Old Clinic,3 Oak Ave,555-0102\n"
       "New Hospital,4 Pine Rd,555-0103\n")


def _seed(upstream, name: str, address: str, *, active: bool = True, phone: str | None = None) -> int:
    """A hospital in the directory: active when created without a batch id, inactive with one."""
    body = {"name": name, "address": address, "phone": phone,
            "creation_batch_id": None if active else "0b0b0b0b-1c1c-4d4d-8e8e-9f9f9f9f9f9f"}
    return requests.post(f"{upstream.url}/hospitals/", json=body, timeout=5).json()["id"]


def _seed_directory(upstream) -> dict[str, int]:
    # Matched though spelled differently (case, runs of spaces, another phone); "Old Clinic" is there
    # but inactive, so it is created.
    return {"general": _seed(upstream, "GENERAL  hospital", "1 main st", phone="999"),
            "mary": _seed(upstream, "Saint Mary", "2  Elm ST"),
            "old": _seed(upstream, "Old Clinic", "3 Oak Ave", active=False)}


def test_skip_leaves_rows_already_in_the_directory_and_creates_the_others(service, upstream):
    seeded = _seed_directory(upstream)

    document = service.upload(CSV, existing="skip").json()

    assert document["status"] == "completed" and document["batch_activated"] is True
    assert [(r["status"], r["hospital_id"]) for r in document["hospitals"][:2]] == [
        ("already_in_directory", seeded["general"]), ("already_in_directory", seeded["mary"])]
    assert [r["status"] for r in document["hospitals"][2:]] == ["created_and_activated"] * 2
    assert document["processed_hospitals"] == 4 and document["failed_hospitals"] == 0
    created = upstream.sim.hospitals(document["batch_id"])
    assert sorted(h["name"] for h in created) == ["New Hospital", "Old Clinic"]
    assert all(h["active"] for h in created)
    assert upstream.sim.stats["directory_reads"] == 1
    results = list(csv.DictReader(io.StringIO(service.get(f"/hospitals/bulk/{document['batch_id']}/results.csv").text)))
    assert [r["status"] for r in results][:2] == ["already_in_directory"] * 2
    assert service.get(f"/hospitals/bulk/{document['batch_id']}/failed.csv").text.count("\n") == 1


def test_without_skip_every_row_is_created_and_the_directory_is_not_read(service, upstream):
    _seed_directory(upstream)

    document = service.upload(CSV).json()

    assert [r["status"] for r in document["hospitals"]] == ["created_and_activated"] * 4
    assert upstream.sim.stats["directory_reads"] == 0


def test_a_batch_wholly_in_the_directory_creates_and_activates_nothing(service, upstream):
    _seed(upstream, "General Hospital", "1 Main St")
    seeding = upstream.sim.stats["create_requests"]

    document = service.upload("General Hospital,1 Main St\n", existing="skip").json()

    assert document["status"] == "completed" and document["batch_activated"] is False
    assert document["hospitals"][0]["status"] == "already_in_directory"
    assert upstream.sim.stats["create_requests"] == seeding and upstream.sim.stats["activate_requests"] == 0


def test_rolling_back_a_skip_batch_leaves_the_directorys_own_hospitals(service, upstream):
    seeded = _seed(upstream, "General Hospital", "1 Main St")
    document = service.upload("General Hospital,1 Main St\nOther,9 Side St\n", existing="skip").json()

    rolled = service.delete(f"/hospitals/bulk/{document['batch_id']}").json()

    assert [r["status"] for r in rolled["hospitals"]] == ["already_in_directory", "deleted"]
    assert [h["id"] for h in upstream.sim.hospitals()] == [seeded]


def test_resuming_a_skip_batch_creates_only_its_failed_rows(service, upstream):
    seeded = _seed(upstream, "General Hospital", "1 Main St")
    upstream.sim.add_fault("create", "reject_422")
    first = service.upload("General Hospital,1 Main St\nOther,9 Side St\n", existing="skip").json()
    assert first["status"] == "partially_failed" and first["hospitals"][0]["status"] == "already_in_directory"
    creations = upstream.sim.stats["create_requests"]

    document = service.post(f"/hospitals/bulk/{first['batch_id']}/resume").json()

    assert document["status"] == "completed"
    assert [(r["status"], r["hospital_id"]) for r in document["hospitals"]][0] == ("already_in_directory", seeded)
    assert upstream.sim.stats["create_requests"] == creations + 1
    assert [h["name"] for h in upstream.sim.hospitals(first["batch_id"])] == ["Other"]


def test_validate_with_skip_names_the_rows_already_there(service, upstream):
    seeded = _seed_directory(upstream)

    checked = service.upload(CSV, path="/hospitals/bulk/validate", existing="skip").json()
    plain = service.upload(CSV, path="/hospitals/imports/validate").json()

    assert checked["valid"] is True
    assert [r["already_in_directory"] for r in checked["hospitals"]] == [seeded["general"], seeded["mary"],
                                                                          None, None]
    assert all("already_in_directory" not in r for r in plain["hospitals"])
    assert upstream.sim.stats["directory_reads"] == 1 and upstream.sim.stats["create_requests"] == 3  # the seeds


def test_a_malformed_directory_listing_fails_the_upload_and_creates_nothing(app, service, upstream):
    upstream.sim.add_fault("list", "not_a_list", times=app.config["MAX_ATTEMPTS"])

    answer = service.upload(CSV, existing="skip")

    assert answer.status_code == 502
    assert "nothing was created" in answer.json()["error"]
    assert upstream.sim.stats["directory_reads"] == app.config["MAX_ATTEMPTS"]
    assert upstream.sim.stats["create_requests"] == 0
    assert service.get("/hospitals/bulk").json()["batches"] == []


def test_an_idempotency_key_is_bound_to_the_existing_choice(service, upstream):
    first = service.upload(CSV, existing="skip", headers={"Idempotency-Key": "k-1"})
    again = service.upload(CSV, existing="skip", headers={"Idempotency-Key": "k-1"})
    other = service.upload(CSV, headers={"Idempotency-Key": "k-1"})

    assert again.json()["batch_id"] == first.json()["batch_id"]
    assert upstream.sim.stats["directory_reads"] == 1  # the repeat read nothing upstream
    assert other.status_code == 422


def test_an_idempotency_key_is_bound_to_how_the_file_is_read(service, upstream):
    text = "Facility,Street,Notes\nGeneral,1 Main St,x\n"
    first = service.upload(text, headers={"Idempotency-Key": "k-2"})
    again = service.upload(text, headers={"Idempotency-Key": "k-2"})
    remapped = service.upload(text, headers={"Idempotency-Key": "k-2"},
                              columns='{"Facility": "name", "Street": "ignore", "Notes": "address"}')

    assert first.status_code == 200 and again.json()["batch_id"] == first.json()["batch_id"]
    assert remapped.status_code == 422  # other rows from the same bytes: not a repeat
    assert upstream.sim.stats["create_requests"] == 1


def test_an_unknown_existing_value_is_refused_before_anything_happens(service, upstream):
    answer = service.upload(CSV, existing="maybe")

    assert answer.status_code == 400 and answer.json()["details"][0]["column"] == "existing"
    assert upstream.sim.stats["create_requests"] == 0


def test_an_import_with_skip_counts_the_rows_already_there_as_processed(make_app, serve_app, upstream):
    app = make_app(MAX_ROWS=2)
    service = serve_app(app)
    _seed_directory(upstream)

    import_id = service.upload(CSV, path="/hospitals/imports", existing="skip").json()["import_id"]
    for _ in app.extensions["bulkproc.imports"].watch(import_id, 5.0):
        pass

    document = service.get(f"/hospitals/imports/{import_id}").json()
    assert document["status"] == "completed" and document["processed_hospitals"] == 4
    assert [b["batch_activated"] for b in document["batches"]] == [False, True]
    assert upstream.sim.stats["directory_reads"] == 1 and upstream.sim.stats["create_requests"] == 3 + 2


def test_rows_found_in_the_directory_are_marked_in_whichever_batch_of_the_import_holds_them(make_app):
    imports = make_app(MAX_ROWS=2).extensions["bulkproc.imports"]
    rows = [HospitalRow(n, f"Hospital {n}", f"{n} Main St", None) for n in range(1, 8)]

    # The rows come once, as an accepted file's do; the batches are [1, 2] [3, 4] [5, 6] [7].
    import_id, new = imports.start(iter(rows), already_there={1: 101, 4: 104, 5: 105, 7: 107})

    batches = [imports.store.get_batch(batch_id) for batch_id in imports.store.import_batch_ids(import_id)]
    assert new and [[r.row for r in b.rows] for b in batches] == [[1, 2], [3, 4], [5, 6], [7]]
    there, pending = RowStatus.ALREADY_IN_DIRECTORY, RowStatus.PENDING
    assert {r.row: (r.status, r.hospital_id) for b in batches for r in b.rows} == {
        1: (there, 101), 2: (pending, None), 3: (pending, None), 4: (there, 104), 5: (there, 105),
        6: (pending, None), 7: (there, 107)}


# -- the client's reading of the directory, at the HTTP seam -------------------------------------

DIRECTORY = "http://directory.test/hospitals/"


def _hospital(id_: int, **fields) -> dict:
    return {"id": id_, "name": "General", "address": "1 Main St", "phone": None, "creation_batch_id": None,
            "active": True, "created_at": "2026-11-25T10:00:00.000001", **fields}


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_the_directory_listing_is_paced_and_a_wrong_shape_is_tried_again_not_trusted():
    pacer = CountingPacer()
    client = DirectoryClient("http://directory.test", max_attempts=3, sleep=lambda _s: None, pacer=pacer)
    responses.get(DIRECTORY, json={"hospitals": []})  # not a list
    responses.get(DIRECTORY, json=[{"id": 1, "name": "General"}])  # not hospitals
    responses.get(DIRECTORY, json=[_hospital(1), _hospital("2", active=False)])
    try:
        listing = client.list_hospitals()
    finally:
        client.close()

    assert [(h.id, h.active) for h in listing] == [(1, True), (2, False)]
    assert len(pacer.acquired) == 3


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_directory_listing_never_well_formed_gives_up():
    client = DirectoryClient("http://directory.test", max_attempts=2, sleep=lambda _s: None)
    responses.get(DIRECTORY, body="<html>busy</html>")
    responses.get(DIRECTORY, json={"detail": "nope"})
    with pytest.raises(GaveUp):
        client.list_hospitals()
    client.close()


def test_matching_uses_the_duplicate_rules_and_only_active_hospitals():
    rows = parse("Café  Royal,1 MAIN st\nCafe\u0301 Royal,2 Main St\nGone,3 Main St\n".encode())
    directory = [Hospital(5, "café royal", "1 main  st", "1", True, None),
                 Hospital(4, "Café Royal", "1 Main St", None, True, "x"),
                 Hospital(6, "Café Royal", "2 Main St", None, False, None),
                 Hospital(7, "Gone", "3 Main St", None, False, None)]

    assert in_directory(rows, directory) == {1: 4}
