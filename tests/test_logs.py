"""Every log line of a batch's work carries its batch id, from every thread."""

from __future__ import annotations

import io
import json
import logging
import socket

import pytest
import requests
import responses
from responses.registries import OrderedRegistry
from urllib3.exceptions import MaxRetryError, NameResolutionError

from bulkproc import logs
from bulkproc.config import ConfigError, from_env
from bulkproc.errors import GaveUp
from bulkproc.upstream.client import DirectoryClient
from tests.gunicorn_service import GunicornService, service_env
from tests.support import hospitals_csv, wait_until


def test_log_lines_of_a_batch_name_it_even_from_row_threads(service, upstream):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.BatchIdFilter())
    handler.setFormatter(logging.Formatter(logs.FORMAT))
    logger = logging.getLogger("bulkproc")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    upstream.sim.add_fault("create", "store_then_500", times=2)  # warnings from the row threads
    try:
        batch_id = service.upload(hospitals_csv(3)).json()["batch_id"]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    lines = stream.getvalue().splitlines()
    assert any("bulkproc.upstream.client" in line for line in lines)
    assert lines and all(f"[batch {batch_id}]" in line for line in lines), lines


def capture(log_format: str):
    """Attach a handler of bulkproc's own making to its logger; return (stream, detach)."""
    stream = io.StringIO()
    handler = logs.make_handler(log_format, stream)
    logger = logging.getLogger("bulkproc")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)

    def detach() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    return stream, detach


def test_json_lines_carry_the_batch_and_request_ids_from_every_thread(service, upstream):
    stream, detach = capture("json")
    upstream.sim.add_fault("create", "store_then_500", times=2)  # warnings from the row threads
    try:
        accepted = service.upload(hospitals_csv(3), headers={"X-Request-ID": "upload-7"}, **{"async": "1"})
        batch_id = accepted.json()["batch_id"]
        wait_until(lambda: service.get(f"/hospitals/bulk/{batch_id}").json()["status"] == "completed",
                   timeout=20, what="the batch to complete")
    finally:
        detach()

    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(e["logger"] == "bulkproc.upstream.client" and e["level"] == "WARNING" for e in entries)
    (finished,) = [e for e in entries if e["message"].startswith("batch finished:")]
    assert finished["message"].startswith("batch finished: completed (3 rows: 3 created_and_activated) in ")
    assert finished["rows"] == {"created_and_activated": 3} and finished["duration_seconds"] > 0
    for entry in entries:
        assert {"time", "level", "logger", "message", "batch_id", "import_id", "request_id"} <= set(entry)
        assert (entry["batch_id"], entry["import_id"], entry["request_id"]) == (batch_id, None, "upload-7"), entry


def test_a_json_line_holds_the_exception_and_null_ids_outside_any_request():
    stream, detach = capture("json")
    try:
        try:
            {}["missing"]
        except KeyError:
            logging.getLogger("bulkproc.test").exception("it broke")
    finally:
        detach()

    (entry,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert (entry["level"], entry["message"], entry["batch_id"], entry["request_id"]) == ("ERROR", "it broke",
                                                                                         None, None)
    assert "KeyError: 'missing'" in entry["exception"]


def test_text_lines_name_the_request_too(service):
    stream, detach = capture("text")
    try:
        batch_id = service.upload(hospitals_csv(2), headers={"X-Request-ID": "r-1"}).json()["batch_id"]
    finally:
        detach()

    lines = stream.getvalue().splitlines()
    assert lines and all(f"[batch {batch_id}] [request r-1]" in line for line in lines), lines


@pytest.mark.parametrize("text,expected", [("json", "json"), ("JSON", "json"), ("text", "text")])
def test_the_log_format_is_a_setting(text, expected):
    assert from_env({})["LOG_FORMAT"] == "text"
    assert from_env({"BULKPROC_LOG_FORMAT": text})["LOG_FORMAT"] == expected


def test_an_unknown_log_format_names_its_variable():
    with pytest.raises(ConfigError, match="BULKPROC_LOG_FORMAT"):
        from_env({"BULKPROC_LOG_FORMAT": "xml"})


def test_every_line_of_gunicorn_is_json_access_lines_and_tracebacks_included(tmp_path, upstream):
    env = service_env(upstream.url, f"sqlite:///{tmp_path}/jobs.sqlite3", BULKPROC_LOG_FORMAT="json")
    service = GunicornService(env, tmp_path / "gunicorn.log", workers=1, app="tests.raising_wsgi:app").start()
    try:
        assert service.get("/_test/raise", headers={"X-Request-ID": "boom-1"}).status_code == 500
        assert service.upload(hospitals_csv(2), headers={"X-Request-ID": "up-1"}).json()["status"] == "completed"
        assert service.get("/no/such/page").status_code == 404
    finally:
        service.stop()

    lines = [line for line in service.log_tail(10**7).splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    by_logger = {e["logger"] for e in entries}
    assert {"gunicorn.error", "gunicorn.access", "bulkproc.web.http_errors"} <= by_logger
    (failed,) = [e for e in entries if e["logger"] == "bulkproc.web.http_errors"]
    assert failed["request_id"] == "boom-1" and "RuntimeError: raised for the log test" in failed["exception"]
    access = [e for e in entries if e["logger"] == "gunicorn.access"]
    assert {(e["method"], e["path"], e["status"]) for e in access} >= {
        ("GET", "/_test/raise", 500), ("POST", "/hospitals/bulk", 200), ("GET", "/no/such/page", 404)}
    assert [e["request_id"] for e in access if e["path"] == "/hospitals/bulk"] == ["up-1"]
    assert any(e["message"].startswith("batch finished: completed (2 rows") for e in entries)
    assert any(e["message"] == "Shutting down: Master" for e in entries)


def test_import_lines_are_labelled_as_imports():
    stream, detach = capture("text")
    json_stream, json_detach = capture("json")
    try:
        logs.in_import_context("imp-1", logging.getLogger("bulkproc.work.imports").info)("import started")
        in_import = logs.in_import_context("imp-1", lambda: logs.in_batch_context(
            "b-1", logging.getLogger("bulkproc.work.batches").info))
        in_import()("a batch of the import")
    finally:
        json_detach()
        detach()

    assert [line.split(" INFO ")[1] for line in stream.getvalue().splitlines()] == [
        "[import imp-1] [request -] bulkproc.work.imports: import started",
        "[import imp-1] [batch b-1] [request -] bulkproc.work.batches: a batch of the import"]
    first, second = (json.loads(line) for line in json_stream.getvalue().splitlines())
    assert (first["import_id"], first["batch_id"]) == ("imp-1", None)
    assert (second["import_id"], second["batch_id"]) == ("imp-1", "b-1")


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_name_lookup_failure_is_named_as_such_not_as_a_refused_connection():
    url = "http://directory.test/hospitals/batch/550e8400-e29b-41d4-a716-446655440000"
    lookup = NameResolutionError("directory.test", None, socket.gaierror(-2, "Name or service not known"))
    responses.get(url, body=requests.ConnectionError(MaxRetryError(None, url, reason=lookup)))
    client = DirectoryClient("http://directory.test", max_attempts=1, outage_grace=0, sleep=lambda _: None)
    try:
        with pytest.raises(GaveUp) as gave_up:
            client.list_batch("550e8400-e29b-41d4-a716-446655440000")
    finally:
        client.close()

    assert "could not look up the directory's host name (" in str(gave_up.value)
    assert "Name or service not known" in str(gave_up.value)
    assert "could not connect" not in str(gave_up.value)
