"""The upstream client at the HTTP seam: one method per endpoint, idempotent calls retried, activation settled."""

from __future__ import annotations

import pytest
import requests
import responses
from responses.registries import OrderedRegistry

from bulkproc.errors import GaveUp, Refused
from bulkproc.upstream.client import DirectoryClient

BASE = "http://directory.test"
BATCH = "550e8400-e29b-41d4-a716-446655440000"
LIST = f"{BASE}/hospitals/batch/{BATCH}"
ACTIVATE = f"{LIST}/activate"


def hospital(id_: int = 7, active: bool = False, **fields) -> dict:
    return {"id": id_, "name": "General", "address": "1 Main St", "phone": "555-1234",
            "creation_batch_id": BATCH, "active": active, "created_at": "2026-11-25T10:00:00.000001", **fields}


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps):
    c = DirectoryClient(BASE, max_attempts=4, backoff=1.0, sleep=sleeps.append, jitter=lambda: 1.0)
    yield c
    c.close()


@pytest.mark.parametrize("call", ["activate", "list"])
@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_429_on_other_calls_waits_for_the_window_instead_of_spending_the_attempts(client, sleeps, call):
    rate_limited = {"status": 429, "json": {"error": "Rate limit exceeded: 50 per 1 minute"}}
    if call == "activate":
        responses.patch(ACTIVATE, **rate_limited)
        responses.patch(ACTIVATE, json={"activated_count": 1, "message": "Batch activated"})
        responses.get(LIST, json=[hospital(active=True)])
        client.activate_batch(BATCH, [7])
    else:
        responses.get(LIST, **rate_limited)
        responses.get(LIST, json=[hospital()])
        assert len(client.list_batch(BATCH)) == 1
    assert sleeps == [60.0]  # jitter 1.0: the whole window


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_activation_succeeds_when_the_listing_then_shows_every_row_active(client):
    responses.patch(ACTIVATE, json={"activated_count": 2, "message": "Batch activated"})
    responses.get(LIST, json=[hospital(1, active=True), hospital(2, active=True)])

    assert [h.id for h in client.activate_batch(BATCH, [1, 2])] == [1, 2]


@pytest.mark.parametrize("first", [
    {"status": 400, "json": {"detail": "Cannot activate batch: one or more hospitals in the batch are already active"}},
    {"body": requests.exceptions.ReadTimeout("read timed out")},
    {"status": 500, "json": {"detail": "Internal Server Error"}},
], ids=["already-active", "read-timeout", "500"])
@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_an_activation_whose_answer_was_lost_counts_when_the_batch_is_all_active(client, first):
    patch = responses.patch(ACTIVATE, **first)
    responses.get(LIST, json=[hospital(1, active=True), hospital(2, active=True)])

    client.activate_batch(BATCH, [1, 2])
    assert patch.call_count == 1


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_an_activation_that_did_not_happen_is_sent_again(client):
    responses.patch(ACTIVATE, status=500, json={"detail": "Internal Server Error"})
    responses.get(LIST, json=[hospital(1), hospital(2)])
    responses.patch(ACTIVATE, json={"activated_count": 2, "message": "Batch activated"})
    responses.get(LIST, json=[hospital(1, active=True), hospital(2, active=True)])

    client.activate_batch(BATCH, [1, 2])


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_partly_active_batch_is_refused(client):
    responses.patch(ACTIVATE, status=400,
                    json={"detail": "Cannot activate batch: one or more hospitals in the batch are already active"})
    responses.get(LIST, json=[hospital(1, active=True), hospital(2)])

    with pytest.raises(Refused, match="never be activated"):
        client.activate_batch(BATCH, [1, 2])


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_list_batch_reads_404_as_empty_and_retries_gateway_errors(client):
    responses.get(LIST, status=503, body="unavailable")
    responses.get(LIST, status=404, json={"detail": "No hospitals found with the specified batch ID"})

    assert client.list_batch(BATCH) == []


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_delete_batch_treats_404_as_nothing_left(client):
    responses.delete(LIST, json={"deleted_count": 3, "message": "deleted"})
    responses.delete(LIST, status=404, json={"detail": "No hospitals found with the specified batch ID"})

    assert client.delete_batch(BATCH) == 3
    assert client.delete_batch(BATCH) == 0


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_wake_waits_with_the_long_timeout(client):
    call = responses.get(f"{BASE}/", json={"status": "OK"})

    client.wake(timeout=75)
    assert call.calls[0].request.req_kwargs["timeout"] == (5.0, 75)


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_an_instance_that_answered_lately_is_not_woken_again(sleeps):
    now = [1000.0]
    client = DirectoryClient(BASE, sleep=sleeps.append, clock=lambda: now[0])
    wake = responses.get(f"{BASE}/", json={"status": "OK"})
    responses.get(f"{BASE}/", json={"status": "OK"})

    client.wake(timeout=75)
    now[0] += 599
    client.wake(timeout=75)
    assert wake.call_count == 1
    now[0] += 2  # ten idle minutes: Render may have put it to sleep
    client.wake(timeout=75)
    client.close()


def test_every_call_has_a_timeout_and_sessions_are_per_thread(client):
    import threading

    sessions = []
    threads = [threading.Thread(target=lambda: sessions.append(client._session)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in sessions}) == 3
    assert client.timeout == (5.0, 90.0)


class FakeTime:
    """A monotonic clock that only the client's own sleeps move."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_an_unreachable_directory_is_waited_out_for_the_grace_trying_at_least_every_5_s():
    fake = FakeTime()
    client = DirectoryClient(BASE, max_attempts=2, backoff=1.0, outage_grace=60.0, sleep=fake.sleep,
                             clock=lambda: fake.now, jitter=lambda: 1.0)
    for failure in [requests.exceptions.ConnectTimeout("connect timed out")] * 6 + [{"status": 503}] * 2:
        responses.get(LIST, **({"body": failure} if isinstance(failure, Exception) else failure))
    responses.get(LIST, json=[hospital()])

    assert len(client.list_batch(BATCH)) == 1  # eight failures, though max_attempts is 2
    assert fake.sleeps == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    assert client.unreachable_for() is None  # it answers again
    client.close()


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_an_outage_longer_than_the_grace_gives_up_and_says_so():
    fake = FakeTime()
    client = DirectoryClient(BASE, max_attempts=2, backoff=1.0, outage_grace=12.0, sleep=fake.sleep,
                             clock=lambda: fake.now, jitter=lambda: 1.0)
    for _ in range(5):
        responses.get(LIST, body=requests.exceptions.ConnectTimeout("connect timed out"))

    with pytest.raises(GaveUp, match="stayed unreachable for 12 s.*could not connect"):
        client.list_batch(BATCH)
    assert fake.sleeps == [1.0, 2.0, 4.0, 5.0]
    assert client.unreachable_for() == 12.0
    client.close()


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_delete_hospital_counts_404_as_gone(client):
    responses.delete(f"{BASE}/hospitals/9", status=204)
    responses.delete(f"{BASE}/hospitals/9", status=404, json={"detail": "Hospital not found"})

    assert client.delete_hospital(9) is True
    assert client.delete_hospital(9) is False
