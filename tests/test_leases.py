"""The lease rules on a real store with a fake clock: take, renew, lapse, lose, fence, queued work, rollback."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from bulkproc.errors import RunLost, StoreUnavailable
from bulkproc.files.rules import HospitalRow
from bulkproc.states import RESUMABLE, BatchStatus, RowStatus
from bulkproc.store import Run, Store
from bulkproc.work.documents import batch_document, reported_import_status, reported_status
from bulkproc.work.heartbeat import Heartbeat
from tests.postgres import postgres_url, store_url  # noqa: F401
from tests.support import FakeClock

T0 = 1_700_000_000.0
LEASE = 10.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[Store]:  # noqa: F811
    store = Store(store_url, clock=clock, database_clock=False)
    yield store
    store.close()


def rows(count: int = 3) -> list[HospitalRow]:
    return [HospitalRow(n, f"Hospital {n}", f"{n} Main St", None) for n in range(1, count + 1)]


def accepted(store: Store, owner: str = "process-a", token: str = "run-a") -> Run:
    """A batch accepted by `owner`'s run `token`: queued, leased for LEASE seconds."""
    run = Run(str(uuid.uuid4()), token)
    store.insert_batch(run.id, rows(), owner=owner, lease_until=store.now() + LEASE, token=token)
    return run


def status(store: Store, batch_id: str) -> str:
    batch = store.get_batch(batch_id)
    return reported_status(batch, batch.read_at)


def every_transition(store: Store, run: Run) -> dict[str, bool]:
    """What each transition of `run` answers."""
    now = store.now()
    return {
        "start_run": store.start_run(run, now),
        "set_status": store.set_status(run, BatchStatus.PROCESSING),
        "set_error": store.set_error(run, "waiting"),
        "mark_rows_in_flight": store.mark_rows_in_flight(run, [1], now),
        "start_rows": bool(store.start_rows(run, [2], now)),
        "record_created": store.record_created(run, 1, 101),
        "record_row_failed": store.record_row_failed(run, 2, "refused"),
        "mark_row_unsent": store.mark_row_unsent(run, 2),
        "mark_rows_failed": store.mark_rows_failed(run, [3], "gave up"),
        "mark_rows_pending": store.mark_rows_pending(run, [3]),
        "cancel_pending_rows": store.cancel_pending_rows(run),
        "mark_activated": store.mark_activated(run),
        "release_lease": store.release_lease(run, BatchStatus.FAILED),
        "finish_run": store.finish_run(run, BatchStatus.FAILED, None, now),
        "mark_rolled_back": store.mark_rolled_back(run),
    }


# -- take, renew, lapse ------------------------------------------------------------------


def test_an_accepted_batch_is_owned_by_its_run_and_its_process(store):
    run = accepted(store)
    batch = store.get_batch(run.id)
    assert (batch.status, batch.lease_owner, batch.run_token, batch.lease_expires) == \
        (BatchStatus.QUEUED, "process-a", "run-a", T0 + LEASE)
    assert store.holds(run) and not store.holds(Run(run.id, "run-b"))


def test_a_renewal_extends_the_lease_of_every_run_the_process_holds(store, clock):
    first, second = accepted(store, token="run-1"), accepted(store, token="run-2")
    clock.advance(LEASE - 1)

    assert store.renew_leases("process-a", LEASE, [first, second]) == []

    clock.advance(LEASE - 1)  # past the first lease: only the renewal keeps them
    assert [status(store, r.id) for r in (first, second)] == [BatchStatus.QUEUED] * 2


def test_a_lease_not_renewed_lapses_and_reads_interrupted(store, clock):
    run = accepted(store)
    clock.advance(LEASE + 0.1)
    assert status(store, run.id) == BatchStatus.INTERRUPTED


def test_another_process_renews_nothing_of_a_batch_it_does_not_hold(store, clock):
    run = accepted(store)
    clock.advance(LEASE - 1)

    assert store.renew_leases("process-b", LEASE, [run]) == []
    assert store.get_batch(run.id).lease_expires == T0 + LEASE


