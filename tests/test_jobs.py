"""A batch's run at the HTTP seam: what is asked of the directory, in order."""

from __future__ import annotations

import pytest
import responses
from responses.registries import OrderedRegistry

from bulkproc.files.rules import HospitalRow
from bulkproc.store import Store
from bulkproc.upstream.client import DirectoryClient
from bulkproc.work.batches import Jobs

BASE = "http://directory.test"


def hospital(id_: int, batch_id: str, active: bool = False) -> dict:
    return {"id": id_, "name": "General", "address": "1 Main St", "phone": None, "creation_batch_id": batch_id,
            "active": active, "created_at": "2026-11-25T10:00:00.000001"}


@pytest.fixture
def jobs(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/jobs.sqlite3")
    jobs = Jobs(store, DirectoryClient(BASE, sleep=lambda s: None), concurrency=2, settle_seconds=0.0)
    yield jobs
    jobs.close()
    store.close()


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_duplicate_landing_during_activation_is_deleted_by_the_check_after_it(jobs):
    batch_id, _ = jobs.start([HospitalRow(1, "General", "1 Main St", None)])
    listing = f"{BASE}/hospitals/batch/{batch_id}"
    responses.get(f"{BASE}/", json={"status": "OK"})
    responses.post(f"{BASE}/hospitals/", json=hospital(7, batch_id))
    responses.get(listing, json=[hospital(7, batch_id)])  # before activating: nothing extra
    responses.patch(f"{listing}/activate", json={"activated_count": 2, "message": "activated"})
    responses.get(listing, json=[hospital(7, batch_id, True), hospital(9, batch_id, True)])
    delete = responses.delete(f"{BASE}/hospitals/9", status=204)

    jobs.run(batch_id)

    document = jobs.document(batch_id)
    assert document.status == "completed"
    assert document.hospitals[0].hospital_id == 7
    assert delete.call_count == 1
