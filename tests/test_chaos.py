"""The property-based chaos test: whatever the directory does, request by request, and wherever the
service is killed, every row ends created exactly once or failed and resumable, and nothing is lost.

Each example generates a schedule of upstream behaviour (latency from 0 to 3 read timeouts, stored
then dropped, stored then 500, 500 before storing, an HTML 502, a 429, a hang, refused connections
for a while) and a moment to kill the service. The first run happens in a child process that is
SIGKILLed at that moment; a new app on the same store then resumes the batch with the remaining
faults in force. After that run the batch must be consistent; once the directory behaves again, a
final resume must leave exactly one hospital per row, with the row's data, and nothing extra.

`make test` runs a small derandomized budget (the "ci" profile, tests/conftest.py); `make chaos`
runs many more examples with fresh seeds.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bulkproc import create_app
from bulkproc.files.rules import parse
from bulkproc.simulator import create_simulator, serve
from bulkproc.states import RUNNING, RowStatus
from tests.support import LONG_RUN, examples, hospitals_csv, wait_until

READ_TIMEOUT = 0.3
CONNECT_TIMEOUT = 0.2
LEASE_SECONDS = 0.6
# Long enough to ride out every generated outage: rows fail only when attempts run out.
OUTAGE_GRACE = 5.0

CREATE_FAULTS = st.one_of(
    st.just(None),  # answered normally
    st.tuples(st.just("slow"), st.floats(0.0, 3 * READ_TIMEOUT)),
    st.tuples(st.sampled_from(["hang", "store_then_hang"]), st.floats(0.0, 3 * READ_TIMEOUT)),
    st.tuples(st.sampled_from(["store_then_drop", "store_then_500", "error_500", "html_502", "rate_limit"]),
              st.none()),
)
OTHER_FAULTS = st.one_of(st.just(None), st.tuples(st.sampled_from(["error_500", "html_502", "rate_limit"]),
                                                  st.none()))


def _config(tmp: Path, upstream_url: str) -> dict:
    return {
        "TESTING": True, "DATABASE_URL": f"sqlite:///{tmp}/jobs.sqlite3", "HOSPITAL_API_BASE_URL": upstream_url,
        "CREATE_RATE": None, "CONNECT_TIMEOUT": CONNECT_TIMEOUT, "READ_TIMEOUT": READ_TIMEOUT,
        "MAX_ATTEMPTS": 3, "BACKOFF_SECONDS": 0.01, "RATE_LIMIT_PAUSE": 0.05, "LEASE_SECONDS": LEASE_SECONDS,
        "WAKE_TIMEOUT": 1.0, "OUTAGE_GRACE": OUTAGE_GRACE,
    }


def _doomed_run(config: dict, csv_text: str, conn) -> None:
    """The first run, in a process of its own so that it can be killed like a crashed worker."""
    app = create_app(config)
    jobs = app.extensions["bulkproc"]
    batch_id, _ = jobs.start(parse(csv_text.encode()))
    conn.send(batch_id)
    jobs.run(batch_id)
    conn.send("done")
    jobs.close()
    jobs.store.close()


def _script(sim, op: str, schedule: list) -> None:
    for index, fault in enumerate(schedule):
        if fault is not None:
            kind, seconds = fault
            sim.add_fault(op, kind, times=1, after=index, seconds=seconds)


def _first_run(config: dict, csv_text: str, sim, kill_after: int | None) -> str:
    """Run the batch in a child process; SIGKILL it once the directory saw `kill_after` creations."""
    context = multiprocessing.get_context("forkserver")
    parent, child = context.Pipe()
    process = context.Process(target=_doomed_run, args=(config, csv_text, child), daemon=True)
    process.start()
    try:
        assert parent.poll(30), "the first run did not start"
        batch_id = parent.recv()
        if kill_after is None:
            assert parent.poll(60), "the first run did not finish"
        else:
            wait_until(lambda: sim.stats["create_requests"] >= kill_after or parent.poll(),
                       timeout=60, what=f"{kill_after} creations")
            _kill(process)
        process.join(30)
    finally:
        if process.is_alive():
            _kill(process)
            process.join(10)
        parent.close()
        child.close()
        process.close()
    return batch_id


def _kill(process) -> None:
    try:
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it had finished by itself


def _resume(jobs, batch_id: str) -> dict:
    """Wait until nobody runs the batch (a killed run's lease lapses), then resume it unless it is done."""
    wait_until(lambda: jobs.document(batch_id).status not in RUNNING, timeout=30,
               what="the batch to be free to resume")
    if jobs.take_over(batch_id):
        jobs.resume(batch_id)
    return jobs.document(batch_id).model_dump(mode="json")


def check_consistent(document: dict, sim) -> None:
    """A batch after any run: rows exist exactly as recorded or failed with a reason, and the batch
    is active exactly when every row exists."""
    stored = {h["id"]: h for h in sim.hospitals(document["batch_id"])}
    exist = [r for r in document["hospitals"] if r["status"] in (RowStatus.CREATED, RowStatus.CREATED_AND_ACTIVATED)]
    for row in document["hospitals"]:
        if row in exist:
            assert row["hospital_id"] in stored, row
            assert stored[row["hospital_id"]]["name"] == row["name"]
        else:
            assert row["status"] in (RowStatus.FAILED, RowStatus.PENDING) and row["error"], row
    assert document["batch_activated"] == (len(exist) == len(document["hospitals"])), document
    if document["batch_activated"]:
        assert document["status"] == "completed"
        assert {r["status"] for r in document["hospitals"]} == {RowStatus.CREATED_AND_ACTIVATED}
    else:
        assert document["status"] in ("partially_failed", "failed"), document


def check_exactly_once(document: dict, sim, csv_text: str) -> None:
    """The end: one active hospital per row, with the row's data, and nothing else in the batch."""
    assert document["status"] == "completed", document
    expected = sorted((r.name, r.address, r.phone) for r in parse(csv_text.encode()))
    stored = sim.hospitals(document["batch_id"])
    assert sorted((h["name"], h["address"], h["phone"]) for h in stored) == expected
    assert {h["id"] for h in stored} == {r["hospital_id"] for r in document["hospitals"]}
    assert all(h["active"] for h in stored)


@pytest.mark.chaos
# One test runs every example: the per-test timeout is the budget's, and `make chaos` has none.
@pytest.mark.timeout(0 if LONG_RUN else 600)
@settings(max_examples=examples(12, int(os.environ.get("CHAOS_EXAMPLES", "200"))))
@given(
    rows=st.integers(1, 5),
    creates=st.lists(CREATE_FAULTS, max_size=12),
    reads=st.lists(OTHER_FAULTS, max_size=4),
    activations=st.lists(OTHER_FAULTS, max_size=2),
    outage=st.none() | st.tuples(st.integers(0, 8), st.floats(0.1, 1.5)),
    kill_after=st.none() | st.integers(0, 6),
)
# The reports, always run: creations slower than the read timeout (each was made twice),
# a kill while such creations are in flight, and refused connections when the upload arrives.
@example(rows=3, creates=[("slow", 2 * READ_TIMEOUT)] * 3, reads=[], activations=[], outage=None, kill_after=None)
@example(rows=3, creates=[("slow", 2.5 * READ_TIMEOUT)] * 3, reads=[], activations=[], outage=None, kill_after=2)
@example(rows=2, creates=[], reads=[], activations=[], outage=(0, 1.2), kill_after=None)
def test_whatever_the_directory_does_each_row_is_created_once_or_resumable(
        tmp_path_factory, rows, creates, reads, activations, outage, kill_after):
    tmp = tmp_path_factory.mktemp("chaos")
    csv_text = hospitals_csv(rows)
    with serve(create_simulator(delay=0.02, create_limit=0, hang_seconds=3 * READ_TIMEOUT)) as served:
        sim = served.sim
        _script(sim, "create", creates)
        _script(sim, "list_batch", reads)
        _script(sim, "activate", activations)
        if outage is not None:
            served.refuse_connections(outage[1], after_requests=outage[0])
        config = _config(tmp, served.url)

        batch_id = _first_run(config, csv_text, sim, kill_after)

        app = create_app(config)
        jobs = app.extensions["bulkproc"]
        try:
            check_consistent(_resume(jobs, batch_id), sim)
            sim.clear_faults()
            served.accept()
            document = _resume(jobs, batch_id)
            # Whatever is still on its way upstream lands before the end is judged.
            assert sim.wait_idle(10 * READ_TIMEOUT), "the directory is still busy"
            check_exactly_once(document, sim, csv_text)
        finally:
            jobs.close()
            jobs.store.close()
