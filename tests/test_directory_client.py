"""The upstream client's decisions, at the HTTP seam: retry, reconcile, give up."""

from __future__ import annotations

import pytest
import requests
import responses
from responses import matchers
from responses.registries import OrderedRegistry

from bulkproc.directory_client import DirectoryClient, GaveUp, Refused

BASE = "http://directory.test"
BATCH = "550e8400-e29b-41d4-a716-446655440000"
CREATE = f"{BASE}/hospitals/"
LIST = f"{BASE}/hospitals/batch/{BATCH}"
ACTIVATE = f"{LIST}/activate"
BODY = {"name": "General", "address": "1 Main St", "phone": "555-1234", "creation_batch_id": BATCH}


def hospital(id_: int = 7, active: bool = False, **fields) -> dict:
    return {"id": id_, "name": "General", "address": "1 Main St", "phone": "555-1234",
            "creation_batch_id": BATCH, "active": active, "created_at": "2026-11-25T10:00:00.000001", **fields}


class FakeLimiter:
    def __init__(self) -> None:
        self.acquired = 0
        self.backed_off = 0

    def acquire(self, deadline=None) -> None:
        self.acquired += 1

    def take(self, wanted: int) -> tuple[int, float]:
        return wanted, 0.0

    def back_off(self) -> bool:
        self.backed_off += 1
        return True  # it holds creations back itself


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps):
    c = DirectoryClient(BASE, max_attempts=4, backoff=1.0, sleep=sleeps.append, jitter=lambda: 1.0,
                        limiter=FakeLimiter())
    yield c
    c.close()


def create(client, find_existing=lambda listing: None, **kwargs):
    return client.create_hospital(BATCH, "General", "1 Main St", "555-1234", find_existing=find_existing, **kwargs)


def mine(listing):
    return next((h for h in listing if h.name == "General"), None)


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_created_hospital_is_returned_and_the_body_carries_the_batch(client):
    responses.post(CREATE, json=hospital(), match=[matchers.json_params_matcher(BODY)])

    assert create(client).id == 7
    assert client.limiter.acquired == 1


@pytest.mark.parametrize("status", [502, 503, 504])
@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_gateway_error_is_retried_after_checking_the_batch(client, sleeps, status):
    gateway = responses.post(CREATE, status=status, body="<html>Bad gateway</html>")
    listing = responses.get(LIST, status=404, json={"detail": "No hospitals found with the specified batch ID"})
    created = responses.post(CREATE, json=hospital())

    assert create(client, mine).id == 7
    assert (gateway.call_count, listing.call_count, created.call_count) == (1, 1, 1)
    assert sleeps == [1.0]


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_429_backs_off_the_whole_limiter_and_retries_without_reading_the_batch(client, sleeps):
    responses.post(CREATE, status=429, json={"error": "Rate limit exceeded: 30 per 1 minute"})
    responses.post(CREATE, status=429, json={"error": "Rate limit exceeded: 30 per 1 minute"})
    responses.post(CREATE, json=hospital())

    assert create(client).id == 7
    assert client.limiter.backed_off == 2
    assert client.limiter.acquired == 3
    assert sleeps == [1.0, 2.0]  # exponential


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_without_a_shared_limiter_a_429_waits_at_least_half_the_window(sleeps):
    client = DirectoryClient(BASE, max_attempts=3, backoff=1.0, rate_limit_pause=60.0, sleep=sleeps.append,
                             jitter=lambda: 0.0)
    responses.post(CREATE, status=429, json={"error": "Rate limit exceeded: 30 per 1 minute"})
    responses.post(CREATE, json=hospital())

    assert create(client).id == 7
    assert sleeps == [30.0]
    client.close()


@pytest.mark.parametrize("call", ["activate", "list"])
@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_429_on_other_calls_waits_for_the_window_instead_of_spending_the_attempts(client, sleeps, call):
    rate_limited = {"status": 429, "json": {"error": "Rate limit exceeded: 50 per 1 minute"}}
    if call == "activate":
        responses.patch(ACTIVATE, **rate_limited)
        responses.patch(ACTIVATE, json={"activated_count": 1, "message": "Batch activated"})
        client.activate_batch(BATCH)
    else:
        responses.get(LIST, **rate_limited)
        responses.get(LIST, json=[hospital()])
        assert len(client.list_batch(BATCH)) == 1
    assert sleeps == [60.0]  # jitter 1.0: the whole window


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_429_alone_fails_a_row_only_when_the_attempts_run_out(client):
    for _ in range(4):
        responses.post(CREATE, status=429, json={"error": "Rate limit exceeded: 30 per 1 minute"})

    with pytest.raises(GaveUp, match="4 attempts.*429"):
        create(client)


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_connection_never_established_is_posted_again_without_reading(client):
    responses.post(CREATE, body=requests.exceptions.ConnectTimeout("connect timed out"))
    responses.post(CREATE, json=hospital())

    assert create(client).id == 7


