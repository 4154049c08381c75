"""The fault matrix: every injected fault, alone and mixed, on creations, batch reads and activation,
with two gunicorn workers and three uploads at once. The invariants, every time: each row exists
upstream at most once (exactly once when it reads created), no row is lost (each is created or
failed with a reason, and a resume finishes it), and the batch is activated exactly when all rows exist."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from bulkproc.simulator import create_simulator, serve
from tests.gunicorn_service import GunicornService, service_env
from tests.support import hospitals_csv

pytestmark = pytest.mark.slow

ROWS = 6
KINDS = ["error_500", "store_then_500", "store_then_drop", "store_then_hang", "html_502", "rate_limit"]

CASES = {
    **{f"create-{kind}": [("create", kind, 3, 2)] for kind in KINDS + ["reject_422"]},
    # Batch reads happen after an ambiguous creation, so each read fault rides on one.
    **{f"list-{kind}": [("create", "store_then_500", 2, 1), ("list_batch", kind, 2, 0)]
       for kind in ["error_500", "store_then_drop", "html_502", "rate_limit"]},
    **{f"activate-{kind}": [("activate", kind, 1, 0)] for kind in KINDS},
    "mixed": [("create", "store_then_drop", 2, 0), ("create", "rate_limit", 2, 3), ("create", "html_502", 1, 6),
              ("create", "store_then_hang", 1, 8), ("list_batch", "html_502", 1, 0),
              ("activate", "store_then_500", 1, 0), ("activate", "error_500", 1, 1)],
    "mixed-refusals": [("create", "reject_422", 2, 4), ("create", "store_then_500", 2, 0),
                       ("list_batch", "error_500", 1, 0), ("activate", "html_502", 1, 0)],
}


@pytest.fixture(scope="module")
def upstream():
    with serve(create_simulator(delay=0.05, create_limit=0, hang_seconds=3.0)) as served:
        yield served


@pytest.fixture(scope="module")
def service(upstream, tmp_path_factory):
    folder = tmp_path_factory.mktemp("matrix")
    env = service_env(upstream.url, f"sqlite:///{folder}/jobs.sqlite3", BULKPROC_RATE_LIMIT_PAUSE="0.05",
                      BULKPROC_READ_TIMEOUT="1")
    gunicorn = GunicornService(env, folder / "gunicorn.log", workers=2).start()
    yield gunicorn
    gunicorn.stop()


def check_invariants(sim, document: dict) -> None:
    stored = sim.hospitals(document["batch_id"])
    per_name = Counter(h["name"] for h in stored)
    assert max(per_name.values(), default=0) <= 1, f"a row was created twice: {per_name}"
    ids = {h["name"]: h["id"] for h in stored}
    for row in document["hospitals"]:
        if row["status"] in ("created", "created_and_activated"):
            assert ids.get(row["name"]) == row["hospital_id"]
        else:
            assert row["status"] == "failed" and row["error"], row
    every_row_exists = all(r["status"] != "failed" for r in document["hospitals"])
    assert document["batch_activated"] == every_row_exists
    assert document["status"] == ("completed" if every_row_exists else
                                  "partially_failed" if stored else "failed")
    assert all(h["active"] == document["batch_activated"] for h in stored)


@pytest.mark.parametrize("faults", CASES.values(), ids=CASES.keys())
def test_faults_never_double_or_lose_a_row(service, upstream, faults):
    upstream.sim.reset()
    for op, kind, times, after in faults:
        upstream.sim.add_fault(op, kind, times=times, after=after)

    with ThreadPoolExecutor(3) as pool:
        uploads = [pool.submit(service.upload, hospitals_csv(ROWS, prefix=f"{p} Hospital")) for p in "ABC"]
        documents = [u.result().json() for u in uploads]

    assert upstream.sim.stats["faults_fired"] > 0
    for document in documents:
        check_invariants(upstream.sim, document)

    upstream.sim.clear_faults()
    for document in documents:
        if document["status"] != "completed":
            resumed = service.post(f"/hospitals/bulk/{document['batch_id']}/resume").json()
            check_invariants(upstream.sim, resumed)
            assert resumed["status"] == "completed"
    assert len(upstream.sim.hospitals()) == 3 * ROWS