def test_a_take_over_writes_a_new_token_in_the_same_transaction(store, clock):
    run = accepted(store)
    clock.advance(LEASE + 1)

    assert store.take_lease(run.id, "process-b", clock() + LEASE, (), "run-b")

    batch = store.get_batch(run.id)
    assert (batch.status, batch.lease_owner, batch.run_token) == (BatchStatus.QUEUED, "process-b", "run-b")
    assert not store.take_lease(run.id, "process-c", clock() + LEASE, RESUMABLE, "run-c")  # live again


# -- lose and fence ----------------------------------------------------------------------


def test_a_paused_process_that_wakes_after_a_take_over_learns_it_lost_and_renews_nothing(store, clock):
    run = accepted(store)
    store.start_run(run, clock())
    clock.advance(LEASE + 1)  # paused past its lease
    assert store.take_lease(run.id, "process-b", clock() + LEASE, (), "run-b")
    clock.advance(1)

    assert store.renew_leases("process-a", 100, [run]) == [run]

    batch = store.get_batch(run.id)
    assert (batch.lease_owner, batch.run_token, batch.lease_expires) == ("process-b", "run-b", T0 + 2 * LEASE + 1)


def test_a_stale_tokens_writes_change_nothing_and_report_false(store, clock):
    run = accepted(store)
    clock.advance(LEASE + 1)
    assert store.take_lease(run.id, "process-b", clock() + LEASE, (), "run-b")
    before = store.get_batch(run.id)

    answers = every_transition(store, run)

    assert answers == dict.fromkeys(answers, False)
    after = store.get_batch(run.id)
    assert (after.version, after.status, after.rows) == (before.version, before.status, before.rows)


def test_the_owning_runs_writes_hold(store):
    run = accepted(store)
    assert store.start_run(run, store.now()) and store.record_created(run, 1, 101)
    assert store.get_batch(run.id).rows[0].status == RowStatus.CREATED


def test_a_run_record_turns_a_failed_write_into_run_lost_and_wakes_its_waits(store):
    run = Run(str(uuid.uuid4()), "never-written")
    with pytest.raises(RunLost):
        run.holds(store.set_status(run, BatchStatus.PROCESSING))
    assert run.lost.is_set() and run.halt.is_set()
    with pytest.raises(RunLost):
        run.wait(30)  # returns at once: the run stops


def test_a_run_starts_only_from_the_queue(store):
    run = accepted(store)
    assert store.start_run(run, store.now())
    assert not store.start_run(run, store.now())  # a second start of the same run: already running


# -- queued work and the heartbeat -------------------------------------------------------


def test_the_heartbeat_renews_queued_batches_and_imports_with_their_batches(store, clock):
    heartbeat = Heartbeat(store, "process-a", LEASE, start=False)
    queued = heartbeat.hold(accepted(store))
    imp = Run(str(uuid.uuid4()), "import-run", "import")
    parts = [(str(uuid.uuid4()), rows(2)), (str(uuid.uuid4()), rows(2))]
    store.insert_import(imp.id, parts, owner="process-a", lease_until=clock() + LEASE, token=imp.token)
    heartbeat.hold(imp)

    for _ in range(5):  # five leases long, never run
        clock.advance(LEASE / 2)
        heartbeat.beat()

    assert status(store, queued.id) == BatchStatus.QUEUED
    assert reported_import_status(store.load_import(imp.id), clock()) == BatchStatus.QUEUED
    assert {status(store, batch_id) for batch_id, _ in parts} == {BatchStatus.QUEUED}


def test_the_heartbeat_tells_a_run_it_lost_its_batch_and_stops_renewing_it(store, clock):
    heartbeat = Heartbeat(store, "process-a", LEASE, start=False)
    run = heartbeat.hold(accepted(store))
    clock.advance(LEASE + 1)
    assert store.take_lease(run.id, "process-b", clock() + LEASE, (), "run-b")

    heartbeat.beat()

    assert run.lost.is_set() and heartbeat.find("batch", run.id) is None


