"""BULKPROC_MAX_STREAMS: open event streams are capped per process, and their slots come back."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest
import requests

from bulkproc.files.rules import parse
from bulkproc.store import Store
from tests.gunicorn_service import GunicornService, service_env
from tests.support import hospitals_csv, wait_until


def running_batch(store: Store) -> str:
    """A batch that some other live process holds for an hour: its stream never ends by itself."""
    batch_id, _ = store.insert_batch(str(uuid.uuid4()), parse(hospitals_csv(2).encode(), max_rows=20),
                                     owner="elsewhere", lease_until=time.time() + 3600)
    return batch_id


def open_stream(port: int, batch_id: str) -> socket.socket:
    """A client connection with the batch's event stream open and its first event read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET /hospitals/bulk/{batch_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    received = b""
    while b"data: " not in received:
        chunk = sock.recv(65536)  # each read waits at most the 10 s timeout
        assert chunk, f"the stream ended before its first event: {received!r}"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received
    return sock


def assert_refused(response: requests.Response) -> None:
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "event streams" in response.json()["error"]


def port(service) -> int:
    return int(service.url.rsplit(":", 1)[1])


@pytest.fixture
def capped(make_app, serve_app):
    app = make_app(MAX_STREAMS=2, SSE_HEARTBEAT_SECONDS=0.05)
    return app, serve_app(app)


def test_streams_beyond_the_limit_get_503_with_retry_after_and_reads_still_answer(capped):
    app, service = capped
    batch_id = running_batch(app.extensions["bulkproc"].store)
    streams = [open_stream(port(service), batch_id) for _ in range(2)]
    try:
        with service.get(f"/hospitals/bulk/{batch_id}/events", stream=True, timeout=10) as refused:
            assert_refused(refused)
        assert service.get(f"/hospitals/bulk/{batch_id}", timeout=10).json()["status"] == "queued"
        assert service.get("/healthz", timeout=10).status_code == 200
    finally:
        for stream in streams:
            stream.close()


def test_a_client_that_goes_away_frees_its_slot(capped):
    app, service = capped
    batch_id = running_batch(app.extensions["bulkproc"].store)
    slots = app.extensions["bulkproc.streams"]
    first, second = open_stream(port(service), batch_id), open_stream(port(service), batch_id)
    assert slots.open == 2
    first.close()  # the client hangs up; the server learns it when a keep-alive cannot be written
    wait_until(lambda: slots.open == 1, timeout=10, what="the slot of the closed stream")
    third = open_stream(port(service), batch_id)
    second.close()
    third.close()
    wait_until(lambda: slots.open == 0, timeout=10, what="every slot back")


def test_a_stream_that_ends_frees_its_slot(capped):
    app, service = capped
    batch_id = service.upload(hospitals_csv(1)).json()["batch_id"]  # completed: its stream ends at once
    for _ in range(3):
        with service.get(f"/hospitals/bulk/{batch_id}/events", stream=True, timeout=10) as response:
            assert response.status_code == 200
            assert '"status": "completed"' in response.text
    wait_until(lambda: app.extensions["bulkproc.streams"].open == 0, timeout=10, what="every slot back")


def test_a_stream_refused_before_it_started_takes_no_slot(capped):
    app, service = capped
    with service.get(f"/hospitals/bulk/{uuid.uuid4()}/events", timeout=10) as response:
        assert response.status_code == 404
    assert app.extensions["bulkproc.streams"].open == 0


def _hold_stream(port: int, batch_id: str) -> socket.socket:
    """A raw connection that asks for the stream and never reads: a tab left open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET /hospitals/bulk/{batch_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


@pytest.mark.slow
def test_fifty_open_streams_leave_gunicorn_answering_health_and_status(tmp_path: Path, upstream):
    """One worker with 4 threads: without the cap, 4 streams would take every thread."""
    url = f"sqlite:///{tmp_path}/jobs.sqlite3"
    store = Store(url)
    try:
        batch_id = running_batch(store)
    finally:
        store.close()
    env = service_env(upstream.url, url, BULKPROC_MAX_STREAMS="2", GUNICORN_THREADS="4")
    service = GunicornService(env, tmp_path / "gunicorn.log", workers=1).start()
    held: list[socket.socket] = []
    try:
        held = [_hold_stream(service.port, batch_id) for _ in range(50)]
        health = requests.get(service.url + "/healthz", timeout=30)
        status = requests.get(f"{service.url}/hospitals/bulk/{batch_id}", timeout=30)
        assert health.status_code == 200
        assert status.status_code == 200 and status.json()["status"] == "queued"
        with requests.get(f"{service.url}/hospitals/bulk/{batch_id}/events", stream=True, timeout=30) as refused:
            assert_refused(refused)
    finally:
        for sock in held:
            sock.close()
        service.kill()  # its streams would hold a graceful stop for a heartbeat or two
