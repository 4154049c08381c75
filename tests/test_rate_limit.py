"""The create-rate limiter, on fake time, over SQLite and PostgreSQL stores."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from bulkproc.errors import GaveUp
from bulkproc.store import Store
from bulkproc.work.rate_limit import EDGE_SECONDS, WINDOW_MARGIN, RateLimiter
from tests.postgres import postgres_url, store_url  # noqa: F401

T0 = 1_700_000_000.0
# A wait may come out a hair long: the store re-checks after a float-rounded sleep (and asks 1 ms more).
SLACK = 0.005


def span(window: float) -> float:
    """How long the limiter holds a slot: the window plus its safety margin."""
    return window * WINDOW_MARGIN + EDGE_SECONDS


class FakeTime:
    """One clock for the store (wall), the limiter (monotonic and wall) and its sleep, which advances it."""

    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    monotonic = time

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def slept(self) -> float:
        """Seconds slept since the last call."""
        total, self.sleeps = sum(self.sleeps), []
        return total


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_limiter(store_url: str, fake: FakeTime) -> Iterator[Callable[..., RateLimiter]]:
    """Limiters, each on its own Store of this test's database (as gunicorn workers would have)."""
    stores: list[Store] = []

    def build(limit: int, window: float) -> RateLimiter:
        store = Store(store_url, clock=fake.time, database_clock=False)
        stores.append(store)
        return RateLimiter(store, limit, window, sleep=fake.sleep, clock=fake.monotonic, wall_clock=fake.time)

    yield build
    for store in stores:
        store.close()


def test_the_limit_passes_at_once_and_the_next_waits_a_window(make_limiter, fake):
    limiter = make_limiter(limit=5, window=60)
    for _ in range(5):
        limiter.acquire()
    assert fake.slept() == 0

    limiter.acquire()

    waited = fake.slept()
    assert 60 <= waited <= span(60) + SLACK
    assert waited == pytest.approx(span(60), abs=SLACK)


def test_no_window_ever_holds_more_than_the_limit(make_limiter, fake):
    limit, window = 3, 10
    limiter = make_limiter(limit=limit, window=window)
    arrivals, taken = [], []
    for n in range(40):
        fake.advance((0.0, 0.7, 2.5, 0.1, 6.0)[n % 5])  # uneven arrivals: bursts and lulls
        arrivals.append(fake.now)
        limiter.acquire()
        taken.append(fake.now)

    for n in range(limit, len(taken)):
        assert taken[n] - taken[n - limit] >= window, f"slots {n - limit}..{n} fit in one window"
        # ...and nobody waited longer than the slot it waited for took to come free.
        assert taken[n] <= max(arrivals[n], taken[n - limit] + span(window)) + SLACK
    assert len(set(taken)) < len(taken), "the bursts should have taken slots together"


def test_back_off_holds_every_acquirer_until_the_window_passes(make_limiter, fake):
    first, second = make_limiter(limit=10, window=60), make_limiter(limit=10, window=60)
    first.acquire()
    blocked_at = fake.now

    first.back_off()

    for limiter in (first, second):
        with pytest.raises(GaveUp):
            limiter.acquire(deadline=fake.monotonic() + span(60) / 2)
    assert fake.slept() == 0
    second.acquire()
    assert fake.slept() == pytest.approx(span(60), abs=SLACK)
    assert fake.now >= blocked_at + 60
    first.acquire()
    assert fake.slept() == 0


def test_a_back_off_does_not_shorten_a_longer_one(make_limiter, fake):
    long, short = make_limiter(limit=10, window=60), make_limiter(limit=10, window=5)
    long.back_off()
    short.back_off()

    short.acquire()

    assert fake.slept() == pytest.approx(span(60), abs=SLACK)


def test_acquire_gives_up_when_the_wait_would_pass_the_deadline(make_limiter, fake):
    limiter = make_limiter(limit=2, window=30)
    limiter.acquire()
    limiter.acquire()

    with pytest.raises(GaveUp):
        limiter.acquire(deadline=fake.monotonic() + span(30) - 1)
    assert fake.slept() == 0

    limiter.acquire(deadline=fake.monotonic() + span(30) + 1)
    assert fake.slept() == pytest.approx(span(30), abs=SLACK)


def test_giving_up_takes_no_slot(make_limiter, fake):
    limiter = make_limiter(limit=1, window=30)
    limiter.acquire()
    with pytest.raises(GaveUp):
        limiter.acquire(deadline=fake.monotonic() + 1)

    fake.advance(span(30))
    limiter.acquire()
    assert fake.slept() == 0


def test_two_stores_on_one_database_share_one_limit(make_limiter, fake):
    workers = [make_limiter(limit=4, window=60), make_limiter(limit=4, window=60)]
    for n in range(4):
        workers[n % 2].acquire()
        fake.advance(1)
    assert fake.slept() == 0

    # Four slots taken at T0..T0+3, two by each worker: the fifth overall waits for the first to expire...
    workers[0].acquire()
    assert fake.slept() == pytest.approx(span(60) - 4, abs=SLACK)
    # ...and the other worker's next one for the second.
    workers[1].acquire()
    assert fake.slept() == pytest.approx(1, abs=SLACK)


def test_concurrent_slot_takers_never_exceed_the_limit(store_url, fake):
    stores = [Store(store_url, clock=fake.time, database_clock=False) for _ in range(3)]
    barrier = threading.Barrier(12)
    waits: list[float] = []
    lock = threading.Lock()

    def take(store: Store) -> None:
        barrier.wait(timeout=20)
        taken, wait = store.take_create_slots(5, 60, 1)
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=take, args=(stores[n % 3],)) for n in range(12)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    finally:
        for store in stores:
            store.close()
    assert len(waits) == 12
    assert sorted(waits)[:5] == [0.0] * 5
    assert all(wait == pytest.approx(60) for wait in sorted(waits)[5:])


def test_a_batch_takes_what_the_window_allows_at_once_and_learns_when_more_frees(make_limiter, fake):
    limiter = make_limiter(limit=4, window=10)

    assert limiter.take(6) == (4, pytest.approx(limiter._span))
    fake.advance(3)
    assert limiter.take(2) == (0, pytest.approx(limiter._span - 3))
    fake.advance(limiter._span - 3)
    assert limiter.take(2) == (2, 0.0)


def test_a_slot_given_back_is_free_at_once(make_limiter, fake):
    limiter = make_limiter(limit=2, window=60)
    limiter.acquire()
    limiter.acquire()

    limiter.give_back()  # its request never reached the upstream

    limiter.acquire()
    assert fake.slept() == 0
    limiter.acquire()
    assert fake.slept() == pytest.approx(span(60), abs=SLACK)
