"""The job store on SQLite and PostgreSQL: schema, batches, versions, idempotency, leases, watching."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import event, func, select, update

from bulkproc.errors import IdempotencyMismatch
from bulkproc.files.rules import HospitalRow
from bulkproc.states import RESUMABLE, BatchStatus, RowStatus
from bulkproc.store import Run, Store, limiter, metadata
from bulkproc.store import database as store_module
from bulkproc.store.imports import INSERT_PARTS
from bulkproc.store.schema import batches
from tests.postgres import postgres_url, store_url  # noqa: F401
from tests.support import FakeClock, wait_until

T0 = 1_700_000_000.0
# The run token the batches of these tests are written with (test_leases.py tests the fence itself).
TOKEN = "run-a"
JOIN_SECONDS = 20


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_store(store_url: str, clock: FakeClock) -> Iterator[Callable[..., Store]]:
    """Build Stores on this test's database (all on the fake clock unless told); closed afterwards."""
    stores: list[Store] = []

    def build(**kwargs) -> Store:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("database_clock", False)  # fake time, on PostgreSQL too
        store = Store(store_url, **kwargs)
        stores.append(store)
        return store

    yield build
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store) -> Store:
    return make_store()


def hospital_rows(count: int) -> list[HospitalRow]:
    return [HospitalRow(row=n, name=f"Hospital {n}", address=f"{n} Main St, Springfield",
                        phone=f"555-010-{n:04d}" if n % 2 else None) for n in range(1, count + 1)]


def new_batch(store: Store, count: int = 3, *, owner: str = "worker-a", lease_until: float = T0 + 10,
              **kwargs) -> str:
    kwargs.setdefault("token", TOKEN)
    batch_id, created = store.insert_batch(str(uuid.uuid4()), hospital_rows(count), owner=owner,
                                           lease_until=lease_until, **kwargs)
    assert created
    return batch_id


def mine(batch_id: str, token: str = TOKEN) -> Run:
    """The test's run of the batch (the token it was written with)."""
    return Run(batch_id, token)


