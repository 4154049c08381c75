"""The process's queue of SQLite writers: one at a time, and a lease renewal ahead of the others."""

from __future__ import annotations

import threading

from bulkproc.store import Store
from bulkproc.store.database import WriteQueue
from tests.support import wait_until
from tests.test_leases import accepted


def queued(queue: WriteQueue, order: list[str], name: str, urgent: bool = False) -> threading.Thread:
    """A writer that waits for its turn, then notes its name."""
    def write() -> None:
        with queue.hold(urgent):
            order.append(name)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_one_writer_at_a_time_and_an_urgent_one_goes_before_those_already_waiting():
    # Ten rounds: a queue that only let the renewal race the others would lose one by chance.
    for _ in range(10):
        queue, order = WriteQueue(), []
        with queue.hold():
            writers = [queued(queue, order, f"write {n}") for n in range(5)]
            wait_until(lambda: queue.waiting == 5, timeout=10, what="five writers waiting")
            writers.append(queued(queue, order, "renewal", urgent=True))
            wait_until(lambda: queue.waiting == 6, timeout=10, what="the renewal waiting")
            assert order == []  # nobody writes while the turn is taken
        for writer in writers:
            writer.join(10)
        assert order[0] == "renewal"
        assert sorted(order[1:]) == [f"write {n}" for n in range(5)]


def test_a_writer_that_fails_gives_up_its_turn():
    queue, order = WriteQueue(), []
    try:
        with queue.hold(urgent=True):
            raise RuntimeError("the statement failed")
    except RuntimeError:
        pass
    queued(queue, order, "next").join(10)
    assert order == ["next"]


def test_a_renewal_waits_for_the_write_in_progress_then_writes_a_whole_lease(tmp_path):
    # The lease is measured from the moment it is written, not from when the renewal asked.
    now = [1_700_000_000.0]
    store = Store(f"sqlite:///{tmp_path / 'jobs.sqlite3'}", clock=lambda: now[0])
    try:
        run = accepted(store)
        renewed = []
        with store._writers.hold():
            renewal = threading.Thread(target=lambda: renewed.append(store.renew_leases("process-a", 10.0, [run])))
            renewal.start()
            wait_until(lambda: store._writers.waiting == 1, timeout=10, what="the renewal waiting")
            now[0] += 7.0  # the write ahead of it took long
        renewal.join(10)
        assert renewed == [[]]
        assert store.get_batch(run.id).lease_expires == now[0] + 10.0
    finally:
        store.close()


def test_many_writers_some_urgent_all_get_their_turn_one_at_a_time():
    queue, inside, most, done = WriteQueue(), [0], [0], []
    guard = threading.Lock()

    def writer(n: int) -> None:
        for i in range(200):
            with queue.hold(urgent=(n + i) % 7 == 0):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                with guard:
                    inside[0] -= 1
        done.append(n)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(done) == list(range(16))  # nobody was left waiting for a wake-up
    assert most[0] == 1
