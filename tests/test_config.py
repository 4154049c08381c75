"""Configuration from the environment, checked at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bulkproc.config import ConfigError, from_env
from bulkproc.errors import StoreUnavailable
from bulkproc.store import Store, engine_for
from tests.postgres import postgres_url  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_follow_the_contract():
    settings = from_env({})

    assert settings["HOSPITAL_API_BASE_URL"] == "https://hospital-directory.onrender.com"
    assert settings["DATABASE_URL"] is None
    assert (settings["MAX_ROWS"], settings["MAX_UPLOAD_BYTES"], settings["CONCURRENCY"]) == (20, 1048576, 30)
    assert settings["CREATE_RATE"] == (30, 60.0)
    assert (settings["CONNECT_TIMEOUT"], settings["READ_TIMEOUT"]) == (5.0, 90.0)
    assert (settings["MAX_ATTEMPTS"], settings["LEASE_SECONDS"], settings["API_TOKEN"]) == (5, 10.0, None)
    assert settings["OUTAGE_GRACE"] == 120.0
    assert (settings["WEB_CONCURRENCY"], settings["GUNICORN_THREADS"]) == (2, 16)


@pytest.mark.parametrize("environ,concurrency", [
    ({}, 30),
    ({"BULKPROC_CREATE_RATE": "12/60"}, 12),
    ({"BULKPROC_CREATE_RATE": "0"}, 20),
    ({"BULKPROC_CREATE_RATE": "12/60", "BULKPROC_CONCURRENCY": "7"}, 7),
], ids=["default-rate", "other-rate", "no-limiter", "set"])
def test_concurrency_follows_the_create_rate_unless_set(environ, concurrency):
    # One window's creations go up together: fewer seats would send a window in two rounds.
    assert from_env(environ)["CONCURRENCY"] == concurrency


@pytest.mark.parametrize("variable,text,key,value", [
    ("BULKPROC_CREATE_RATE", "0", "CREATE_RATE", None),
    ("BULKPROC_CREATE_RATE", "10/2.5", "CREATE_RATE", (10, 2.5)),
    ("HOSPITAL_API_BASE_URL", "http://127.0.0.1:9000/", "HOSPITAL_API_BASE_URL", "http://127.0.0.1:9000"),
    ("BULKPROC_API_TOKEN", "t", "API_TOKEN", "t"),
    ("BULKPROC_READ_TIMEOUT", " 30 ", "READ_TIMEOUT", 30.0),
    ("DATABASE_URL", "postgres://u@db/jobs", "DATABASE_URL", "postgres://u@db/jobs"),
    ("BULKPROC_OUTAGE_GRACE", "0", "OUTAGE_GRACE", 0.0),
    ("BULKPROC_OUTAGE_GRACE", "30.5", "OUTAGE_GRACE", 30.5),
])
def test_values_are_parsed(variable, text, key, value):
    assert from_env({variable: text})[key] == value


@pytest.mark.parametrize("variable,text", [
    ("BULKPROC_MAX_ROWS", "twenty"), ("BULKPROC_MAX_ROWS", "0"), ("BULKPROC_CONCURRENCY", "-1"),
    ("BULKPROC_CREATE_RATE", "30"), ("BULKPROC_CREATE_RATE", "30/0"), ("BULKPROC_READ_TIMEOUT", "nan"),
    ("HOSPITAL_API_BASE_URL", "hospital-directory.onrender.com"),
    ("DATABASE_URL", "jobs.sqlite3"), ("DATABASE_URL", "mysql://db/jobs"),
    ("BULKPROC_OUTAGE_GRACE", "-1"), ("BULKPROC_OUTAGE_GRACE", "soon"),
    ("WEB_CONCURRENCY", "two"), ("WEB_CONCURRENCY", "0"), ("GUNICORN_THREADS", "x"),
])
def test_a_bad_value_names_its_variable(variable, text):
    with pytest.raises(ConfigError, match=variable):
        from_env({variable: text})


@pytest.mark.parametrize("variable,text,expected", [
    ("BULKPROC_CONCURRENCY", "lots", "a whole number of at least 1"),
    ("GUNICORN_THREADS", "x", "a whole number of at least 1"),
])
def test_gunicorn_stops_at_once_with_one_line_naming_the_variable(tmp_path, variable, text, expected):
    env = {**os.environ, variable: text, "DATABASE_URL": f"sqlite:///{tmp_path}/j.db"}
    gunicorn = Path(sys.executable).parent / "gunicorn"

    result = subprocess.run([str(gunicorn), "--config", "gunicorn.conf.py", "--bind", "127.0.0.1:0", "wsgi:app"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("bulkproc:")]
    assert lines == [f"bulkproc: {variable}={text!r} is not valid: expected {expected}"]
    assert "Traceback" not in result.stderr


RENDER_URL = "postgres://bulkproc:secret@dpg-d0abc-a.oregon-postgres.render.com/bulkproc_x1?sslmode=require"


def test_a_render_postgres_url_keeps_its_query_string():
    assert from_env({"DATABASE_URL": RENDER_URL})["DATABASE_URL"] == RENDER_URL
    engine = engine_for(RENDER_URL)
    try:
        _, connect_args = engine.dialect.create_connect_args(engine.url)
    finally:
        engine.dispose()

    assert engine.dialect.driver == "psycopg"
    assert (connect_args["host"], connect_args["dbname"]) == ("dpg-d0abc-a.oregon-postgres.render.com", "bulkproc_x1")
    assert connect_args["sslmode"] == "require"


@pytest.mark.postgres
def test_sslmode_of_a_postgres_url_reaches_the_server(postgres_url):  # noqa: F811
    # The test server speaks no TLS: `require` must be refused by it, `disable` must work.
    url = postgres_url.replace("postgresql://", "postgres://", 1)
    with pytest.raises(StoreUnavailable) as refused:
        Store(url + "?sslmode=require")
    assert "SSL" in str(refused.value.__cause__)
    store = Store(url + "?sslmode=disable")
    try:
        store.ping()
    finally:
        store.close()
