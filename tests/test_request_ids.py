"""X-Request-ID: taken from the request when usable or made, and returned on every response, errors included."""

from __future__ import annotations

import re

import pytest

from tests.gunicorn_service import GunicornService, service_env

NEW_ID = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize("path,method,status", [
    ("/healthz", "get", 200),
    ("/metrics", "get", 200),
    ("/hospitals/bulk/not-a-batch", "get", 404),
    ("/hospitals/bulk", "post", 400),
    ("/hospitals/bulk", "put", 405),
])
def test_a_usable_request_id_comes_back_on_every_response(client, path, method, status):
    response = getattr(client, method)(path, headers={"X-Request-ID": "trace 42/é"})

    assert response.status_code == status
    assert response.headers["X-Request-ID"] == "trace 42/é"


@pytest.mark.parametrize("given", [None, "", "x" * 201, "tab\there", "bell\x07"],
                         ids=["absent", "empty", "too-long", "tab", "control"])
def test_a_missing_or_unusable_request_id_is_replaced_by_a_new_one(client, given):
    headers = {} if given is None else {"X-Request-ID": given}

    first = client.get("/healthz", headers=headers).headers["X-Request-ID"]
    second = client.get("/healthz", headers=headers).headers["X-Request-ID"]

    assert NEW_ID.fullmatch(first) and NEW_ID.fullmatch(second) and first != second


def test_two_hundred_characters_are_kept(client):
    given = "r" * 200
    assert client.get("/healthz", headers={"X-Request-ID": given}).headers["X-Request-ID"] == given


@pytest.mark.slow
def test_gunicorn_access_lines_carry_the_request_id(tmp_path, upstream):
    service = GunicornService(service_env(upstream.url, f"sqlite:///{tmp_path}/jobs.sqlite3"),
                              tmp_path / "gunicorn.log", workers=1).start()
    try:
        given = service.get("/healthz", headers={"X-Request-ID": "access-7"})
        made = service.get("/hospitals/bulk/unknown").headers["X-Request-ID"]
    finally:
        service.stop()

    assert given.headers["X-Request-ID"] == "access-7"
    lines = service.log_tail(100_000).splitlines()
    assert any('"GET /healthz HTTP/1.1" 200' in line and line.endswith(" request=access-7") for line in lines)
    assert any('"GET /hospitals/bulk/unknown HTTP/1.1" 404' in line and line.endswith(f" request={made}")
               for line in lines)
