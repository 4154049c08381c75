"""A paused owner (issue 13, seen 2): two gunicorn instances on one SQLite file, the owner's process
group stopped past its lease (a long GC pause, a frozen VM), the batch resumed on the other.

Once continued, the paused run must learn that it lost the batch and stop: it sends nothing more,
so every row has exactly one hospital, and the one run that owns the batch finishes it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from tests.gunicorn_service import GunicornService
from tests.support import hospitals_csv, wait_until

FINAL = {"completed", "partially_failed", "failed", "interrupted", "rolled_back", "cancelled"}


@contextmanager
def paused(service: GunicornService) -> Iterator[None]:
    """SIGSTOP the service's whole process group (master and workers); SIGCONT after, whatever happens."""
    os.killpg(service.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(service.pid, signal.SIGCONT)


def test_a_paused_owner_sends_nothing_more_once_another_instance_resumed_its_batch(start_service, upstream):
    # The owner may create 5 rows per 6 s: it creates 5 of 10, and waits for the window with the
    # others pending, nothing in flight. Paused past its lease, the batch is resumed on the other
    # instance (no limit of its own), which creates the 5 left at once. The owner, continued, must
    # not create them again when its window opens.
    owner = start_service(BULKPROC_CREATE_RATE="5/6")
    other = start_service()
    accepted = owner.upload(hospitals_csv(10), headers={"Prefer": "respond-async"})
    assert accepted.status_code == 202, accepted.text
    batch_id = accepted.json()["batch_id"]
    wait_until(lambda: owner.batch(batch_id)["processed_hospitals"] == 5, timeout=10, what="five rows created")

    with paused(owner):
        other.wait_for_status(batch_id, {"interrupted"}, timeout=10)
        resumed = other.post(f"/hospitals/bulk/{batch_id}/resume", headers={"Prefer": "respond-async"})
        assert resumed.status_code == 202, resumed.text

    document = other.wait_for_status(batch_id, FINAL, timeout=30)
    assert document["status"] == "completed", document
    # The owner's window opens 6 s after its first creations: by then it has stopped, or sent again.
    wait_until(lambda: "no longer owns the batch" in owner.log_tail(50000)
               or upstream.sim.stats["create_requests"] > 10, timeout=15, what="the paused run to stop or send")
    wait_until(lambda: upstream.sim.stats["create_requests"] > 10 or owner.batch(batch_id) == document,
               timeout=10, what="the owner to read the finished batch")
    assert upstream.sim.wait_idle(10)
    held = upstream.sim.hospitals(batch_id)
    assert upstream.sim.stats["create_requests"] == 10  # five by the owner before its pause, five by the resume
    assert len(held) == 10 and all(h["active"] for h in held)
    assert sorted(r["hospital_id"] for r in document["hospitals"]) == sorted(h["id"] for h in held)
    assert other.batch(batch_id) == document  # nothing written over the new owner's state
