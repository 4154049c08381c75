"""Imports of any size: split into batches, paced at the create-rate limit, cancelled, resumed, rolled back."""

from __future__ import annotations

import csv
import io
import json
import threading

import pytest

from bulkproc.simulator import create_simulator, serve
from tests.conftest import hospitals_csv
from tests.gunicorn_service import wait_until

FINAL = {"completed", "partially_failed", "failed", "cancelled", "interrupted", "rolled_back"}
IMPORT_FIELDS = ["import_id", "status", "total_hospitals", "processed_hospitals", "failed_hospitals",
                 "processing_time_seconds", "estimated_seconds_remaining", "batches", "created_at", "updated_at"]
BATCH_FIELDS = ["batch_id", "first_row", "last_row", "status", "total_hospitals", "processed_hospitals",
                "failed_hospitals", "batch_activated", "created_at", "updated_at"]


def start_import(service, csv_text: str, **kwargs):
    response = service.upload(csv_text, path="/hospitals/imports", **kwargs)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/hospitals/imports/{response.json()['import_id']}"
    return response.json()


def wait_for(service, import_id: str, statuses=FINAL, timeout: float = 30.0, what: str = "") -> dict:
    def reached():
        document = service.get(f"/hospitals/imports/{import_id}").json()
        return document if document["status"] in statuses else None
    return wait_until(reached, timeout=timeout, what=what or f"import {import_id} to reach {sorted(statuses)}")


def names(hospitals) -> list[str]:
    return sorted((h["name"] for h in hospitals), key=lambda n: int(n.rsplit(" ", 1)[1]))


def assert_each_row_once_and_active(upstream, document: dict, prefix: str = "Hospital") -> None:
    """Every batch of the import holds its own rows upstream, once each, all active."""
    for part in document["batches"]:
        held = upstream.sim.hospitals(part["batch_id"])
        expected = [f"{prefix} {n}" for n in range(part["first_row"], part["last_row"] + 1)]
        assert names(held) == expected, part
        assert all(h["active"] for h in held), part


# -- the import document and its batches ---------------------------------------------------


def test_a_100_row_import_completes_as_5_active_batches_each_with_its_own_rows(service, upstream):
    started = start_import(service, hospitals_csv(100))

    assert list(started) == IMPORT_FIELDS
    assert started["status"] in {"queued", "processing"} and started["total_hospitals"] == 100
    document = wait_for(service, started["import_id"])

    assert document["status"] == "completed", document
    assert (document["processed_hospitals"], document["failed_hospitals"]) == (100, 0)
    assert document["estimated_seconds_remaining"] is None
    assert [(b["first_row"], b["last_row"]) for b in document["batches"]] == [
        (1, 20), (21, 40), (41, 60), (61, 80), (81, 100)]
    assert all(list(b) == BATCH_FIELDS for b in document["batches"])
    assert {(b["status"], b["batch_activated"], b["processed_hospitals"]) for b in document["batches"]} == {
        ("completed", True, 20)}
    assert_each_row_once_and_active(upstream, document)
    assert upstream.sim.stats["created"] == 100
    # Each batch is an ordinary batch whose rows keep the file's row numbers.
    third = service.get(f"/hospitals/bulk/{document['batches'][2]['batch_id']}").json()
    assert [h["row"] for h in third["hospitals"]] == list(range(41, 61))
    assert {h["status"] for h in third["hospitals"]} == {"created_and_activated"}
