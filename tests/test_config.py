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
    ("BULKPROC_API_TOKEN", "t" * 16, "API_TOKEN", "t" * 16),
    ("BULKPROC_MAX_ROWS", "20", "MAX_ROWS", 20),
    ("BULKPROC_STORE_WAIT", "0", "STORE_WAIT", 0.0),
    ("PORT", "10000", "PORT", 10000),
    ("DATABASE_URL", "postgresql://u@/jobs?host=/run/postgresql", "DATABASE_URL",
     "postgresql://u@/jobs?host=/run/postgresql"),
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
    ("BULKPROC_MAX_ROWS", "21"), ("BULKPROC_API_TOKEN", ""), ("BULKPROC_API_TOKEN", "   "),
    ("BULKPROC_API_TOKEN", "fifteen-chars!!"), ("BULKPROC_API_TOKEN", "sixteen chars ok"),
    ("BULKPROC_METRICS_TOKEN", "short"), ("BULKPROC_STORE_WAIT", "-1"), ("PORT", "0"), ("PORT", "65536"),
    ("DATABASE_URL", "postgres://"), ("DATABASE_URL", "postgresql:///jobs"), ("DATABASE_URL", "sqlite://"),
    ("BULKPROC_WEBHOOK_URL", "ftp://hooks.example"), ("BULKPROC_WEBHOOK_SECRET", "secret"),
    ("BULKPROC_WEBHOOK_SECRET", "whsec_"), ("BULKPROC_WEBHOOK_SECRET", "whsec_not base64!"),
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


def test_streams_must_stay_below_the_threads():
    assert from_env({"BULKPROC_MAX_STREAMS": "15"})["MAX_STREAMS"] == 15
    with pytest.raises(ConfigError, match="BULKPROC_MAX_STREAMS='16' .*fewer than GUNICORN_THREADS \\(16\\)"):
        from_env({"BULKPROC_MAX_STREAMS": "16"})
    with pytest.raises(ConfigError, match="BULKPROC_MAX_STREAMS='8' .*GUNICORN_THREADS \\(4\\)"):
        from_env({"GUNICORN_THREADS": "4"})


def test_a_webhook_needs_its_url_and_its_secret_together():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    settings = from_env({"BULKPROC_WEBHOOK_URL": "https://hooks.example/in", "BULKPROC_WEBHOOK_SECRET": secret})

    assert (settings["WEBHOOK_URL"], settings["WEBHOOK_SECRET"]) == ("https://hooks.example/in", secret)
    with pytest.raises(ConfigError, match="BULKPROC_WEBHOOK_URL is not set"):
        from_env({"BULKPROC_WEBHOOK_SECRET": secret})


@pytest.mark.parametrize("variable", ["BULKPROC_API_TOKEN", "BULKPROC_METRICS_TOKEN", "BULKPROC_WEBHOOK_SECRET"])
def test_a_refused_secret_is_told_by_its_length_only(variable):
    with pytest.raises(ConfigError) as refused:
        from_env({variable: "hunter2 hunter2"})

    assert "hunter2" not in str(refused.value)
    assert str(refused.value).startswith(f"{variable} (15 characters) is not valid")


def test_a_refused_database_url_hides_its_password():
    with pytest.raises(ConfigError) as refused:
        from_env({"DATABASE_URL": "postgresql://bulkproc:hunter2@/jobs"})

    assert "hunter2" not in str(refused.value) and "bulkproc:***@" in str(refused.value)


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
