"""The API token guards every /hospitals/bulk request, reads and event streams included, over real HTTP."""

from __future__ import annotations

import pytest

from bulkproc.web.auth import token_matches
from tests.support import hospitals_csv

TOKEN = "s3cret-Zürich-東京"  # not ASCII: headers reach WSGI as latin-1 text, the token is UTF-8
GOOD = {"Authorization": b"Bearer " + TOKEN.encode("utf-8")}


@pytest.fixture
def guarded(make_app, serve_app):
    return serve_app(make_app(API_TOKEN=TOKEN))


def assert_401(response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert set(response.json()) == {"error", "details"}
    assert "Authorization: Bearer" in response.json()["error"]


def every_request(service, batch_id: str, headers) -> list:
    """One request of each kind under /hospitals/bulk, all with `headers`."""
    csv = ("hospitals.csv", hospitals_csv(1).encode(), "text/csv")
    get, post = service.http.get, service.http.post
    base = service.url + "/hospitals/bulk"
    return [
        get(base, headers=headers, timeout=30),
        get(f"{base}/{batch_id}", headers=headers, timeout=30),
        get(f"{base}/{batch_id}/events", headers=headers, timeout=30),
        post(base, files={"file": csv}, headers=headers, timeout=30),
        post(f"{base}/validate", files={"file": csv}, headers=headers, timeout=30),
        post(f"{base}/{batch_id}/resume", headers=headers, timeout=30),
        service.http.delete(f"{base}/{batch_id}", headers=headers, timeout=30),
    ]


@pytest.mark.parametrize("authorization", [
    None,
    b"Bearer wrong",
    b"Basic " + TOKEN.encode("utf-8"),
    b"Bearer " + TOKEN.encode("utf-8") + b"x",
    b"Bearer " + TOKEN.encode("latin-1", "replace"),
    b"Bearer",
])
def test_every_request_reads_included_needs_the_token(guarded, upstream, authorization):
    batch_id = guarded.upload(hospitals_csv(1), headers=GOOD).json()["batch_id"]
    headers = {"Authorization": authorization} if authorization is not None else {}
    for response in every_request(guarded, batch_id, headers):
        assert_401(response)
    assert upstream.sim.stats["create_requests"] == 1


def test_the_utf8_token_opens_every_request(guarded, upstream):
    batch_id = guarded.upload(hospitals_csv(1), headers=GOOD).json()["batch_id"]
    statuses = [r.status_code for r in every_request(guarded, batch_id, GOOD)]
    # list, status, events, create, validate, resume (completed: unchanged), roll back
    assert statuses == [200, 200, 200, 200, 200, 200, 200]


@pytest.mark.parametrize("path", ["/", "/healthz", "/static/upload.js"])
def test_the_page_and_the_health_check_stay_open(guarded, path):
    assert guarded.get(path).status_code == 200


def test_without_a_token_configured_nothing_is_asked(service):
    assert service.get("/hospitals/bulk").status_code == 200


@pytest.mark.parametrize(("header", "matches"), [
    ("Bearer abc", True),
    ("bearer abc", True),
    ("  Bearer   abc  ", True),
    ("Bearer abcd", False),
    ("Bearer ab", False),
    ("Token abc", False),
    ("abc", False),
    ("", False),
])
def test_token_matching(header, matches):
    assert token_matches(header, "abc") is matches
