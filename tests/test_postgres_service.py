"""The service on a PostgreSQL job store, as several instances would share it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from bulkproc.simulator import create_simulator, serve
from tests.postgres import postgres_url, store_url  # noqa: F401
from tests.support import hospitals_csv

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)]


# The upstream takes 5 creations per 0.5 s window; the instances are told 5 per 1 s. Apart, each
# would send 5 at once (10 in the upstream's first window: 429s); only a limiter they share keeps
# them to 5 per window. The service's window is twice the upstream's so that a group of creations
# sent late by scheduling (up to 0.57 s) still never shares a window with the next group: with
# equal windows the margin was 2 % + 50 ms, less than the jitter of a loaded machine.
UPSTREAM_WINDOW, SERVICE_WINDOW = 0.5, 1.0


def test_two_instances_on_one_database_share_jobs_and_the_rate_limit(make_app, serve_app, store_url):
    with serve(create_simulator(delay=0.05, create_limit=5, window=UPSTREAM_WINDOW)) as limited:
        instances = [serve_app(make_app(DATABASE_URL=store_url, HOSPITAL_API_BASE_URL=limited.url,
                                        CREATE_RATE=(5, SERVICE_WINDOW))) for _ in range(2)]

        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(i.upload, hospitals_csv(8, prefix=f"I{n}")) for n, i in enumerate(instances)]
            documents = [f.result().json() for f in futures]

        assert limited.sim.stats["rate_limited"] == 0
        for n, document in enumerate(documents):
            assert document["status"] == "completed"
            assert len(limited.sim.hospitals(document["batch_id"])) == 8
            # Each instance reads the other's batch from the shared store.
            other = instances[1 - n].get(f"/hospitals/bulk/{document['batch_id']}").json()
            assert other["status"] == "completed" and other["processed_hospitals"] == 8


def test_a_partially_failed_batch_is_resumed_by_another_instance(make_app, serve_app, store_url, upstream):
    first, second = (serve_app(make_app(DATABASE_URL=store_url)) for _ in range(2))
    upstream.sim.add_fault("create", "reject_422", after=2)

    failed = first.upload(hospitals_csv(4)).json()
    assert failed["status"] == "partially_failed"

    resumed = second.post(f"/hospitals/bulk/{failed['batch_id']}/resume").json()
    assert resumed["status"] == "completed"
    names = sorted(h["name"] for h in upstream.sim.hospitals(failed["batch_id"]))
    assert names == sorted(r["name"] for r in failed["hospitals"])
