"""One row's life upstream, at the HTTP seam: post, sort the failure, reconcile before posting again."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import responses
from responses import matchers
from responses.registries import OrderedRegistry

from bulkproc.errors import GaveUp, Refused
from bulkproc.files.rules import HospitalRow
from bulkproc.states import RowStatus
from bulkproc.store import Run, Store
from bulkproc.upstream.client import DirectoryClient
from bulkproc.work.rate_limit import NoLimiter
from bulkproc.work.rows import RowCreator, Seats
from tests.support import FakeClock

BASE = "http://directory.test"
BATCH = "550e8400-e29b-41d4-a716-446655440000"
CREATE = f"{BASE}/hospitals/"
LIST = f"{BASE}/hospitals/batch/{BATCH}"
BODY = {"name": "General", "address": "1 Main St", "phone": "555-1234", "creation_batch_id": BATCH}
RATE_LIMITED = {"status": 429, "json": {"error": "Rate limit exceeded: 30 per 1 minute"}}


def hospital(id_: int = 7, active: bool = False, **fields) -> dict:
    return {"id": id_, "name": "General", "address": "1 Main St", "phone": "555-1234",
            "creation_batch_id": BATCH, "active": active, "created_at": "2026-11-25T10:00:00.000001", **fields}


class FakeLimiter(NoLimiter):
    """Counts slots and back-offs; holds creations back itself after a 429, like the shared limiter."""

    def __init__(self) -> None:
        self.acquired = 0
        self.backed_off = 0
        self.given_back = 0

    def acquire(self, deadline=None) -> None:
        self.acquired += 1

    def back_off(self) -> bool:
        self.backed_off += 1
        return True

    def give_back(self) -> None:
        self.given_back += 1


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/jobs.sqlite3")
    store.insert_batch(BATCH, [HospitalRow(1, "General", "1 Main St", "555-1234"),
                               HospitalRow(2, "Another row", "2 Main St", None)], owner="test", token="t",
                      lease_until=0)
    yield store
    store.close()


@pytest.fixture
def make_creator(store, sleeps):
    made = []

    def build(*, limiter=None, clock=None, max_attempts: int = 4, **client_options) -> RowCreator:
        client = DirectoryClient(BASE, max_attempts=max_attempts, backoff=1.0, sleep=sleeps.append,
                                 jitter=client_options.pop("jitter", lambda: 1.0),
                                 **({"clock": clock} if clock else {}), **client_options)
        executor = ThreadPoolExecutor(1)
        made.append((client, executor))
        return RowCreator(store, client, limiter or FakeLimiter(), executor, stopping=threading.Event(),
                          settle_seconds=0.0)

    yield build
    for client, executor in made:
        executor.shutdown()
        client.close()


@pytest.fixture
def creator(make_creator) -> RowCreator:
    return make_creator()


def row(store, number: int = 1):
    return store.get_batch(BATCH).rows[number - 1]


def create(creator, **kwargs):
    return creator.post(Run(BATCH, "t"), row(creator.store), **kwargs)


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_created_hospital_is_returned_and_the_body_carries_the_batch(creator):
    responses.post(CREATE, json=hospital(), match=[matchers.json_params_matcher(BODY)])

    assert create(creator).id == 7
    assert creator.limiter.acquired == 0  # the first slot was taken for it by the fan-out


@pytest.mark.parametrize("status", [502, 503, 504])
@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_gateway_error_is_retried_after_checking_the_batch(creator, sleeps, status):
    gateway = responses.post(CREATE, status=status, body="<html>Bad gateway</html>")
    listing = responses.get(LIST, status=404, json={"detail": "No hospitals found with the specified batch ID"})
    created = responses.post(CREATE, json=hospital())

    assert create(creator).id == 7
    assert (gateway.call_count, listing.call_count, created.call_count) == (1, 1, 1)
    assert sleeps == [1.0]


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_429_backs_off_the_whole_limiter_and_retries_without_reading_the_batch(creator, sleeps):
    responses.post(CREATE, **RATE_LIMITED)
    responses.post(CREATE, **RATE_LIMITED)
    responses.post(CREATE, json=hospital())

    assert create(creator).id == 7
    assert creator.limiter.backed_off == 2
    assert creator.limiter.acquired == 2  # one slot for each post after the first
    assert sleeps == [1.0, 2.0]  # exponential


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_without_a_shared_limiter_a_429_waits_at_least_half_the_window(make_creator, sleeps):
    creator = make_creator(limiter=NoLimiter(), max_attempts=3, rate_limit_pause=60.0, jitter=lambda: 0.0)
    responses.post(CREATE, **RATE_LIMITED)
    responses.post(CREATE, json=hospital())

    assert create(creator).id == 7
    assert sleeps == [30.0]


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_429s_never_spend_the_attempts(creator):
    # A 429 was not processed upstream: the row waits for the window, however many it takes.
    for _ in range(6):  # more than the creator's 4 attempts
        responses.post(CREATE, **RATE_LIMITED)
    responses.post(CREATE, json=hospital())

    assert create(creator).id == 7


@responses.activate
def test_429s_end_only_at_the_batch_deadline(make_creator, sleeps):
    creator = make_creator(clock=lambda: sum(sleeps))  # time passes only in the back-off sleeps
    responses.post(CREATE, **RATE_LIMITED)

    with pytest.raises(GaveUp, match="deadline"):
        create(creator, deadline=100.0)
    assert len(responses.calls) > 4 and sum(sleeps) < 100.0


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_connection_never_established_is_posted_again_without_reading(creator):
    responses.post(CREATE, body=requests.exceptions.ConnectTimeout("connect timed out"))
    responses.post(CREATE, json=hospital())

    assert create(creator).id == 7


@pytest.mark.parametrize("failure", [
    requests.exceptions.ReadTimeout("read timed out"),
    requests.exceptions.ConnectionError("Connection aborted: RemoteDisconnected"),
    requests.exceptions.ChunkedEncodingError("connection broken"),
], ids=["read-timeout", "dropped", "chunked"])
@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_an_ambiguous_failure_takes_the_hospital_found_in_the_batch_instead_of_posting_again(creator, failure):
    post = responses.post(CREATE, body=failure)
    responses.get(LIST, json=[hospital(id_=41)])

    assert create(creator).id == 41
    assert post.call_count == 1


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_500_that_created_nothing_is_posted_again_after_reading(creator):
    responses.post(CREATE, status=500, json={"detail": "Internal Server Error"})
    responses.get(LIST, json=[hospital(id_=3, name="Another row")])
    responses.post(CREATE, json=hospital(id_=8))

    assert create(creator).id == 8


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_hospital_claimed_by_another_row_is_not_taken(creator):
    creator.store.record_created(Run(BATCH, "t"), 2, 5)  # row 2 owns hospital 5, though it carries row 1's data
    responses.post(CREATE, status=500, json={"detail": "Internal Server Error"})
    responses.get(LIST, json=[hospital(id_=5)])
    responses.post(CREATE, json=hospital(id_=9))

    assert create(creator).id == 9


@pytest.mark.parametrize("status,body,words", [
    (422, {"detail": [{"loc": ["body", "name"], "msg": "Field required", "type": "missing"}]}, "name: Field required"),
    (400, {"detail": "Batch cannot exceed 20 hospitals"}, "Batch cannot exceed 20"),
])
@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_other_4xx_is_final_and_carries_the_upstream_message(creator, status, body, words):
    post = responses.post(CREATE, status=status, json=body)

    with pytest.raises(Refused, match=words) as refused:
        create(creator)
    assert refused.value.status == status
    assert post.call_count == 1


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_the_deadline_stops_the_retries(make_creator):
    creator = make_creator(clock=lambda: 100.0)
    responses.post(CREATE, **RATE_LIMITED)

    with pytest.raises(GaveUp, match="deadline"):
        create(creator, deadline=100.5)


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_post_that_never_connected_gives_its_slot_back_and_leaves_nothing_to_wait_for(creator):
    creator.store.mark_rows_in_flight(Run(BATCH, "t"), [1], 1000.0)
    responses.post(CREATE, body=requests.exceptions.ConnectTimeout("connect timed out"))
    responses.post(CREATE, **RATE_LIMITED)
    responses.post(CREATE, json=hospital())

    assert create(creator).id == 7
    assert creator.limiter.given_back == 1  # the refused connection's, not the 429's: that one counted
    assert row(creator.store).attempted_at is not None  # the last post may have landed: it did


@responses.activate(registry=OrderedRegistry, assert_all_requests_are_fired=True)
def test_a_row_whose_posts_never_reached_the_directory_is_known_absent(make_creator):
    creator = make_creator(max_attempts=2)
    creator.store.mark_rows_in_flight(Run(BATCH, "t"), [1], 1000.0)
    responses.post(CREATE, body=requests.exceptions.ConnectTimeout("connect timed out"))
    responses.post(CREATE, **RATE_LIMITED)
    responses.post(CREATE, body=requests.exceptions.ConnectTimeout("connect timed out"))

    with pytest.raises(GaveUp):
        create(creator)
    assert row(creator.store).attempted_at is None  # a resume need not wait for it to land


@responses.activate
def test_rows_take_their_slot_only_once_a_thread_can_send_them_so_each_is_marked_in_flight_once(tmp_path):
    # One thread, creations of 0.6 s on the creator's clock: rows handed to the executor all at
    # once would wait there past the 1 s that lets a row's slot time stand for its send time.
    store = Store(f"sqlite:///{tmp_path}/many.sqlite3")
    rows = [HospitalRow(n, f"Hospital {n}", f"{n} Main St", None) for n in range(1, 7)]
    store.insert_batch(BATCH, rows, owner="test", token="t", lease_until=0)
    clock = FakeClock()

    def created(request):
        clock.advance(0.6)
        body = json.loads(request.body)
        return 200, {}, json.dumps(hospital(100 + int(body["name"].split()[1]), name=body["name"],
                                            address=body["address"], phone=None))

    responses.add_callback(responses.POST, CREATE, callback=created)
    client, executor = DirectoryClient(BASE), ThreadPoolExecutor(1)
    creator = RowCreator(store, client, NoLimiter(), executor, stopping=threading.Event(), settle_seconds=100.0,
                         clock=clock)
    in_flight = []
    marked = store.mark_rows_in_flight
    store.mark_rows_in_flight = lambda run, rows, now: in_flight.append(list(rows)) or marked(run, rows, now)
    try:
        creator.create(Run(BATCH, "t"), store.get_batch(BATCH).rows, deadline=time.monotonic() + 60)
        statuses = {r.status for r in store.get_batch(BATCH).rows}
    finally:
        executor.shutdown()
        client.close()
        store.close()
    assert statuses == {RowStatus.CREATED}
    assert in_flight == []  # each row's one mark, with its slot, was within a second of its sending


def test_a_row_waiting_for_a_place_goes_once_one_frees_and_not_at_all_once_halted():
    seats, halt = Seats(2), threading.Event()
    assert seats.take(5, halt) == 2  # no more than the limit at once
    got = []
    waiter = threading.Thread(target=lambda: got.append(seats.take(1, halt)))
    waiter.start()
    seats.give_back()
    waiter.join(10)
    assert got == [1]

    halt.set()
    assert seats.take(1, halt) == 0  # full, and halted: it does not wait
