"""Small points of the contract that once ended in a 500 or said too little, over real HTTP."""

from __future__ import annotations

import io
import time
import uuid

import pytest

from bulkproc.errors import StoreRefusedValue
from bulkproc.files.rules import HospitalRow
from bulkproc.store import Run, Store
from tests.postgres import postgres_url, store_url  # noqa: F401
from tests.support import hospitals_csv


@pytest.mark.parametrize("limit", ["²", "١٠", "０５", "1e1", "-1", "0", "101", "", "5 "])
def test_the_listing_limit_takes_ascii_digits_from_1_to_100_only(service, limit):
    response = service.get("/hospitals/bulk", params={"limit": limit})
    assert response.status_code == 400, response.text
    assert response.json()["details"][0]["column"] == "limit"


def test_the_listing_limit_in_range_is_used(service, upstream):
    for n in range(3):
        service.upload(hospitals_csv(1, prefix=f"H{n}"))
    assert len(service.get("/hospitals/bulk", params={"limit": "2"}).json()["batches"]) == 2


@pytest.mark.parametrize(("limit", "words"), [(1000, "1000 bytes"), (1536, "1536 bytes (1.5 KiB)")])
def test_the_413_states_the_limit(make_app, serve_app, upstream, limit, words):
    service = serve_app(make_app(MAX_UPLOAD_BYTES=limit))
    response = service.upload("name,address\n" + "A,B\n" * 500)
    assert response.status_code == 413
    assert f"the limit is {words}" in response.json()["error"]
    assert upstream.sim.stats["create_requests"] == 0


def test_the_413_names_mebibytes_at_the_default_size(make_app, serve_app):
    service = serve_app(make_app(MAX_UPLOAD_BYTES=2**20))
    response = service.upload(b"name,address\n" + b"A,B\n" * 300_000)
    assert response.status_code == 413
    assert "1048576 bytes (1 MiB)" in response.json()["error"]


def test_every_answer_of_a_batch_has_the_same_fields_the_synchronous_200_included(service, upstream):
    created = service.upload(hospitals_csv(2))
    assert created.status_code == 200
    batch_id = created.json()["batch_id"]
    fetched = service.get(f"/hospitals/bulk/{batch_id}").json()
    resumed = service.post(f"/hospitals/bulk/{batch_id}/resume")  # completed: answered at once
    assert list(created.json()) == list(fetched) == list(resumed.json())
    assert created.json()["created_at"] == fetched["created_at"]


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
class TestNulOnPostgres:
    """PostgreSQL text cannot hold NUL: no path may carry one to the store as a 500."""

    @pytest.fixture
    def on_postgres(self, make_app, serve_app, store_url):
        return serve_app(make_app(DATABASE_URL=store_url))

    def test_a_nul_in_a_name_is_refused_with_json_before_any_upstream_call(self, on_postgres, upstream):
        response = on_postgres.upload("name,address\nGeneral\x00Hospital,1 Main St\n")
        assert response.status_code == 422, response.text
        assert set(response.json()) == {"error", "details"}
        assert upstream.sim.stats["create_requests"] == 0

    def test_a_nul_in_the_idempotency_key_is_a_400(self, on_postgres, upstream):
        # requests refuses to send such a header, so this one goes through the app's test client.
        client = on_postgres.app.test_client()
        response = client.post("/hospitals/bulk", headers={"Idempotency-Key": "key\x00one"},
                               data={"file": (io.BytesIO(hospitals_csv(1).encode()), "h.csv")})
        assert response.status_code == 400
        assert upstream.sim.stats["create_requests"] == 0

    def test_the_store_refuses_a_nul_as_a_value_it_cannot_keep(self, store_url):
        store = Store(store_url)
        try:
            with pytest.raises(StoreRefusedValue):
                store.insert_batch(str(uuid.uuid4()), [HospitalRow(1, "A\x00B", "1 Main St", None)],
                                   owner="me", token="t", lease_until=time.time() + 60)
        finally:
            store.close()

    def test_a_directory_message_with_a_nul_is_stored_without_it(self, store_url):
        store = Store(store_url)
        try:
            batch_id, _ = store.insert_batch(str(uuid.uuid4()), [HospitalRow(1, "A", "1 Main St", None)],
                                             owner="me", token="t", lease_until=time.time() + 60)
            store.record_row_failed(Run(batch_id, "t"), 1, "refused: bad\x00name")
            assert store.get_batch(batch_id).rows[0].error == "refused: bad\ufffdname"
        finally:
            store.close()
