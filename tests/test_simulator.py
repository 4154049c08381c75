"""The simulator must answer like the Hospital Directory API, over real loopback HTTP."""

from __future__ import annotations

import errno
import re
import selectors
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from bulkproc.simulator import create_simulator, serve
from bulkproc.simulator.directory import Directory
from tests.gunicorn_service import wait_until

BATCH = "550e8400-e29b-41d4-a716-446655440000"
NOT_FOUND_BATCH = "No hospitals found with the specified batch ID"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def start():
    """Serve simulators built with the given options; stop them all after the test."""
    served = []

    def _start(**options):
        options.setdefault("delay", 0.05)
        options.setdefault("create_limit", 0)
        server = serve(create_simulator(**options))
        served.append(server)
        return server

    yield _start
    for server in served:
        server.stop()


@pytest.fixture
def up(start):
    return start()


def call(server, method, path, **kwargs):
    kwargs.setdefault("timeout", 5)
    return requests.request(method, server.url + path, **kwargs)


def create(server, name="General", batch=None, **extra):
    body = {"name": name, "address": "1 Main St", "phone": "555", **extra}
    if batch is not None:
        body["creation_batch_id"] = batch
    return call(server, "POST", "/hospitals/", json=body)


def test_health_answers_ok(up):
    response = call(up, "GET", "/")
    assert (response.status_code, response.json()) == (200, {"status": "OK"})