def run_together(count: int, target: Callable[[int], object]) -> list[object]:
    """Run target(0..count-1) in threads released at the same instant; their results, or raise theirs."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=JOIN_SECONDS)
            results[index] = target(index)
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


# -- schema ------------------------------------------------------------------------------


def test_schema_creation_is_idempotent(make_store):
    first = make_store()
    batch_id = new_batch(first)
    second = make_store()

    assert second.get_batch(batch_id) is not None
    with second.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(limiter)).scalar_one() == 1


def open_store(url: str, **kwargs) -> Store:
    """Store(url), closing the engine a failed start leaves behind (so the failure, not a leak, is reported)."""
    store = Store.__new__(Store)
    try:
        store.__init__(url, **kwargs)
    except BaseException:
        if "engine" in vars(store):
            store.close()
        raise
    return store


def test_workers_starting_together_on_a_new_database_all_open_it(store_url, tmp_path, request):
    sqlite = request.node.callspec.params["store_url"] == "sqlite"
    for n in range(3):
        url = f"sqlite:///{tmp_path}/round-{n}.sqlite3" if sqlite else store_url
        stores: list[Store] = []
        lock = threading.Lock()

        def start(_: int) -> None:
            store = open_store(url)
            with lock:
                stores.append(store)

        try:
            run_together(4, start)
            with stores[0].engine.begin() as conn:
                assert conn.execute(select(func.count()).select_from(limiter)).scalar_one() == 1
                if not sqlite:
                    metadata.drop_all(conn)  # a new database again for the next round
        finally:
            for store in stores:
                store.close()


def test_sqlite_connections_keep_a_small_page_cache_whatever_the_file_size(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/jobs.sqlite3")
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -store_module.SQLITE_CACHE_KIB
    finally:
        store.close()


def test_a_new_sqlite_file_locked_by_another_worker_is_waited_for(tmp_path):
    path = tmp_path / "new.sqlite3"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        # Another worker is writing to the new file (before it was switched to WAL).
        other.execute("BEGIN IMMEDIATE")
        other.execute("CREATE TABLE other_worker (x INTEGER)")
        release = threading.Timer(0.5, other.execute, args=("COMMIT",))
        release.start()
        try:
            store = open_store(f"sqlite:///{path}")
        finally:
            release.join(JOIN_SECONDS)
        store.close()
    finally:
        other.close()


def test_a_worker_starting_while_another_creates_the_schema_waits_for_it(store_url, monkeypatch):
    first_creating, second_deciding, release_first = threading.Event(), threading.Event(), threading.Event()
    real_engine_for = store_module.engine_for
    hooks = []

    def pause_first(conn, cursor, statement, *args) -> None:
        # Hold the first worker inside its schema transaction, its first table made but not committed.
        if statement.lstrip().startswith("CREATE TABLE") and not first_creating.is_set():
            first_creating.set()
            release_first.wait(JOIN_SECONDS)

    def spot_second(conn, cursor, statement, *args) -> None:
        # The second worker is about to create tables itself (the race) or to queue for a lock.
        if statement.lstrip().startswith(("CREATE TABLE", "BEGIN IMMEDIATE", "SELECT pg_advisory")):
            second_deciding.set()

    def engine_for(url: str):
        engine = real_engine_for(url)
        name, hook = hooks.pop(0)
        event.listen(engine, name, hook)
        return engine

    monkeypatch.setattr(store_module, "engine_for", engine_for)
    hooks[:] = [("after_cursor_execute", pause_first), ("before_cursor_execute", spot_second)]
    stores: list[Store] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(open_store(store_url))
        except BaseException as exc:  # asserted on below, in the test's thread
            errors.append(exc)

    first, second = threading.Thread(target=start), threading.Thread(target=start)
    first.start()
    try:
        assert first_creating.wait(JOIN_SECONDS)
        second.start()
        # Whichever way it goes, give the second worker time to reach its decision (never needed in full).
        second_deciding.wait(2)
    finally:
        release_first.set()
        first.join(JOIN_SECONDS)
    if second.ident is not None:
        second.join(JOIN_SECONDS)
    for store in stores:
        store.close()
    assert not errors and len(stores) == 2


# -- batches and versions ----------------------------------------------------------------


def test_get_batch_returns_the_batch_with_its_rows_in_csv_order(store, clock):
    rows = hospital_rows(12)
    # Insert out of order: the store, not the insertion, must keep the CSV's order.
    shuffled = rows[5:] + rows[:5]
    batch_id, created = store.insert_batch("1d1b7a0c-4a44-4b67-9e5c-2b0c8b3e1f00", shuffled, owner="w",
                                           lease_until=T0 + 10)

    batch = store.get_batch(batch_id)
    assert created and batch_id == "1d1b7a0c-4a44-4b67-9e5c-2b0c8b3e1f00"
    assert (batch.status, batch.total, batch.activated, batch.version) == (BatchStatus.QUEUED, 12, False, 0)
    assert (batch.created_at, batch.updated_at, batch.lease_owner, batch.lease_expires) == (T0, T0, "w", T0 + 10)
    assert [(r.row, r.name, r.address, r.phone) for r in batch.rows] == \
        [(r.row, r.name, r.address, r.phone) for r in rows]
    assert {(r.status, r.hospital_id, r.error) for r in batch.rows} == {(RowStatus.PENDING, None, None)}


def test_get_batch_of_an_unknown_batch_is_none(store):
    assert store.get_batch(str(uuid.uuid4())) is None
    assert store.version(str(uuid.uuid4())) is None


def test_every_update_bumps_the_version(store, clock):
    batch_id = new_batch(store)
    seen = [store.version(batch_id)]

    clock.advance(1)
    store.start_run(mine(batch_id), clock())
    seen.append(store.version(batch_id))
    store.mark_rows_in_flight(mine(batch_id), [1], clock())
    seen.append(store.version(batch_id))
    store.record_created(mine(batch_id), 1, 101)
    seen.append(store.version(batch_id))
    store.mark_rows_failed(mine(batch_id), [2, 3], "refused")
    seen.append(store.version(batch_id))
    store.release_lease(mine(batch_id), BatchStatus.PARTIALLY_FAILED)
    seen.append(store.version(batch_id))
    assert store.take_lease(batch_id, "worker-b", clock() + 10, RESUMABLE, "run-b")
    seen.append(store.version(batch_id))

    assert seen == list(range(7))
    batch = store.get_batch(batch_id)
    assert batch.updated_at == T0 + 1
    assert [(r.status, r.hospital_id, r.error) for r in batch.rows] == [
        (RowStatus.CREATED, 101, None), (RowStatus.FAILED, None, "refused"), (RowStatus.FAILED, None, "refused")]


def test_concurrent_updates_of_one_batch_lose_nothing(store):
    batch_id = new_batch(store, count=20)
    initial = store.version(batch_id)

    def update(index: int) -> None:
        for n in range(10):
            if n % 2:
                store.mark_rows_failed(mine(batch_id), [index + 1], f"attempt {n}")
            else:
                store.set_status(mine(batch_id), BatchStatus.PROCESSING)

    run_together(20, update)

    batch = store.get_batch(batch_id)
    assert batch.version == initial + 200
    assert {(r.status, r.error) for r in batch.rows} == {(RowStatus.FAILED, "attempt 9")}


def _recording_while_a_group_commits(store: Store, calls: list[tuple[Run, int, int]]) -> list[object]:
    """record_created(*call) for each call in its own thread while another group's transaction is
    under way (its lock held), then let them through together; their answers."""
    results: list[object] = [None] * len(calls)
    errors: list[BaseException] = []

    def record(index: int) -> None:
        try:
            results[index] = store.record_created(*calls[index])
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(i,)) for i in range(len(calls))]
    with store._group_lock:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(store._created) == len(calls), timeout=JOIN_SECONDS, what="every row queued")
    for thread in threads:
        thread.join(JOIN_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def test_creations_recorded_meanwhile_share_one_transaction_each_fenced_on_its_own_run(store):
    ours, theirs = new_batch(store, count=3), new_batch(store, count=2)
    lost = Run(theirs, "an-older-run")
    before = store.version(ours)
    begun: list[str] = []
    event.listen(store.engine, "begin", lambda conn: begun.append("begin"))

    held = _recording_while_a_group_commits(store, [(mine(ours), 1, 101), (mine(ours), 3, 103),
                                                    (lost, 1, 201), (mine(ours), 2, 102)])

    assert held == [True, True, False, True]
    assert begun == ["begin"]  # one transaction for the four
    assert [(r.status, r.hospital_id) for r in store.get_batch(ours).rows] == [
        (RowStatus.CREATED, 101), (RowStatus.CREATED, 102), (RowStatus.CREATED, 103)]
    assert store.version(ours) > before
    assert {r.status for r in store.get_batch(theirs).rows} == {RowStatus.PENDING}  # the lost run wrote nothing


def test_a_group_whose_transaction_fails_records_each_row_on_its_own(store):
    batch_id = new_batch(store, count=3)
    failures = []

    def fail_the_first_group(_conn, _cursor, statement: str, parameters, _context, executemany: bool) -> None:
        if executemany and not failures:
            failures.append(statement)
            raise sqlite3.OperationalError("database is locked")

    event.listen(store.engine, "before_cursor_execute", fail_the_first_group)

    held = _recording_while_a_group_commits(store, [(mine(batch_id), n, 100 + n) for n in (1, 2, 3)])

    assert held == [True, True, True] and len(failures) == 1
    assert [(r.status, r.hospital_id) for r in store.get_batch(batch_id).rows] == [
        (RowStatus.CREATED, 101), (RowStatus.CREATED, 102), (RowStatus.CREATED, 103)]


# -- idempotency keys ----------------------------------------------------------------------


def test_same_idempotency_key_and_file_return_the_first_batch(store):
    first = new_batch(store, idempotency_key="upload-1", file_sha256="a" * 64)

    again, created = store.insert_batch(str(uuid.uuid4()), hospital_rows(3), owner="worker-b",
                                        lease_until=T0 + 10, idempotency_key="upload-1", file_sha256="a" * 64)

    assert (again, created) == (first, False)
    assert len(store.recent(10)) == 1
    assert store.find_by_idempotency_key("upload-1").id == first


def test_same_idempotency_key_with_another_file_is_refused(store):
    first = new_batch(store, idempotency_key="upload-1", file_sha256="a" * 64)

    with pytest.raises(IdempotencyMismatch):
        store.insert_batch(str(uuid.uuid4()), hospital_rows(3), owner="w", lease_until=T0 + 10,
                           idempotency_key="upload-1", file_sha256="b" * 64)
    assert [b.id for b in store.recent(10)] == [first]


def test_batches_without_idempotency_keys_do_not_collide(store):
    first, second = new_batch(store), new_batch(store)
    assert first != second and len(store.recent(10)) == 2


def test_concurrent_uploads_with_one_idempotency_key_make_one_batch(make_store):
    # Separate Stores (separate pools), as separate gunicorn workers would have.
    stores = [make_store() for _ in range(6)]
    ids = [str(uuid.uuid4()) for _ in stores]

    results = run_together(len(stores), lambda i: stores[i].insert_batch(
        ids[i], hospital_rows(5), owner=f"worker-{i}", lease_until=T0 + 10,
        idempotency_key="same-upload", file_sha256="c" * 64))

    winners = [batch_id for batch_id, created in results if created]
    assert len(winners) == 1
    assert {batch_id for batch_id, _ in results} == set(winners)
    assert [b.id for b in stores[0].recent(10)] == winners
    assert len(stores[0].get_batch(winners[0]).rows) == 5


# -- leases --------------------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(5))
def test_only_one_of_two_concurrent_takers_gets_the_lease(make_store, clock, round_):
    first, second = make_store(), make_store()
    batch_id = new_batch(first)
    first.release_lease(mine(batch_id), BatchStatus.PARTIALLY_FAILED)

    won = run_together(2, lambda i: (first, second)[i].take_lease(
        batch_id, f"taker-{i}", clock() + 10, RESUMABLE - {BatchStatus.INTERRUPTED}, f"run-{i}"))

    assert sorted(won) == [False, True]
    batch = first.get_batch(batch_id)
    assert (batch.status, batch.lease_owner, batch.lease_expires) == \
        (BatchStatus.QUEUED, f"taker-{won.index(True)}", clock() + 10)


@pytest.mark.parametrize("round_", range(3))
def test_only_one_of_two_concurrent_takers_gets_a_lapsed_lease(make_store, clock, round_):
    first, second = make_store(), make_store()
    batch_id = new_batch(first, lease_until=clock() + 10)
    first.set_status(mine(batch_id), BatchStatus.PROCESSING)
    clock.advance(11)

    won = run_together(2, lambda i: (first, second)[i].take_lease(
        batch_id, f"taker-{i}", clock() + 10, RESUMABLE - {BatchStatus.INTERRUPTED}, f"run-{i}"))

    assert sorted(won) == [False, True]
    assert first.get_batch(batch_id).lease_owner == f"taker-{won.index(True)}"


@pytest.mark.parametrize("status", [BatchStatus.QUEUED, BatchStatus.PROCESSING, BatchStatus.ACTIVATING])
def test_a_lapsed_lease_can_be_taken(store, clock, status):
    batch_id = new_batch(store, lease_until=clock() + 10)
    store.set_status(mine(batch_id), status)
    clock.advance(10.5)

    assert store.take_lease(batch_id, "worker-b", clock() + 10, RESUMABLE - {BatchStatus.INTERRUPTED}, "run-b")
    batch = store.get_batch(batch_id)
    assert (batch.status, batch.lease_owner, batch.lease_expires) == (BatchStatus.QUEUED, "worker-b", clock() + 10)


@pytest.mark.parametrize("status", [BatchStatus.QUEUED, BatchStatus.PROCESSING, BatchStatus.ACTIVATING])
def test_a_live_lease_of_a_running_batch_cannot_be_taken(store, clock, status):
    batch_id = new_batch(store, lease_until=clock() + 10)
    store.set_status(mine(batch_id), status)
    version = store.version(batch_id)
    clock.advance(9.5)

    assert not store.take_lease(batch_id, "worker-b", clock() + 10, RESUMABLE - {BatchStatus.INTERRUPTED}, "run-b")
    batch = store.get_batch(batch_id)
    assert (batch.status, batch.lease_owner, batch.version) == (status, "worker-a", version)


def test_a_finished_batch_in_another_state_cannot_be_taken(store, clock):
    batch_id = new_batch(store)
    store.release_lease(mine(batch_id), BatchStatus.ROLLED_BACK)
    clock.advance(100)

    assert not store.take_lease(batch_id, "worker-b", clock() + 10, RESUMABLE - {BatchStatus.INTERRUPTED}, "run-b")
    assert store.get_batch(batch_id).status == BatchStatus.ROLLED_BACK


def test_each_renewal_banks_the_runs_time_so_a_killed_run_keeps_it(store, clock):
    batch_id = new_batch(store)
    store.start_run(mine(batch_id), clock())
    clock.advance(4)

    assert store.renew_leases("worker-a", 10, [mine(batch_id)]) == []

    batch = store.get_batch(batch_id)
    assert (batch.elapsed, batch.run_started_at) == (4.0, T0 + 4)
    clock.advance(1.5)
    store.finish_run(mine(batch_id), BatchStatus.PARTIALLY_FAILED, None, clock())
    assert store.get_batch(batch_id).elapsed == 5.5


# -- listing -------------------------------------------------------------------------------


def test_recent_lists_the_newest_batches_first(store, clock):
    ids = []
    for _ in range(5):
        ids.append(new_batch(store))
        clock.advance(1)

    recent = store.recent(3)

    assert [b.id for b in recent] == ids[::-1][:3]
    assert all(b.rows == [] for b in recent)
    assert [b.id for b in store.recent(100)] == ids[::-1]


# -- watching ------------------------------------------------------------------------------


def test_wait_for_change_returns_at_once_when_the_version_moved(store):
    batch_id = new_batch(store)
    store.set_status(mine(batch_id), BatchStatus.PROCESSING)

    started = time.monotonic()
    assert store.wait_for_change(batch_id, 0, timeout=30) == 1
    assert store.wait_for_change(str(uuid.uuid4()), 0, timeout=30) is None
    assert time.monotonic() - started < 5


def test_wait_for_change_times_out_with_the_same_version(store):
    batch_id = new_batch(store)
    assert store.wait_for_change(batch_id, 0, timeout=0.01) == 0


def watch(store: Store, batch_id: str, version: int) -> tuple[threading.Thread, list]:
    seen: list = []
    thread = threading.Thread(target=lambda: seen.append(store.wait_for_change(batch_id, version, timeout=30,
                                                                               poll=0.02)))
    thread.start()
    return thread, seen


def test_wait_for_change_wakes_when_another_thread_updates(store):
    batch_id = new_batch(store)
    thread, seen = watch(store, batch_id, 0)

    store.mark_rows_in_flight(mine(batch_id), [2], T0)

    thread.join(JOIN_SECONDS)
    assert not thread.is_alive() and seen == [1]


def test_wait_for_change_notices_another_workers_update(make_store):
    watcher, writer = make_store(), make_store()
    batch_id = new_batch(writer)
    thread, seen = watch(watcher, batch_id, 0)

    # No notification crosses Stores (processes); the watcher finds the change by polling.
    writer.set_status(mine(batch_id), BatchStatus.PROCESSING)

    thread.join(JOIN_SECONDS)
    assert not thread.is_alive() and seen == [1]


def test_taking_over_a_dead_import_takes_the_batches_its_process_was_running(store, clock):
    # The runner's lease and its running batch's lease lapse a moment apart: when the import reads
    # interrupted, the batch its dead process was running must come with it, or it is never resumed.
    rows = hospital_rows(4)
    import_id, batch_ids = str(uuid.uuid4()), [str(uuid.uuid4()), str(uuid.uuid4())]
    store.insert_import(import_id, [(batch_ids[0], rows[:2]), (batch_ids[1], rows[2:])],
                        owner="dead-worker", lease_until=clock() + 10, token="import-run")
    store.start_run(mine(batch_ids[0], "import-run"), clock())
    with store.engine.begin() as conn:  # its lease written a moment after the import's
        conn.execute(update(batches).where(batches.c.id == batch_ids[0]).values(lease_expires=clock() + 11))

    clock.advance(10.5)  # the import's lease has lapsed, the batch's not yet
    assert store.take_import(import_id, "new-worker", clock() + 10, "new-run")

    taken = [store.get_batch(b) for b in batch_ids]
    assert [(b.status, b.lease_owner, b.run_token) for b in taken] == [(BatchStatus.QUEUED, "new-worker", "new-run")] * 2


def test_an_import_is_written_from_parts_read_one_at_a_time_in_several_statements(store, clock):
    rows = hospital_rows(2 * INSERT_PARTS * 3 + 1)  # batches of 3: two statements' worth, and one more
    batch_ids = [str(uuid.uuid4()) for _ in range(0, len(rows), 3)]
    parts = ((batch_id, rows[3 * i:3 * i + 3]) for i, batch_id in enumerate(batch_ids))
    import_id = str(uuid.uuid4())

    assert store.insert_import(import_id, parts, owner="worker", lease_until=clock() + 10) == (import_id, True)

    imp = store.load_import(import_id)
    assert imp.total == len(rows) == 151
    assert [(p.position, p.first_row, p.last_row, p.batch.id) for p in imp.parts] == [
        (i, 3 * i + 1, min(3 * i + 3, len(rows)), batch_id) for i, batch_id in enumerate(batch_ids)]
    assert store.import_batch_ids(import_id) == batch_ids
    assert [(batch_id, row.row) for batch_id, row in store.rows_of(batch_ids)] == [
        (batch_ids[(n - 1) // 3], n) for n in range(1, len(rows) + 1)]
