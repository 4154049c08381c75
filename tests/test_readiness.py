"""Readiness: /readyz answers 200 only while the job store answers, and 503 JSON when it does not."""

from __future__ import annotations

import uuid

import pytest

from tests.postgres import _admin, postgres_url  # noqa: F401


def test_ready_while_the_store_answers(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}


def test_not_ready_when_the_sqlite_folder_is_gone(make_app, tmp_path, caplog):
    folder = tmp_path / "instance"
    folder.mkdir()
    app = make_app(DATABASE_URL=f"sqlite:///{folder}/jobs.sqlite3")
    client = app.test_client()
    assert client.get("/readyz").status_code == 200

    # The volume holding the store goes away; pooled connections go with it.
    folder.rename(tmp_path / "elsewhere")
    app.extensions["bulkproc"].store.engine.dispose()
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.get_json() == {"error": "The job store is not answering.", "details": []}
    assert str(tmp_path) not in response.get_data(as_text=True)
    assert "unable to open database file" in caplog.text
    assert client.get("/healthz").status_code == 200  # alive, only not ready


@pytest.mark.postgres
def test_not_ready_when_the_postgresql_database_is_dropped(make_app, postgres_url):  # noqa: F811
    database = f"readyz_{uuid.uuid4().hex}"
    _admin(postgres_url, f"CREATE DATABASE {database}")
    try:
        app = make_app(DATABASE_URL=postgres_url.rsplit("/", 1)[0] + f"/{database}")
        client = app.test_client()
        assert client.get("/readyz").status_code == 200

        _admin(postgres_url, f"DROP DATABASE {database} WITH (FORCE)")
        response = client.get("/readyz")
    finally:
        _admin(postgres_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")

    assert response.status_code == 503
    assert response.get_json() == {"error": "The job store is not answering.", "details": []}


def test_readiness_needs_no_token(make_app):
    client = make_app(API_TOKEN="secret").test_client()

    assert client.get("/readyz").status_code == 200
