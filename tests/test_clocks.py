"""Several instances, several clocks: on one PostgreSQL store, time comes from the database.

In the last test, two services run as their own gunicorn processes on hosts whose clocks disagree by 1.2 s (an offset
injected through tests/skewed_wsgi.py), with a one-second lease and the simulator's own create limit.
Read against their host clocks, one would see the other's batch `interrupted` and free the other's
rate-limit slots early, and the directory would answer 429.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkproc.files.rules import HospitalRow
from bulkproc.simulator import create_simulator, serve
from bulkproc.states import BatchStatus
from bulkproc.store import Store
from bulkproc.work.documents import reported_status
from tests.gunicorn_service import GunicornService, service_env
from tests.postgres import postgres_url, store_url  # noqa: F401
from tests.support import hospitals_csv, wait_until

# The upstream takes 5 creations per 0.5 s; the services are told 5 per 1 s, so a group of creations
# sent late by scheduling on a loaded machine never shares an upstream window with the next (equal
# windows left 2 % + 50 ms, and 3 of 20 creations met 429 once in a full parallel run). Read against
# the host clocks, 1.2 s apart, each service would still free the other's slots early and send 10
# creations at once: 429s.
LIMIT, UPSTREAM_WINDOW, SERVICE_WINDOW = 5, 0.5, 1.0
SKEW = 0.6  # each host this far from the true time, in opposite directions
ROWS = 10
HOST_SKEW = 1000.0  # how far off the hosts' clocks are in the store tests


@pytest.fixture
def skewed_stores(store_url) -> Iterator[tuple[Store, Store]]:
    """Two stores on one database, as two instances would have, on hosts HOST_SKEW seconds slow and fast."""
    stores = (Store(store_url, clock=lambda: time.time() - HOST_SKEW),
              Store(store_url, clock=lambda: time.time() + HOST_SKEW))
    yield stores
    for store in stores:
        store.close()


def new_batch(store: Store, lease_seconds: float) -> str:
    batch_id, _ = store.insert_batch(str(uuid.uuid4()), [HospitalRow(1, "General", "1 Main St", None)],
                                     owner="slow-host", lease_until=store.now() + lease_seconds)
    return batch_id


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
def test_instances_on_postgresql_share_the_database_clock(skewed_stores):
    slow, fast = skewed_stores
    assert abs(fast.now() - slow.now()) < 5  # not 2000 s apart: neither host's clock is read
    assert abs(fast.now() - time.time()) < 5  # the database runs on this host here


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
def test_a_live_lease_is_live_for_an_instance_whose_clock_runs_ahead(skewed_stores):
    slow, fast = skewed_stores
    batch_id = new_batch(slow, lease_seconds=10)

    batch = fast.get_batch(batch_id)
    assert reported_status(batch, batch.read_at) == BatchStatus.QUEUED
    assert not fast.take_lease(batch_id, "fast-host", fast.now() + 10, (), "fast-run")


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
def test_rate_windows_hold_for_an_instance_whose_clock_runs_ahead(skewed_stores):
    slow, fast = skewed_stores
    assert slow.take_create_slots(5, 60.0, 5) == (5, 0.0)

    taken, wait = fast.take_create_slots(5, 60.0, 1)

    assert taken == 0 and 55 < wait <= 60


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_sqlite_keeps_the_host_clock(store_url):
    store = Store(store_url, clock=lambda: 1_700_000_000.0)
    try:
        batch_id = new_batch(store, lease_seconds=10)
        batch = store.get_batch(batch_id)
    finally:
        store.close()
    assert store.now() == batch.read_at == batch.created_at == 1_700_000_000.0
    assert batch.lease_expires == 1_700_000_010.0


@pytest.mark.slow
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
def test_two_instances_with_skewed_clocks_agree_on_leases_and_the_rate_limit(tmp_path: Path, store_url):
    with serve(create_simulator(delay=0.05, create_limit=LIMIT, window=UPSTREAM_WINDOW)) as upstream:
        services = [GunicornService(
            service_env(upstream.url, store_url, BULKPROC_CREATE_RATE=f"{LIMIT}/{SERVICE_WINDOW}",
                        BULKPROC_LEASE_SECONDS="1", TEST_CLOCK_OFFSET=str(offset)),
            tmp_path / f"gunicorn-{n}.log", workers=1, app="tests.skewed_wsgi:app")
            for n, offset in enumerate((-SKEW, SKEW))]
        try:
            for service in services:
                service.start()
            batch_ids = [s.upload(hospitals_csv(ROWS, prefix=f"I{n}"), **{"async": "1"}).json()["batch_id"]
                         for n, s in enumerate(services)]
            seen: set[str] = set()

            def both_final() -> bool:
                # Every batch read by both instances, its owner and the other.
                statuses = [s.batch(b)["status"] for b in batch_ids for s in services]
                seen.update(statuses)
                return all(status in ("completed", "partially_failed", "failed") for status in statuses)

            wait_until(both_final, timeout=60, what="both batches to finish")
        finally:
            for service in services:
                service.stop()
                print(f"--- {service.log_path.name} ---\n{service.log_tail()}")

        assert (seen, upstream.sim.stats["rate_limited"]) == (seen - {"interrupted"}, 0)
        assert seen <= {"queued", "processing", "activating", "completed"}, seen
        for batch_id in batch_ids:
            assert len(upstream.sim.hospitals(batch_id)) == ROWS
