"""The HTTP contract: request errors, validation, listing, async mode, idempotency, tokens."""

from __future__ import annotations

import io
import json

import pytest

from tests.support import hospitals_csv


def post_csv(client, data: bytes | str, path: str = "/hospitals/bulk", **kwargs):
    data = data.encode() if isinstance(data, str) else data
    return client.post(path, data={"file": (io.BytesIO(data), "hospitals.csv")}, **kwargs)


def assert_error_shape(response, status: int) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "details"} and body["error"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


@pytest.mark.parametrize("path", ["/hospitals/bulk", "/hospitals/bulk/validate"])
@pytest.mark.parametrize("send,words", [
    (lambda c, p: c.post(p, data={"other": "x"}, content_type="multipart/form-data"), "no 'file' part"),
    (lambda c, p: c.post(p, data={"file": (io.BytesIO(b"a,b"), "")}), "no file name"),
    (lambda c, p: c.post(p, data="name,address\nA,B\n", content_type="text/csv"), "multipart/form-data"),
], ids=["no-file-part", "empty-filename", "not-multipart"])
def test_malformed_requests_get_400(client, upstream, path, send, words):
    body = assert_error_shape(send(client, path), 400)

    assert words in body["error"]
    assert upstream.sim.stats["create_requests"] == 0


def test_refused_csv_gets_422_with_every_problem_and_no_upstream_call(client, upstream):
    body = assert_error_shape(post_csv(client, "name,address,phone\nA,,\nB,2 Elm,call me\nA,1 Oak\na,1 oak\n"), 422)

    assert [(d["row"], d["column"]) for d in body["details"]] == [(1, "address"), (2, "phone"), (4, None)]
    assert upstream.sim.stats["create_requests"] == upstream.sim.stats["batch_reads"] == 0
    assert client.get("/hospitals/bulk").get_json()["batches"] == []


def test_too_many_rows_is_refused(client, upstream):
    body = assert_error_shape(post_csv(client, hospitals_csv(21)), 422)

    assert "21" in body["details"][0]["message"] and "20" in body["details"][0]["message"]
    assert upstream.sim.stats["create_requests"] == 0


def test_an_upload_over_the_size_limit_gets_json_413(make_app, upstream):
    client = make_app(MAX_UPLOAD_BYTES=1000).test_client()

    body = assert_error_shape(post_csv(client, "name,address\n" + "A,B\n" * 400), 413)

    assert "too large" in body["error"]
    assert upstream.sim.stats["create_requests"] == 0


def test_unknown_paths_and_wrong_methods_answer_json(client):
    assert_error_shape(client.get("/no/such/page"), 404)
    response = client.put("/hospitals/bulk")
    assert_error_shape(response, 405)
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize("batch_id", ["6a1f0b1e-0000-4000-8000-000000000000", "not-a-uuid"])
def test_an_unknown_batch_is_404(client, batch_id):
    for response in (client.get(f"/hospitals/bulk/{batch_id}"), client.delete(f"/hospitals/bulk/{batch_id}"),
                     client.post(f"/hospitals/bulk/{batch_id}/resume"), client.get(f"/hospitals/bulk/{batch_id}/events")):
        assert_error_shape(response, 404)


def test_validate_reports_rows_and_problems_without_calling_upstream(client, upstream):
    body = post_csv(client, "Name,Address\nGeneral,1 Main St\n,2 Elm\n", "/hospitals/bulk/validate").get_json()

    assert body["valid"] is False
    assert body["errors"] == [{"row": 2, "column": "name", "message": body["errors"][0]["message"], "line": 3}]
    assert body["hospitals"][0] == {"row": 1, "name": "General", "address": "1 Main St", "phone": None}
    assert upstream.sim.stats == {**upstream.sim.stats, "create_requests": 0, "batch_reads": 0}


def test_validate_accepts_a_good_file(client):
    body = post_csv(client, hospitals_csv(20), "/hospitals/bulk/validate").get_json()

    assert (body["valid"], body["total_hospitals"], body["errors"]) == (True, 20, [])


def test_healthz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


@pytest.mark.parametrize("ask", [{"headers": {"Prefer": "respond-async"}}, {"query_string": {"async": "1"}}],
                         ids=["prefer-header", "async-field"])
def test_async_upload_answers_202_with_location_and_finishes_in_the_background(client, app, upstream, ask):
    response = post_csv(client, hospitals_csv(3), **ask)

    assert response.status_code == 202
    document = response.get_json()
    assert response.headers["Location"] == f"/hospitals/bulk/{document['batch_id']}"
    assert document["status"] in ("queued", "processing")
    app.extensions["bulkproc"].wait_until_final(document["batch_id"])
    final = client.get(response.headers["Location"]).get_json()
    assert final["status"] == "completed"
    assert final["created_at"].endswith("Z") and final["updated_at"] >= final["created_at"]


def test_the_same_idempotency_key_and_file_never_start_a_second_batch(client, upstream):
    headers = {"Idempotency-Key": "upload-2026-11-25-a"}
    first = post_csv(client, hospitals_csv(2), headers=headers).get_json()
    again = post_csv(client, hospitals_csv(2), headers=headers)

    assert again.status_code == 200
    assert again.get_json()["batch_id"] == first["batch_id"]
    assert upstream.sim.stats["create_requests"] == 2
    assert len(client.get("/hospitals/bulk").get_json()["batches"]) == 1


def test_the_same_idempotency_key_with_another_file_is_refused(client):
    headers = {"Idempotency-Key": "k1"}
    post_csv(client, hospitals_csv(1), headers=headers)

    body = assert_error_shape(post_csv(client, hospitals_csv(2), headers=headers), 422)
    assert "different file" in body["error"]


def test_a_bad_idempotency_key_is_400(client):
    assert_error_shape(post_csv(client, hospitals_csv(1), headers={"Idempotency-Key": "x" * 201}), 400)


def test_listing_is_newest_first_without_rows_and_limited(client):
    ids = [post_csv(client, hospitals_csv(1, prefix=f"H{n}")).get_json()["batch_id"] for n in range(3)]

    listed = client.get("/hospitals/bulk?limit=2").get_json()["batches"]
    assert [b["batch_id"] for b in listed] == ids[::-1][:2]
    assert "hospitals" not in listed[0] and listed[0]["status"] == "completed"
    assert (listed[0]["total_hospitals"], listed[0]["processed_hospitals"], listed[0]["failed_hospitals"]) == (1, 1, 0)
    assert_error_shape(client.get("/hospitals/bulk?limit=101"), 400)
    assert_error_shape(client.get("/hospitals/bulk?limit=zero"), 400)


def test_an_unexpected_error_is_a_plain_500_without_internals(app, client, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("/secret/path/store.py exploded")

    monkeypatch.setattr(app.extensions["bulkproc"], "recent", broken)
    body = assert_error_shape(client.get("/hospitals/bulk"), 500)
    assert "secret" not in json.dumps(body)
