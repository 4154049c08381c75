"""Hostile PATCH bodies (issue 14): none may raise past the handler, and no answer exceeds 64 KiB.

Each body once ended in a 500 (a RecursionError, a UnicodeEncodeError in the store) or in an
answer ten times its request; they go over real HTTP, to the app on SQLite.
"""

from __future__ import annotations

import json
import uuid

import pytest

from bulkproc.files import rules
from bulkproc.store import Run
from tests.support import hospitals_csv

ANSWER_LIMIT = 64 * 1024


@pytest.fixture
def failed_row(service):
    """(service, url of row 2 of a partially failed batch)."""
    store = service.app.extensions["bulkproc"].store
    batch_id, _ = store.insert_batch(str(uuid.uuid4()), rules.parse(hospitals_csv(3).encode()),
                                     owner="test", token="t", lease_until=0.0)
    for n in (1, 3):
        store.record_created(Run(batch_id, "t"), n, 100 + n)
    store.record_row_failed(Run(batch_id, "t"), 2, "The directory refused the row: name")
    store.set_status(Run(batch_id, "t"), "partially_failed")
    return service, f"{service.url}/hospitals/bulk/{batch_id}/rows/2"


def patch(failed_row, body: bytes | str, **headers):
    service, url = failed_row
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return service.http.patch(url, data=data, headers={"Content-Type": "application/json", **headers}, timeout=30)


HOSTILE = {
    "nested_50000_deep": ("[" * 50_000 + "]" * 50_000, 413),
    "nested_30000_deep": ("[" * 30_000 + "]" * 30_000, 400),
    "nested_50000_deep_unclosed": ("[" * 50_000, 400),
    "nested_in_a_field": ('{"name": ' + "[" * 30_000 + "]" * 30_000 + "}", 400),
    "objects_nested_deep": ('{"a":' * 10_000 + "1" + "}" * 10_000, 400),
    "a_value_nested_a_little": ('{"name": [[["x"]]]}', 422),
    "lone_surrogate_in_a_value": ('{"name": "\\ud800"}', 422),
    "raw_lone_surrogate_bytes": ('{"name": "\ud800"}', 400),
    "lone_surrogate_in_a_key": ('{"\\udfff": "x"}', 422),
    "lone_surrogate_in_the_phone": ('{"phone": "555\\ud83d0100"}', 422),
    "a_number_of_60000_digits": ('{"phone": ' + "9" * 60_000 + "}", 422),
    "an_infinite_number": ('{"phone": 1e999999}', 422),
    "nan": ('{"phone": NaN}', 422),
    "a_duplicate_key": ('{"name": "A", "name": "B"}', 400),
    "not_utf8": (b'{"name": "\xff"}', 400),
    "a_byte_order_mark": (b'\xef\xbb\xbf{"name": "A"}', 400),
    "an_array": ("[]", 400),
    "a_string": ('"x"', 400),
    "null": ("null", 400),
    "true": ("true", 400),
    "empty": ("", 400),
    "an_empty_object": ("{}", 422),
    "a_nul_in_a_value": ('{"name": "A\\u0000B"}', 422),
    "a_bidi_override": ('{"address": "1 Main\\u202e St"}', 422),
    "thousands_of_unknown_keys": ("{" + ",".join(f'"k{n}": "x"' for n in range(4_000)) + "}", 422),
    "one_60_kb_key": ('{"' + "k" * 60_000 + '": "x"}', 422),
    "one_60_kb_value": ('{"name": "' + "n" * 60_000 + '"}', 422),
    "a_60_kb_astral_key": ('{"' + "\\ud83c\\udfe5" * 5_000 + '": "x"}', 422),
}


@pytest.mark.parametrize("body, status", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_body_is_a_small_json_refusal(failed_row, body, status):
    response = patch(failed_row, body)
    assert response.status_code == status, response.text[:500]
    assert response.headers["Content-Type"] == "application/json"
    assert len(response.content) < ANSWER_LIMIT
    document = response.json()
    assert set(document) == {"error", "details"}
    assert len(document["details"]) <= 101


def test_thousands_of_unknown_keys_list_100_then_how_many_more(failed_row):
    body = "{" + ",".join(f'"k{n}": "x"' for n in range(4_000)) + "}"
    details = patch(failed_row, body).json()["details"]
    assert len(details) == 101
    assert details[-1]["column"] is None and "3900 more" in details[-1]["message"]


@pytest.mark.parametrize("size", [64 * 1024 + 1, 900 * 1024])
def test_a_body_over_64_kib_is_a_413(failed_row, size):
    body = '{"' + "k" * (size - 8) + '": "x"}'
    response = patch(failed_row, body)
    assert response.status_code == 413
    assert "65536 bytes (64 KiB)" in response.json()["error"]


def test_a_chunked_body_over_64_kib_is_a_413(failed_row):
    service, url = failed_row
    chunks = (b'{"name": "' if n == 0 else b"n" * 1024 for n in range(100))
    response = service.http.patch(url, data=chunks, headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 413


def test_a_body_of_exactly_64_kib_is_read(failed_row):
    head, tail = '{"name": "', '"}'
    body = head + "n" * (64 * 1024 - len(head) - len(tail)) + tail
    response = patch(failed_row, body)
    assert response.status_code == 422  # read, and refused for its length
    assert response.json()["details"][0]["column"] == "name"


def test_a_null_phone_clears_it(failed_row):
    response = patch(failed_row, json.dumps({"phone": None}))
    assert response.status_code == 200, response.text


def test_the_service_still_answers_after_every_hostile_body(failed_row):
    for body, _ in HOSTILE.values():
        patch(failed_row, body)
    assert patch(failed_row, json.dumps({"phone": "555-0199"})).status_code == 200


def test_unusable_fields_are_named_in_the_body_order_in_the_service_words(failed_row):
    response = patch(failed_row, json.dumps({"zip": "x", "name": 3, "phone": None, "address": ["x"]}))
    assert response.status_code == 422
    details = response.json()["details"]
    assert [d["column"] for d in details] == ["zip", "name", "address"]
    assert details[1]["message"] == "The name must be a string (an empty string or null clears a phone)."
    assert '"zip" is not a field of a row' in details[0]["message"]


def test_row_zero_is_no_row_whatever_the_body(failed_row):
    service, url = failed_row
    response = service.http.patch(url.rsplit("/", 1)[0] + "/0", data='{"name": 3}',
                                  headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
