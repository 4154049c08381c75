"""The upstream client at the HTTP seam: one method per endpoint, idempotent calls retried, activation settled."""

from __future__ import annotations

import pytest
import requests
import responses
from responses.registries import OrderedRegistry

from bulkproc.errors import GaveUp, MaybeLanded, Refused
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


# -- the upstream is checked, not trusted ---------------------------------------------------

OTHER_BATCH = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
CREATE = f"{BASE}/hospitals/"
ACTIVATED = {"json": {"activated_count": 1, "message": "Batch activated"}}


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_ids_sent_as_json_strings_are_the_same_numbers(client):
    responses.post(CREATE, json=hospital("7"))
    responses.get(LIST, json=[hospital("7"), hospital(8.0)])

    assert client.create_hospital(BATCH, "General", "1 Main St", "555-1234").id == 7
    assert [h.id for h in client.list_batch(BATCH)] == [7, 8]


@pytest.mark.parametrize("bad", [
    {"body": "<html>ok</html>"}, {"json": {"hospitals": []}}, {"json": [{"id": 7}]},
    {"json": [hospital("7.5")]}, {"json": [hospital(True)]}, {"json": [hospital(active="yes")]},
], ids=["not-json", "object", "missing-fields", "fractional-id", "boolean-id", "active-not-boolean"])
@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_listing_that_is_not_a_listing_is_a_failed_read_and_is_read_again(client, sleeps, bad):
    responses.get(LIST, **bad)
    responses.get(LIST, json=[hospital()])

    assert [h.id for h in client.list_batch(BATCH)] == [7]
    assert len(sleeps) == 1


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_listing_that_stays_malformed_gives_up(client):
    for _ in range(4):
        responses.get(LIST, json={"error": "filtered"})

    with pytest.raises(GaveUp, match="not the JSON"):
        client.list_batch(BATCH)


@pytest.mark.parametrize("bad", [
    {"body": "created"}, {"json": {"id": 7}}, {"json": hospital("seven")},
    {"json": hospital(creation_batch_id=OTHER_BATCH)}, {"json": [hospital()]},
], ids=["not-json", "missing-fields", "word-id", "another-batch", "a-list"])
@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_creation_answered_200_with_no_hospital_may_have_landed(client, bad):
    responses.post(CREATE, **bad)

    with pytest.raises(MaybeLanded) as failure:
        client.create_hospital(BATCH, "General", "1 Main St", "555-1234")
    assert failure.value.answered  # the application finished: read the batch at once, no settle wait


@pytest.mark.parametrize("answer", [
    {"json": {"error": "Activation could not be completed"}}, {"body": "OK"}, {"json": {"message": "done"}},
], ids=["error-body", "not-json", "no-count"])
@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_an_activation_answered_200_counts_only_when_the_listing_shows_it(client, answer):
    first = responses.patch(ACTIVATE, **answer)
    responses.get(LIST, json=[hospital(1), hospital(2)])  # nothing was activated
    second = responses.patch(ACTIVATE, **ACTIVATED)
    responses.get(LIST, json=[hospital(1, active=True), hospital(2, active=True)])

    client.activate_batch(BATCH, [1, 2])
    assert (first.call_count, second.call_count) == (1, 1)


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_an_activation_that_answers_200_but_never_activates_gives_up(client):
    for _ in range(4):
        responses.patch(ACTIVATE, json={"error": "Activation could not be completed"})
        responses.get(LIST, json=[hospital(1)])

    with pytest.raises(GaveUp, match="activation: gave up"):
        client.activate_batch(BATCH, [1])


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_an_activation_is_not_success_while_a_created_row_is_missing_from_the_listing(client):
    responses.patch(ACTIVATE, **ACTIVATED)
    responses.get(LIST, json=[hospital(1, active=True)])  # hospital 2, created, is not there

    with pytest.raises(Refused, match="never be activated"):
        client.activate_batch(BATCH, [1, 2])


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_listing_keeps_hospitals_of_other_batches_marked_as_theirs(client):
    responses.get(LIST, json=[hospital(1), hospital(2, creation_batch_id=OTHER_BATCH),
                              hospital(3, creation_batch_id=BATCH.upper()), hospital(4, creation_batch_id=None)])

    assert [(h.id, h.of_batch(BATCH)) for h in client.list_batch(BATCH)] == [
        (1, True), (2, False), (3, True), (4, False)]


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_another_batchs_active_hospitals_do_not_make_ours_active(client):
    responses.patch(ACTIVATE, json={"error": "Activation could not be completed"})
    responses.get(LIST, json=[hospital(1), hospital(2, active=True, creation_batch_id=OTHER_BATCH)])
    responses.patch(ACTIVATE, **ACTIVATED)
    responses.get(LIST, json=[hospital(1, active=True), hospital(2, active=True, creation_batch_id=OTHER_BATCH)])

    client.activate_batch(BATCH, [1])  # not "part of the batch is active": hospital 2 is not ours


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_batch_deletion_answered_without_a_count_is_tried_again(client):
    responses.delete(LIST, json={"error": "busy"})
    responses.delete(LIST, status=404, json={"detail": "No hospitals found with the specified batch ID"})

    assert client.delete_batch(BATCH) == 0


class CountingPacer:
    def __init__(self) -> None:
        self.acquired: list[float | None] = []
        self.given_back = 0

    def acquire(self, deadline=None) -> None:
        self.acquired.append(deadline)

    def give_back(self) -> None:
        self.given_back += 1


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_every_call_but_creation_and_wake_up_is_paced_and_a_read_that_never_connected_gives_its_slot_back(sleeps):
    pacer = CountingPacer()
    client = DirectoryClient(BASE, max_attempts=4, backoff=1.0, sleep=sleeps.append, jitter=lambda: 1.0,
                             pacer=pacer)
    responses.get(f"{BASE}/", json={"status": "OK"})
    responses.post(CREATE, json=hospital(1))
    responses.get(LIST, body=requests.exceptions.ConnectTimeout("connect timed out"))
    responses.get(LIST, json=[hospital(1)])
    responses.patch(ACTIVATE, **ACTIVATED)
    responses.get(LIST, json=[hospital(1, active=True)])
    responses.delete(f"{BASE}/hospitals/1", status=204)
    responses.delete(LIST, json={"deleted_count": 0, "message": "deleted"})

    client.wake(timeout=5)
    client.create_hospital(BATCH, "General", "1 Main St", "555-1234")
    client.list_batch(BATCH, deadline=1e12)
    client.activate_batch(BATCH, [1])
    client.delete_hospital(1)
    client.delete_batch(BATCH)
    assert len(pacer.acquired) == 6 and pacer.acquired[:2] == [1e12, 1e12]
    assert pacer.given_back == 1
    client.close()
