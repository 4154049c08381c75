"""Every log line of a batch's work carries its batch id, from every thread."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bulkproc import logs
from bulkproc.config import ConfigError, from_env
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