@pytest.mark.parametrize("failure", [
    requests.exceptions.ReadTimeout("read timed out"),
    requests.exceptions.ConnectionError("Connection aborted: RemoteDisconnected"),
    requests.exceptions.ChunkedEncodingError("connection broken"),
], ids=["read-timeout", "dropped", "chunked"])
@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_an_ambiguous_failure_takes_the_hospital_found_in_the_batch_instead_of_posting_again(client, failure):
    post = responses.post(CREATE, body=failure)
    responses.get(LIST, json=[hospital(id_=41)])

    assert create(client, mine).id == 41
    assert post.call_count == 1


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_500_that_created_nothing_is_posted_again_after_reading(client):
    responses.post(CREATE, status=500, json={"detail": "Internal Server Error"})
    responses.get(LIST, json=[hospital(id_=3, name="Another row")])
    responses.post(CREATE, json=hospital(id_=8))

    assert create(client, mine).id == 8


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_hospital_claimed_by_another_row_is_not_taken(client):
    responses.post(CREATE, status=500, json={"detail": "Internal Server Error"})
    responses.get(LIST, json=[hospital(id_=5)])
    responses.post(CREATE, json=hospital(id_=9))

    claimed = {5}
    found = create(client, lambda listing: next((h for h in listing if h.id not in claimed), None))
    assert found.id == 9


@pytest.mark.parametrize("status,body,words", [
    (422, {"detail": [{"loc": ["body", "name"], "msg": "Field required", "type": "missing"}]}, "name: Field required"),
    (400, {"detail": "Batch cannot exceed 20 hospitals"}, "Batch cannot exceed 20"),
])
@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_other_4xx_is_final_and_carries_the_upstream_message(client, status, body, words):
    post = responses.post(CREATE, status=status, json=body)

    with pytest.raises(Refused, match=words) as refused:
        create(client)
    assert refused.value.status == status
    assert post.call_count == 1


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_the_deadline_stops_the_retries(client):
    responses.post(CREATE, status=429, json={"error": "Rate limit exceeded: 30 per 1 minute"})
    client._clock = lambda: 100.0

    with pytest.raises(GaveUp, match="deadline"):
        create(client, deadline=100.5)


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_activation_succeeds(client):
    responses.patch(ACTIVATE, json={"activated_count": 2, "message": "Batch activated"})

    client.activate_batch(BATCH)


@pytest.mark.parametrize("first", [
    {"status": 400, "json": {"detail": "Cannot activate batch: one or more hospitals in the batch are already active"}},
    {"body": requests.exceptions.ReadTimeout("read timed out")},
    {"status": 500, "json": {"detail": "Internal Server Error"}},
], ids=["already-active", "read-timeout", "500"])
@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_an_activation_whose_answer_was_lost_counts_when_the_batch_is_all_active(client, first):
    patch = responses.patch(ACTIVATE, **first)
    responses.get(LIST, json=[hospital(1, active=True), hospital(2, active=True)])

    client.activate_batch(BATCH)
    assert patch.call_count == 1


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_an_activation_that_did_not_happen_is_sent_again(client):
    responses.patch(ACTIVATE, status=500, json={"detail": "Internal Server Error"})
    responses.get(LIST, json=[hospital(1), hospital(2)])
    responses.patch(ACTIVATE, json={"activated_count": 2, "message": "Batch activated"})

    client.activate_batch(BATCH)


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_partly_active_batch_is_refused(client):
    responses.patch(ACTIVATE, status=400,
                    json={"detail": "Cannot activate batch: one or more hospitals in the batch are already active"})
    responses.get(LIST, json=[hospital(1, active=True), hospital(2)])

    with pytest.raises(Refused, match="never be activated"):
        client.activate_batch(BATCH)


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
def test_an_instance_that_answered_lately_is_not_woken_again(client):
    now = [1000.0]
    client._clock = lambda: now[0]
    wake = responses.get(f"{BASE}/", json={"status": "OK"})
    responses.get(f"{BASE}/", json={"status": "OK"})

    client.wake(timeout=75)
    now[0] += 599
    client.wake(timeout=75)
    assert wake.call_count == 1
    now[0] += 2  # ten idle minutes: Render may have put it to sleep
    client.wake(timeout=75)


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
