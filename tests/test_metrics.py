"""GET /metrics: the counters of the spec, counted where the work happens, summed over gunicorn's workers."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest
import requests
import responses
from prometheus_client import REGISTRY
from responses.registries import OrderedRegistry

from bulkproc import metrics
from bulkproc.errors import StoreUnavailable
from bulkproc.store import Store
from bulkproc.store.database import _store_failures as store_failures
from bulkproc.upstream.client import DirectoryClient
from bulkproc.work.rate_limit import RateLimiter
from tests.gunicorn_service import GunicornService, service_env
from tests.support import hospitals_csv, metric, wait_until

BASE = "http://directory.test"
BATCH = "550e8400-e29b-41d4-a716-446655440000"

COUNTED = [
    ("bulkproc_hospitals_created_total", {}),
    ("bulkproc_rows_failed_total", {}),
    ("bulkproc_batches_finished_total", {"status": "partially_failed"}),
    ("bulkproc_batches_finished_total", {"status": "rolled_back"}),
    ("bulkproc_upstream_requests_total", {"operation": "wake", "code": "200"}),
    ("bulkproc_upstream_requests_total", {"operation": "create", "code": "200"}),
    ("bulkproc_upstream_requests_total", {"operation": "create", "code": "422"}),
    ("bulkproc_upstream_requests_total", {"operation": "delete_batch", "code": "200"}),
    ("bulkproc_upstream_request_duration_seconds_count", {"operation": "create"}),
]


def snapshot(text: str) -> list[float]:
    return [metric(text, name, **labels) for name, labels in COUNTED]


def test_a_batch_and_its_rollback_are_counted(service, upstream):
    before = snapshot(service.get("/metrics").text)
    upstream.sim.add_fault("create", "reject_422", after=2)  # the third creation is refused

    document = service.upload(hospitals_csv(3)).json()
    assert document["status"] == "partially_failed"
    assert service.delete(f"/hospitals/bulk/{document['batch_id']}").json()["status"] == "rolled_back"

    after = snapshot(service.get("/metrics").text)
    assert [b - a for a, b in zip(before, after)] == [2, 1, 1, 1, 1, 2, 1, 1, 3]


def test_metrics_are_prometheus_text_and_open_when_a_token_is_set(make_app):
    client = make_app(API_TOKEN="s3cret").test_client()

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    for name in ("bulkproc_hospitals_created_total", "bulkproc_rows_failed_total",
                 "bulkproc_rate_limit_wait_seconds_total", "bulkproc_duplicates_removed_total"):
        assert f"# TYPE {name} counter" in text
    assert "# TYPE bulkproc_upstream_request_duration_seconds histogram" in text


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_failed_exchanges_are_counted_by_their_kind_with_their_time():
    responses.get(f"{BASE}/hospitals/batch/{BATCH}", body=requests.exceptions.ConnectTimeout("no route"))
    responses.get(f"{BASE}/hospitals/batch/{BATCH}", body=requests.exceptions.ReadTimeout("no answer"))
    responses.get(f"{BASE}/hospitals/batch/{BATCH}", status=503)
    responses.get(f"{BASE}/hospitals/batch/{BATCH}", json=[])
    ticks = iter(range(1000))
    client = DirectoryClient(BASE, max_attempts=5, sleep=lambda _: None, clock=lambda: float(next(ticks)),
                             jitter=lambda: 0.0)
    kinds = ["connect_error", "timeout", "503", "200"]

    def counts() -> list[float]:
        return [REGISTRY.get_sample_value("bulkproc_upstream_requests_total",
                                          {"operation": "list_batch", "code": kind}) or 0.0 for kind in kinds]

    def observed() -> float:
        return REGISTRY.get_sample_value("bulkproc_upstream_request_duration_seconds_count",
                                         {"operation": "list_batch"}) or 0.0

    before, observed_before = counts(), observed()
    try:
        assert client.list_batch(BATCH) == []
    finally:
        client.close()

    assert [b - a for a, b in zip(before, counts())] == [1, 1, 1, 1]
    assert observed() - observed_before == 4


def test_waits_for_the_create_rate_limit_are_counted(tmp_path):
    now = [1_700_000_000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    store = Store(f"sqlite:///{tmp_path}/limits.sqlite3", clock=lambda: now[0])
    limiter = RateLimiter(store, 1, 10.0, sleep=sleep, clock=lambda: now[0], wall_clock=lambda: now[0])
    before = REGISTRY.get_sample_value("bulkproc_rate_limit_wait_seconds_total")
    try:
        limiter.acquire()
        started = now[0]
        limiter.acquire()  # the window's one slot is taken: waits for it to free
    finally:
        store.close()

    waited = now[0] - started
    assert waited >= 10.0
    assert REGISTRY.get_sample_value("bulkproc_rate_limit_wait_seconds_total") - before == pytest.approx(waited)


@pytest.mark.slow
def test_metrics_add_up_every_gunicorn_worker_even_one_that_died(tmp_path, upstream):
    service = GunicornService(service_env(upstream.url, f"sqlite:///{tmp_path}/jobs.sqlite3"),
                              tmp_path / "gunicorn.log", workers=2)
    del service.env["PROMETHEUS_MULTIPROC_DIR"]  # gunicorn.conf.py makes a folder of its own
    service.start()
    try:
        workers = service.worker_pids()
        for worker in workers:  # two rows created by each worker
            with service.only(worker):
                assert service.upload(hospitals_csv(2, prefix=f"W{worker}")).json()["status"] == "completed"

        for worker in workers:  # whichever worker answers, it reports both
            with service.only(worker):
                text = service.get("/metrics").text
            assert metric(text, "bulkproc_hospitals_created_total") == 4
            assert metric(text, "bulkproc_batches_finished_total", status="completed") == 2
            assert metric(text, "bulkproc_upstream_requests_total", operation="create", code="200") == 4

        os.kill(workers[0], signal.SIGKILL)
        wait_until(lambda: len(set(service.worker_pids()) - set(workers)) == 1, timeout=30,
                   what="gunicorn to replace the killed worker")
        assert metric(service.get("/metrics").text, "bulkproc_hospitals_created_total") == 4
    finally:
        service.stop()
        print(service.log_tail())


def test_a_batch_waiting_for_the_create_rate_window_counts_the_wait(make_app, serve_app):
    service = serve_app(make_app(CREATE_RATE=(2, 0.3)))
    before = metric(service.get("/metrics").text, "bulkproc_rate_limit_wait_seconds_total")

    assert service.upload(hospitals_csv(3)).json()["status"] == "completed"  # the third waits a window

    assert metric(service.get("/metrics").text, "bulkproc_rate_limit_wait_seconds_total") > before


@pytest.mark.slow
def test_a_named_metrics_folder_is_emptied_of_an_earlier_run(tmp_path, upstream):
    env = service_env(upstream.url, f"sqlite:///{tmp_path}/jobs.sqlite3")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    first = GunicornService(env, tmp_path / "first.log", workers=1).start()
    try:
        assert first.upload(hospitals_csv(2)).json()["status"] == "completed"
        assert metric(first.get("/metrics").text, "bulkproc_hospitals_created_total") == 2
    finally:
        first.kill()  # as a crash would: nothing cleans up after it
    second = GunicornService(env, tmp_path / "second.log", workers=1).start()
    try:
        assert metric(second.get("/metrics").text, "bulkproc_hospitals_created_total") == 0
    finally:
        second.stop()


# -- what operators asked for: HTTP by route template, the store, imports, rows in flight ----------

SPEC_METRICS = [
    "bulkproc_hospitals_created_total", "bulkproc_rows_failed_total", "bulkproc_batches_finished_total",
    "bulkproc_upstream_requests_total", "bulkproc_upstream_request_duration_seconds",
    "bulkproc_rate_limit_wait_seconds_total", "bulkproc_duplicates_removed_total", "bulkproc_http_requests_total",
    "bulkproc_http_request_duration_seconds", "bulkproc_store_errors_total", "bulkproc_imports_finished_total",
    "bulkproc_rows_in_flight", "bulkproc_webhook_deliveries_total",
]
METRICS_TOKEN = "m" * 24


def test_requests_are_counted_by_route_template_never_by_path(make_app):
    client = make_app().test_client()
    ids = [f"550e8400-e29b-41d4-a716-44665544000{n}" for n in range(3)]
    text = lambda: client.get("/metrics").get_data(as_text=True)
    route = "/hospitals/bulk/<batch_id>"
    before = metric(text(), "bulkproc_http_requests_total", method="GET", route=route, status="404")
    unmatched = metric(text(), "bulkproc_http_requests_total", method="GET", route="unmatched", status="404")

    for batch_id in ids:
        assert client.get(f"/hospitals/bulk/{batch_id}").status_code == 404
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    after = text()

    assert metric(after, "bulkproc_http_requests_total", method="GET", route=route, status="404") - before == 3
    assert metric(after, "bulkproc_http_requests_total", method="GET", route="unmatched", status="404") - unmatched == 2
    assert metric(after, "bulkproc_http_request_duration_seconds_count", route=route) >= 3
    assert not [line for line in after.splitlines() if ids[0] in line or "/no/such" in line]


def test_metrics_need_the_metrics_token_when_one_is_set(make_app):
    client = make_app(METRICS_TOKEN=METRICS_TOKEN, API_TOKEN="a" * 16).test_client()

    refused = client.get("/metrics")
    with_api_token = client.get("/metrics", headers={"Authorization": "Bearer " + "a" * 16})
    allowed = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})

    assert refused.status_code == with_api_token.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "metrics token" in refused.get_json()["error"]
    assert allowed.status_code == 200 and "bulkproc_hospitals_created_total" in allowed.get_data(as_text=True)
    assert client.get("/healthz").status_code == 200  # only /metrics is closed by it


def test_every_metric_of_the_spec_is_declared_and_in_the_readme(make_app):
    text = make_app().test_client().get("/metrics").get_data(as_text=True)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    operations = readme[readme.index("## Operations"):readme.index("## Performance")]

    for name in SPEC_METRICS:
        family = name.removesuffix("_total")
        assert f"# TYPE {family}" in text, name
        assert f"`{name}" in operations, name
    assert "`cancelled`" in operations[:operations.index("bulkproc_upstream_requests_total")]


def test_rows_in_flight_counts_a_creation_while_it_runs():
    seen = []

    def create() -> str:
        seen.append(REGISTRY.get_sample_value("bulkproc_rows_in_flight"))
        return "done"

    before = REGISTRY.get_sample_value("bulkproc_rows_in_flight")
    assert metrics.in_flight(create)() == "done"

    assert seen == [before + 1]
    assert REGISTRY.get_sample_value("bulkproc_rows_in_flight") == before


def test_a_store_failure_is_counted():
    before = REGISTRY.get_sample_value("bulkproc_store_errors_total")

    with pytest.raises(StoreUnavailable), store_failures():  # every read and write of the store goes through it
        raise sqlite3.OperationalError("disk I/O error")

    assert REGISTRY.get_sample_value("bulkproc_store_errors_total") - before == 1


def test_a_finished_import_is_counted_by_its_status(service):
    text = lambda: service.get("/metrics").text
    before = metric(text(), "bulkproc_imports_finished_total", status="completed")
    started = service.upload(hospitals_csv(3), path="/hospitals/imports")
    assert started.status_code == 202, started.text
    import_id = started.json()["import_id"]

    wait_until(lambda: service.get(f"/hospitals/imports/{import_id}").json()["status"] == "completed",
               timeout=30, what="the import to complete")

    assert metric(text(), "bulkproc_imports_finished_total", status="completed") - before == 1