def test_the_heartbeat_banks_a_running_runs_time(store, clock):
    heartbeat = Heartbeat(store, "process-a", LEASE, start=False)
    run = heartbeat.hold(accepted(store))
    store.start_run(run, clock())
    clock.advance(1.5)

    heartbeat.beat()

    batch = store.get_batch(run.id)
    assert (batch.elapsed, batch.run_started_at) == (1.5, T0 + 1.5)


def test_a_run_killed_before_its_first_renewal_keeps_its_time(store, clock):
    run = accepted(store)
    store.start_run(run, clock())
    clock.advance(2.1)
    store.record_created(run, 1, 101)  # its last write; then the process is killed
    clock.advance(LEASE + 5)

    batch = store.get_batch(run.id)
    document = batch_document(batch, batch.read_at)
    assert (document.status, document.processing_time_seconds) == (BatchStatus.INTERRUPTED, 2.1)


class FlakyStore:
    """A store whose first renewals fail as a locked database does."""

    def __init__(self, store: Store, failures: int) -> None:
        self.store, self.failures = store, failures
        self.renewed = threading.Event()

    def renew_leases(self, *args) -> list[Run]:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("database is locked")
        self.renewed.set()
        return self.store.renew_leases(*args)


def test_the_heartbeat_keeps_trying_after_store_errors(store, clock):
    flaky = FlakyStore(store, failures=3)
    heartbeat = Heartbeat(flaky, "process-a", 0.03)  # beats every 10 ms
    try:
        heartbeat.hold(accepted(store))
        assert flaky.renewed.wait(10)
    finally:
        heartbeat.close()
    assert flaky.failures == 0


def test_after_a_refused_renewal_the_heartbeat_tries_again_sooner_than_a_beat(store, clock):
    flaky, delays = FlakyStore(store, failures=2), []

    def wait(seconds: float) -> bool:  # the heartbeat's sleep: recorded, and closed after five
        delays.append(seconds)
        return len(delays) > 5

    heartbeat = Heartbeat(flaky, "process-a", 3.0, start=False, wait=wait)
    heartbeat.hold(accepted(store))
    heartbeat.run()

    beat, retry = heartbeat.interval, heartbeat.retry_interval
    assert retry < beat / 2
    # Two refusals cost two short retries, not two beats: the lease (three beats) still has time left.
    assert delays == [beat, retry, retry, beat, beat, beat]
    assert flaky.renewed.is_set()


# -- rolled back is final ----------------------------------------------------------------


def test_a_rolled_back_batch_refuses_every_transition_and_every_take(store, clock):
    run = accepted(store)
    assert store.mark_rolled_back(run)
    version = store.version(run.id)

    answers = every_transition(store, run)

    assert answers == dict.fromkeys(answers, False)
    clock.advance(LEASE + 1)
    every = [str(s) for s in BatchStatus]
    assert not store.take_lease(run.id, "process-b", clock() + LEASE, every, "run-b")
    batch = store.get_batch(run.id)
    assert (batch.status, batch.version) == (BatchStatus.ROLLED_BACK, version)
    assert {r.status for r in batch.rows} == {RowStatus.DELETED}


def test_a_rolled_back_import_cannot_be_held_or_taken_again(store, clock):
    imp = Run(str(uuid.uuid4()), "import-run", "import")
    store.insert_import(imp.id, [(str(uuid.uuid4()), rows(2))], owner="process-a",
                        lease_until=clock() + LEASE, token=imp.token)
    assert store.finish_import_run(imp, BatchStatus.ROLLED_BACK, 0.0)

    assert not store.hold_import(imp.id, "process-b", clock() + LEASE, "run-b")
    assert not store.take_import(imp.id, "process-b", clock() + LEASE, "run-c")
    assert not store.finish_import_run(imp, BatchStatus.FAILED, 0.0)
    assert store.load_import(imp.id).status == BatchStatus.ROLLED_BACK