def test_create_without_batch_is_active_and_can_be_read_updated_deleted(up):
    created = create(up, "General")
    assert created.status_code == 200
    hospital = created.json()
    assert set(hospital) == {"id", "name", "address", "phone", "creation_batch_id", "active", "created_at"}
    assert hospital["active"] is True and hospital["creation_batch_id"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?", hospital["created_at"])
    path = f"/hospitals/{hospital['id']}"
    assert call(up, "GET", path).json() == hospital
    assert call(up, "GET", "/hospitals/").json() == [hospital]
    updated = call(up, "PUT", path, json={"name": "Renamed"})
    assert updated.status_code == 200
    assert updated.json() == {**hospital, "name": "Renamed"}
    deleted = call(up, "DELETE", path)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert call(up, "GET", path).status_code == 404
    assert up.sim.stats["created"] == 1


def test_ids_increase_and_are_never_reused(up):
    first = create(up).json()["id"]
    call(up, "DELETE", f"/hospitals/{first}")
    assert create(up).json()["id"] == first + 1


def test_create_with_batch_is_inactive_and_listed_in_its_batch(up):
    hospital = create(up, batch=BATCH.upper()).json()
    assert hospital["active"] is False and hospital["creation_batch_id"] == BATCH
    listed = call(up, "GET", f"/hospitals/batch/{BATCH}")
    assert (listed.status_code, listed.json()) == (200, [hospital])
    assert up.sim.hospitals(BATCH) == [hospital]
    assert up.sim.stats["batch_reads"] == 1


def test_twenty_first_row_of_a_batch_is_refused_before_the_delay(start):
    slept = []
    server = start(delay=5.0, sleep=slept.append)
    for n in range(20):
        assert create(server, f"H{n}", batch=BATCH).status_code == 200
    refused = create(server, "H20", batch=BATCH)
    assert refused.status_code == 400
    assert refused.json() == {"detail": "Batch cannot exceed 20 hospitals"}
    assert slept == [5.0] * 20
    assert len(server.sim.hospitals(BATCH)) == 20


def test_activation_is_one_shot(up):
    create(up, "A", batch=BATCH)
    create(up, "B", batch=BATCH)
    first = call(up, "PATCH", f"/hospitals/batch/{BATCH}/activate")
    assert first.status_code == 200
    assert first.json()["activated_count"] == 2 and isinstance(first.json()["message"], str)
    assert all(h["active"] for h in up.sim.hospitals(BATCH))
    again = call(up, "PATCH", f"/hospitals/batch/{BATCH}/activate")
    assert again.status_code == 400
    assert again.json() == {
        "detail": "Cannot activate batch: one or more hospitals in the batch are already active"}
    assert (up.sim.stats["activations"], up.sim.stats["activate_requests"]) == (1, 2)


def test_update_cannot_change_active(up):
    hospital = create(up, batch=BATCH).json()
    updated = call(up, "PUT", f"/hospitals/{hospital['id']}", json={"active": True, "phone": None})
    assert updated.json() == {**hospital, "phone": None}


def test_delete_batch_reports_count_then_404(up):
    create(up, "A", batch=BATCH)
    create(up, "B", batch=BATCH)
    create(up, "Other")
    deleted = call(up, "DELETE", f"/hospitals/batch/{BATCH}")
    assert deleted.status_code == 200 and deleted.json()["deleted_count"] == 2
    assert [h["name"] for h in up.sim.hospitals()] == ["Other"]
    assert call(up, "DELETE", f"/hospitals/batch/{BATCH}").json() == {"detail": NOT_FOUND_BATCH}


@pytest.mark.parametrize(("method", "path", "detail"), [
    ("GET", "/hospitals/999", "Hospital not found"),
    ("PUT", "/hospitals/999", "Hospital not found"),
    ("DELETE", "/hospitals/999", "Hospital not found"),
    ("GET", f"/hospitals/batch/{BATCH}", NOT_FOUND_BATCH),
    ("PATCH", f"/hospitals/batch/{BATCH}/activate", NOT_FOUND_BATCH),
    ("DELETE", f"/hospitals/batch/{BATCH}", NOT_FOUND_BATCH),
    ("GET", "/no/such/path", "Not Found"),
])
def test_not_found_bodies(up, method, path, detail):
    response = call(up, method, path, json={})
    assert (response.status_code, response.json()) == (404, {"detail": detail})


def test_wrong_method_is_405_json(up):
    response = call(up, "PATCH", "/")
    assert (response.status_code, response.json()) == (405, {"detail": "Method Not Allowed"})


@pytest.mark.parametrize(("body", "loc"), [
    ({"address": "1 Main St"}, ["body", "name"]),
    ({"name": "", "address": "1 Main St"}, ["body", "name"]),
    ({"name": "A", "address": "   "}, ["body", "address"]),
    ({"name": 5, "address": "1 Main St"}, ["body", "name"]),
    ({"name": "A", "address": "B", "creation_batch_id": "not-a-uuid"}, ["body", "creation_batch_id"]),
])
def test_invalid_create_bodies_are_422_and_store_nothing(up, body, loc):
    response = call(up, "POST", "/hospitals/", json=body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == loc and error["msg"] and error["type"]
    assert up.sim.hospitals() == []


def test_non_json_body_is_422(up):
    response = call(up, "POST", "/hospitals/", data="name=A",
                    headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_batch_path_must_be_a_uuid(up):
    response = call(up, "GET", "/hospitals/batch/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "batch_id"]


def test_post_without_slash_redirects_307(up):
    response = call(up, "POST", "/hospitals", json={"name": "A", "address": "B"}, allow_redirects=False)
    assert response.status_code == 307
    assert response.headers["Location"] == up.url + "/hospitals/"
    assert up.sim.stats["create_requests"] == 0
    followed = call(up, "POST", "/hospitals", json={"name": "A", "address": "B"})
    assert followed.status_code == 200 and len(up.sim.hospitals()) == 1


def test_create_limit_answers_429_creates_nothing_and_resets_with_window(start):
    clock = FakeClock()
    server = start(create_limit=2, clock=clock)
    assert [create(server).status_code for _ in range(2)] == [200, 200]
    limited = create(server, "Third")
    assert limited.status_code == 429
    assert limited.json() == {"error": "Rate limit exceeded: 2 per 1 minute"}
    assert "Retry-After" not in limited.headers
    assert [h["name"] for h in server.sim.hospitals()] == ["General", "General"]
    stats = server.sim.stats
    assert (stats["create_requests"], stats["created"], stats["rate_limited"]) == (3, 2, 1)
    clock.now += 59.9
    assert create(server).status_code == 429
    clock.now += 0.1
    assert create(server).status_code == 200


def test_health_and_other_limits_are_separate(start):
    server = start(health_limit=1, other_limit=1, window=2.0, clock=FakeClock())
    assert call(server, "GET", "/").status_code == 200
    limited = call(server, "GET", "/")
    assert (limited.status_code, limited.json()) == (429, {"error": "Rate limit exceeded: 1 per 2 seconds"})
    assert call(server, "GET", "/hospitals/").status_code == 200
    assert call(server, "GET", "/hospitals/").status_code == 429


def test_error_500_fault_stores_nothing(up):
    up.sim.add_fault("create", "error_500")
    response = create(up)
    assert (response.status_code, response.json()) == (500, {"detail": "Internal Server Error"})
    assert up.sim.hospitals() == []
    assert create(up).status_code == 200
    assert up.sim.stats["faults_fired"] == 1


def test_fault_after_skips_requests_and_times_counts_them(up):
    up.sim.add_fault("create", "error_500", times=2, after=1)
    assert [create(up).status_code for _ in range(4)] == [200, 500, 500, 200]
    assert len(up.sim.hospitals()) == 2


def test_store_then_500_fault_stores(up):
    up.sim.add_fault("create", "store_then_500")
    response = create(up, batch=BATCH)
    assert response.status_code == 500
    assert len(up.sim.hospitals(BATCH)) == 1


def test_store_then_500_on_activate_activates(up):
    create(up, batch=BATCH)
    up.sim.add_fault("activate", "store_then_500")
    assert call(up, "PATCH", f"/hospitals/batch/{BATCH}/activate").status_code == 500
    assert up.sim.hospitals(BATCH)[0]["active"] is True
    assert call(up, "PATCH", f"/hospitals/batch/{BATCH}/activate").status_code == 400


def test_store_then_drop_fault_drops_connection_after_storing(up, capfd):
    up.sim.add_fault("create", "store_then_drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        create(up)
    assert len(up.sim.hospitals()) == 1
    assert create(up).status_code == 200
    assert "Traceback" not in capfd.readouterr().err


def test_store_then_hang_fault_times_out_the_client_after_storing(start):
    server = start(hang_seconds=1.0)
    server.sim.add_fault("create", "store_then_hang")
    with pytest.raises(requests.exceptions.ReadTimeout):
        call(server, "POST", "/hospitals/", json={"name": "A", "address": "B"}, timeout=(2, 0.2))
    assert len(server.sim.hospitals()) == 1


def test_html_502_fault_answers_html_and_stores_nothing(up):
    up.sim.add_fault("create", "html_502")
    response = create(up)
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html" in response.text.lower()
    assert up.sim.hospitals() == []


def test_rate_limit_fault_answers_429_and_stores_nothing(up):
    up.sim.add_fault("create", "rate_limit")
    response = create(up)
    assert (response.status_code, response.json()) == (429, {"error": "Rate limit exceeded: 30 per 1 minute"})
    assert up.sim.hospitals() == [] and up.sim.stats["rate_limited"] == 1


def test_list_batch_fault(up):
    create(up, batch=BATCH)
    up.sim.add_fault("list_batch", "error_500")
    assert call(up, "GET", f"/hospitals/batch/{BATCH}").status_code == 500
    assert call(up, "GET", f"/hospitals/batch/{BATCH}").status_code == 200


def test_unknown_fault_is_rejected(up):
    with pytest.raises(ValueError):
        up.sim.add_fault("create", "explode")
    with pytest.raises(ValueError):
        up.sim.add_fault("teleport", "error_500")


def test_clear_faults_and_reset(up):
    up.sim.add_fault("create", "error_500")
    up.sim.clear_faults()
    first = create(up).json()
    up.sim.add_fault("create", "error_500")
    up.sim.reset()
    assert up.sim.hospitals() == [] and up.sim.stats["created"] == 0
    assert create(up).json()["id"] > first["id"]


def test_slow_create_takes_its_seconds_instead_of_the_delay_and_stores(start):
    slept = []
    server = start(delay=5.0, sleep=slept.append)
    server.sim.add_fault("create", "slow", seconds=3.0)
    hospital = create(server, "Slow", batch=BATCH).json()
    assert slept == [3.0]
    assert server.sim.hospitals(BATCH) == [hospital]
    assert create(server, "Next").status_code == 200
    assert slept == [3.0, 5.0]
    assert server.sim.stats["faults_fired"] == 1


def test_slow_create_is_refused_by_the_batch_cap_before_its_delay(start):
    slept = []
    server = start(delay=5.0, sleep=slept.append)
    for n in range(20):
        create(server, f"H{n}", batch=BATCH)
    server.sim.add_fault("create", "slow", seconds=3.0)
    assert create(server, "H20", batch=BATCH).status_code == 400
    assert slept == [5.0] * 20


def test_slow_create_over_the_rate_limit_is_429_and_the_fault_waits(start):
    slept = []
    server = start(create_limit=1, clock=FakeClock(), sleep=slept.append)
    assert create(server).status_code == 200
    server.sim.add_fault("create", "slow", seconds=3.0)
    assert create(server).status_code == 429
    assert slept == [0.05] and server.sim.stats["faults_fired"] == 0


@pytest.mark.parametrize(("op", "method", "path", "status"), [
    ("list_batch", "GET", f"/hospitals/batch/{BATCH}", 200),
    ("activate", "PATCH", f"/hospitals/batch/{BATCH}/activate", 200),
    ("health", "GET", "/", 200),
    ("delete_batch", "DELETE", f"/hospitals/batch/{BATCH}", 200),
])
def test_slow_fault_on_other_operations_waits_then_acts(start, op, method, path, status):
    slept = []
    server = start(delay=0.0, sleep=slept.append)
    create(server, batch=BATCH)
    server.sim.add_fault(op, "slow", seconds=2.5)
    assert call(server, method, path).status_code == status
    assert slept == [0.0, 2.5]


def test_slow_create_lands_after_the_client_gave_up(start):
    server = start()
    server.sim.add_fault("create", "slow", seconds=0.6)
    with pytest.raises(requests.exceptions.ReadTimeout):
        call(server, "POST", "/hospitals/", json={"name": "Late", "address": "B"}, timeout=(2, 0.1))
    assert server.sim.wait_idle(timeout=10)
    assert [h["name"] for h in server.sim.hospitals()] == ["Late"]


@pytest.mark.parametrize("seconds", [None, -1.0])
def test_slow_fault_needs_seconds(up, seconds):
    with pytest.raises(ValueError):
        up.sim.add_fault("create", "slow", seconds=seconds)


def test_hang_fault_holds_the_request_and_stores_nothing(up):
    up.sim.add_fault("create", "hang")  # held for hang_seconds (30 s) unless released
    with pytest.raises(requests.exceptions.ReadTimeout):
        call(up, "POST", "/hospitals/", json={"name": "A", "address": "B"}, timeout=(2, 0.1))
    up.sim.release_hangs()
    assert up.sim.wait_idle(timeout=10)
    assert up.sim.hospitals() == [] and up.sim.stats["faults_fired"] == 1


def test_hang_fault_with_seconds_ends_in_a_dropped_connection(up, capfd):
    up.sim.add_fault("create", "hang", seconds=0.05)
    with pytest.raises(requests.exceptions.ConnectionError):
        create(up)
    assert up.sim.hospitals() == []
    assert "Traceback" not in capfd.readouterr().err


def test_store_then_hang_seconds_overrides_hang_seconds(up):
    up.sim.add_fault("create", "store_then_hang", seconds=0.05)
    assert create(up).status_code == 200  # hang_seconds is 30 s; the client waits at most 5
    assert len(up.sim.hospitals()) == 1


def address(server):
    parts = urlsplit(server.url)
    return parts.hostname, parts.port


def connect_errno(server):
    """Connect once to the server's port: None when accepted, else the error number."""
    try:
        socket.create_connection(address(server), timeout=5).close()
    except OSError as exc:
        return exc.errno
    return None


def healthy(server):
    try:
        return call(server, "GET", "/").status_code == 200
    except requests.exceptions.ConnectionError:
        return False


def outage_timers():
    return [t for t in threading.enumerate() if t.name.startswith("simulator-outage-")]


def test_refuse_closes_the_port_until_accept(up):
    url = up.url
    up.refuse()
    assert up.refusing
    assert connect_errno(up) == errno.ECONNREFUSED
    with pytest.raises(requests.exceptions.ConnectionError):
        call(up, "GET", "/")
    up.accept()
    assert not up.refusing and up.url == url
    assert call(up, "GET", "/").status_code == 200


def test_a_session_that_was_served_is_refused_too(up):
    with requests.Session() as session:
        first = session.get(up.url + "/", timeout=5)
        assert first.headers["Connection"] == "close"  # nothing kept alive past an outage
        up.refuse()
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(up.url + "/", timeout=5)


def test_refuse_connections_reopens_the_same_port_after_its_seconds(up):
    create(up, "Before")
    up.refuse_connections(0.2)
    assert connect_errno(up) == errno.ECONNREFUSED
    wait_until(lambda: healthy(up), timeout=10, what="the port to open again")
    assert not up.refusing
    assert [h["name"] for h in up.sim.hospitals()] == ["Before"]


def test_request_in_flight_finishes_while_refusing(up):
    up.sim.add_fault("create", "slow", seconds=0.5)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(create, up, "In flight")
        wait_until(lambda: up.sim.stats["create_requests"] == 1, timeout=10, what="the create to arrive")
        up.refuse()
        assert pending.result(timeout=10).status_code == 200
    assert connect_errno(up) == errno.ECONNREFUSED
    assert [h["name"] for h in up.sim.hospitals()] == ["In flight"]


def test_outage_starts_when_the_nth_request_arrives_and_that_one_is_answered(up):
    up.refuse_connections(60, after_requests=2)
    assert [call(up, "GET", "/").status_code for _ in range(2)] == [200, 200]
    assert connect_errno(up) == errno.ECONNREFUSED
    up.accept()
    assert call(up, "GET", "/").status_code == 200


def test_the_latest_control_call_wins(up):
    up.refuse_connections(0.05)
    up.refuse()
    for timer in outage_timers():
        timer.join(timeout=10)
    assert up.refusing and connect_errno(up) == errno.ECONNREFUSED
    up.refuse_connections(60, after_requests=1)
    up.accept()
    assert [call(up, "GET", "/").status_code for _ in range(2)] == [200, 200]


@pytest.mark.parametrize("state", ["serving", "refusing", "outage", "countdown", "stopped"])
def test_stop_works_in_every_state(start, state):
    server = start()
    {"serving": lambda: None, "refusing": server.refuse, "outage": lambda: server.refuse_connections(60),
     "countdown": lambda: server.refuse_connections(60, after_requests=5), "stopped": server.stop}[state]()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(server.stop).result(timeout=10)  # far less than the 60 s outage
    server.stop()
    assert outage_timers() == []
    assert connect_errno(server) == errno.ECONNREFUSED and not server.refusing
    with pytest.raises(RuntimeError):
        server.accept()


def test_accept_keeps_trying_while_the_port_is_taken(up, monkeypatch):
    refused_once = threading.Event()
    real_create_server = socket.create_server

    def create_server(*args, **kwargs):
        try:
            return real_create_server(*args, **kwargs)
        except OSError:
            refused_once.set()
            raise

    up.refuse()
    squatter = socket.create_server(address(up))
    monkeypatch.setattr(socket, "create_server", create_server)
    with ThreadPoolExecutor(max_workers=1) as pool, squatter:
        accepted = pool.submit(up.accept)
        assert refused_once.wait(timeout=10)
        squatter.close()
        accepted.result(timeout=10)
    assert call(up, "GET", "/").status_code == 200


def test_accept_gives_up_after_its_deadline_while_the_port_is_taken(up):
    up.refuse()
    up.rebind_seconds = 0.1
    with socket.create_server(address(up)) as squatter:
        with pytest.raises(OSError) as info:
            up.accept()
        assert info.value.errno == errno.EADDRINUSE and up.refusing
        assert squatter.getsockname()[1] == address(up)[1]
    up.accept()
    assert call(up, "GET", "/").status_code == 200


def test_forty_concurrent_creations_overlap(start):
    server = start(delay=0.2)
    with ThreadPoolExecutor(max_workers=40) as pool:
        statuses = list(pool.map(lambda n: create(server, f"H{n}").status_code, range(40)))
    assert statuses == [200] * 40
    assert server.sim.stats["created"] == 40
    assert server.sim.stats["max_in_flight"] >= 20


def test_cold_start_delays_first_request_and_first_after_idle(start):
    clock, slept = FakeClock(), []
    server = start(cold_start=30.0, idle_after=900.0, clock=clock, sleep=slept.append)
    call(server, "GET", "/")
    call(server, "GET", "/")
    assert slept == [30.0]
    clock.now += 899
    call(server, "GET", "/")
    assert slept == [30.0]
    clock.now += 900
    assert call(server, "GET", "/").status_code == 200
    assert slept == [30.0, 30.0]


def read_line(stream, deadline_seconds):
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout=deadline_seconds):
            raise AssertionError(f"no output within {deadline_seconds} s")
    return stream.readline()


def test_cli_serves_until_terminated():
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "bulkproc.simulator", "--port", "0", "--delay", "0"]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            # The line is printed after the socket is bound, so the server answers at once.
            line = read_line(proc.stdout, 15)
            url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
            response = requests.get(url + "/", timeout=5)
            assert (response.status_code, response.json()) == (200, {"status": "OK"})
        finally:
            proc.terminate()
            _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err and err.strip() == ""


def test_cli_refuses_connections_after_the_requests_it_was_told(tmp_path):
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "bulkproc.simulator", "--port", "0", "--delay", "0",
               "--refuse-for", "60", "--refuse-after", "1"]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            url = re.search(r"http://127\.0\.0\.1:\d+", read_line(proc.stdout, 15)).group(0)
            assert requests.get(url + "/", timeout=5).status_code == 200
            assert "refusing connections" in read_line(proc.stdout, 15)
            with pytest.raises(requests.exceptions.ConnectionError):
                requests.get(url + "/", timeout=5)
        finally:
            proc.terminate()
            _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err and err.strip() == ""


def test_a_batch_lists_only_its_stored_hospitals_through_eviction_and_deletion():
    directory = Directory(capacity=3)
    first, other = "batch-a", "batch-b"
    ids = [directory.insert({"name": f"H{n}", "address": "1 Main St", "phone": None,
                             "creation_batch_id": first if n != 2 else other})["id"] for n in range(1, 5)]

    # The oldest (of the first batch) was evicted beyond the capacity.
    assert [h["id"] for h in directory.hospitals(first)] == [ids[2], ids[3]]
    assert (directory.batch_size(first), directory.batch_size(other)) == (2, 1)
    directory.delete(ids[2])
    assert [h["id"] for h in directory.hospitals(first)] == [ids[3]]
    assert directory.activate(first) == 1 and directory.hospitals(first)[0]["active"]
    assert directory.delete_batch(other) == 1
    assert directory.hospitals(other) == [] and directory.batch_size(other) == 0
    assert [h["id"] for h in directory.hospitals()] == [ids[3]]
