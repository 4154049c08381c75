"""How fast GET /hospitals/bulk/{id} answers while batches run, and what the job store costs.

Part 1 (target p99 < 20 ms): simulator delay 5 s, no create limit on either side (this measures
the store, not the limiter), 2 gunicorn workers. Three 20-row async uploads start at once; 4
client threads (one requests.Session each) read the three status URLs round-robin in a tight
loop until all three batches are final.

Part 2 (target < 2 %): the store's share of a 20-row upload. There is no store-less mode, so
(a) a 20-row sync upload is timed end to end and (wall - 5 s creation - activation round trip)
is reported as the whole overhead, and (b) the Store calls one 20-row batch makes are replayed
in-process on a temporary SQLite file, in the order bulkproc/jobs.py makes them, and their
total is reported as a % of that upload's wall time.

Run: .venv/bin/python bench/status_latency.py
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

from _harness import (
    Service, header, hospitals_csv, line, median, percentile, upload, verdict, wait_until_final,
)

from bulkproc.csv_input import HospitalRow
from bulkproc.simulator import create_simulator, serve
from bulkproc.states import BatchStatus, RowStatus
from bulkproc.store import Store

DELAY = 5.0
ROWS = 20
UPLOADS = 3
READERS = 4
P99_TARGET_MS = 20.0
SHARE_TARGET_PCT = 2.0
LEASE_SECONDS = 10.0  # the service's default BULKPROC_LEASE_SECONDS


def part1(service: Service, up) -> None:
    header(f"part 1: GET /hospitals/bulk/{{id}} latency during {UPLOADS} concurrent {ROWS}-row async uploads "
           f"(simulator delay {DELAY:g} s, no create limit, BULKPROC_CREATE_RATE=0, 2 workers, "
           f"{READERS} reader threads)")
    locations: list[str] = []
    errors: list[str] = []

    def start(n: int) -> None:
        with requests.Session() as http:
            response = upload(http, service.url, hospitals_csv(ROWS, f"Status{n}"), asynchronous=True)
        if response.status_code != 202:
            errors.append(f"upload {n}: HTTP {response.status_code} {response.text[:200]}")
        else:
            locations.append(service.url + response.headers["Location"])

    posters = [threading.Thread(target=start, args=(n,)) for n in range(UPLOADS)]
    started = time.monotonic()
    for t in posters:
        t.start()
    for t in posters:
        t.join()
    if errors or len(locations) != UPLOADS:
        raise SystemExit("uploads failed: " + "; ".join(errors))

    samples: list[list[float]] = [[] for _ in range(READERS)]
    bad: list[str] = []
    done = threading.Event()
    deadline = time.monotonic() + 120

    def read(k: int) -> None:
        statuses: dict[str, str] = {}
        with requests.Session() as http:
            i = k
            while not done.is_set() and time.monotonic() < deadline:
                url = locations[i % UPLOADS]
                i += 1
                t0 = time.perf_counter()
                response = http.get(url, timeout=10)
                document = response.json()
                samples[k].append((time.perf_counter() - t0) * 1000)
                if response.status_code != 200:
                    bad.append(f"HTTP {response.status_code}")
                statuses[url] = document["status"]
                if len(statuses) == UPLOADS and all(s in ("completed", "partially_failed", "failed",
                                                          "interrupted", "rolled_back")
                                                    for s in statuses.values()):
                    done.set()

    readers = [threading.Thread(target=read, args=(k,)) for k in range(READERS)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    elapsed = time.monotonic() - started

    with requests.Session() as http:
        finals = [wait_until_final(http, url, time.monotonic() + 10) for url in locations]
    latencies = [ms for per in samples for ms in per]
    p50, p99, worst = percentile(latencies, 50), percentile(latencies, 99), max(latencies)
    line("batches", ", ".join(f"{d['status']} ({d['processed_hospitals']}/{d['total_hospitals']}, "
                              f"{d['processing_time_seconds']} s)" for d in finals)
         + f"; all final {elapsed:.2f} s after the first POST")
    line("status reads (client-side)", f"{len(latencies)} reads, {len(latencies) / elapsed:.0f}/s, "
                                       f"{len(bad)} non-200")
    line("latency p50 / p99 / max", f"{p50:.2f} / {p99:.2f} / {worst:.2f} ms")
    line("p99 vs target", f"{p99:.2f} ms / {P99_TARGET_MS:g} ms = {p99 / P99_TARGET_MS:.2f}x  "
                          f"(target p99 < {P99_TARGET_MS:g} ms)  {verdict(p99 < P99_TARGET_MS)}")
    server = service.access_log_ms(r"^GET /hospitals/bulk/[0-9a-f-]{36} ")[:len(latencies)]
    if server:
        line("server-side (gunicorn %(M)s, ms)",
             f"{len(server)} reads, p50 {percentile(server, 50):.0f} / p99 {percentile(server, 99):.0f} / "
             f"max {max(server):.0f} ms (whole-ms resolution; excludes client GIL and network)")
    # The same readers once every batch is final: no writers left, so what remains is HTTP, JSON,
    # the store's read and this 2-CPU machine shared by the client threads and the workers.
    quiet = idle_reads(locations, seconds=2.0)
    line("baseline, batches final (no writes)", f"{len(quiet)} reads, p50 {percentile(quiet, 50):.2f} / "
                                                f"p99 {percentile(quiet, 99):.2f} / max {max(quiet):.2f} ms "
                                                "(same 4 threads, 2 s; tells store contention from CPU/client cost)")
    line("upstream", f"{up.sim.stats['created']} created, {up.sim.stats['activations']} activations, "
                     f"{up.sim.stats['rate_limited']} 429s, max in flight {up.sim.stats['max_in_flight']}")
    if up.sim.stats["max_in_flight"] < UPLOADS * ROWS:
        line("note", f"max in flight {up.sim.stats['max_in_flight']} < {UPLOADS * ROWS}: the kernel gave several "
                     "uploads to one worker, and BULKPROC_CONCURRENCY=20 caps each worker's creations, so "
                     "batches sharing a worker queue behind each other (+5 s per extra 20 rows)")


def idle_reads(locations: list[str], seconds: float) -> list[float]:
    """Client-side ms of status reads by READERS threads for `seconds`, round-robin over `locations`."""
    samples: list[list[float]] = [[] for _ in range(READERS)]
    stop_at = time.monotonic() + seconds

    def read(k: int) -> None:
        with requests.Session() as http:
            i = k
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                http.get(locations[i % len(locations)], timeout=10).json()
                samples[k].append((time.perf_counter() - t0) * 1000)
                i += 1

    threads = [threading.Thread(target=read, args=(k,)) for k in range(READERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [ms for per in samples for ms in per]


def activation_round_trip(upstream_url: str, tries: int = 5) -> float:
    """Median seconds of a PATCH .../activate round trip to the simulator (an empty batch: 404, no delay)."""
    times = []
    with requests.Session() as http:
        for _ in range(tries):
            t0 = time.perf_counter()
            http.patch(f"{upstream_url}/hospitals/batch/{uuid.uuid4()}/activate", timeout=10)
            times.append(time.perf_counter() - t0)
    return median(times)


def replay_store_ops(directory: Path, limiter: bool) -> tuple[float, dict[str, int], dict[str, float]]:
    """Run, serially, the Store calls one 20-row sync upload makes; (total s, call counts, s per kind).

    Order follows bulkproc/jobs.py: start -> insert_batch; _process -> update_batch(processing),
    load; per row (client.create_hospital) -> [take_create_slot when a create rate is set],
    update_row(in_progress), update_row(created); while rows are in flight -> renew_lease every
    lease/3 s (twice in a 5 s batch); _finish -> load, update_batch(activating), update_rows(all
    activated), update_batch(activated); finally -> load, update_batch(final); the 200 -> load.
    """
    store = Store(f"sqlite:///{directory / 'replay.sqlite3'}")
    counts: dict[str, int] = {}
    spent: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        counts[name] = counts.get(name, 0) + 1
        return result

    rows = [HospitalRow(n, f"Replay {n}", f"{n} Main St, Springfield", f"555-010-{n:04d}")
            for n in range(1, ROWS + 1)]
    owner = "bench:replay"
    t_start = time.perf_counter()
    batch_id, _ = timed("insert_batch", store.insert_batch, str(uuid.uuid4()), rows, owner=owner,
                        lease_until=time.time() + LEASE_SECONDS)
    timed("update_batch", store.update_batch, batch_id, status=BatchStatus.PROCESSING,
          run_started_at=time.time(), error=None)
    timed("load", store.load, batch_id)
    for n in range(1, ROWS + 1):
        if limiter:
            timed("take_create_slot", store.take_create_slot, 30, 60.0 * 1.02 + 0.05)
        timed("update_row", store.update_row, batch_id, n, status=RowStatus.IN_PROGRESS)
    for n in range(1, ROWS + 1):
        timed("update_row", store.update_row, batch_id, n, status=RowStatus.CREATED, hospital_id=1000 + n, error=None)
    for _ in range(2):
        timed("renew_lease", store.renew_lease, batch_id, owner, time.time() + LEASE_SECONDS)
    batch = timed("load", store.load, batch_id)
    timed("update_batch", store.update_batch, batch_id, status=BatchStatus.ACTIVATING)
    timed("update_rows", store.update_rows, batch_id, [r.row for r in batch.rows],
          status=RowStatus.CREATED_AND_ACTIVATED)
    timed("update_batch", store.update_batch, batch_id, activated=True)
    batch = timed("load", store.load, batch_id)
    timed("update_batch", store.update_batch, batch_id, status=BatchStatus.COMPLETED, error=None,
          elapsed=batch.elapsed + 5.0, run_started_at=None, lease_owner=None, lease_expires=None)
    timed("load", store.load, batch_id)
    total = time.perf_counter() - t_start
    store.close()
    return total, counts, spent


def fan_out_ramp(directory: Path, limiter: bool) -> tuple[float, float]:
    """20 threads at once each make the store calls a row makes before its POST ([take_create_slot],
    update_row(in_progress)), as _create_row does; (ms until the first, ms until the last is done)."""
    store = Store(f"sqlite:///{directory / 'ramp.sqlite3'}")
    rows = [HospitalRow(n, f"Ramp {n}", f"{n} Main St", None) for n in range(1, ROWS + 1)]
    batch_id, _ = store.insert_batch(str(uuid.uuid4()), rows, owner="bench:ramp", lease_until=time.time() + 10)
    barrier = threading.Barrier(ROWS + 1)
    done: list[float] = []

    def row(n: int) -> None:
        barrier.wait()
        if limiter:
            store.take_create_slot(30, 60.0 * 1.02 + 0.05)
        store.update_row(batch_id, n, status=RowStatus.IN_PROGRESS)
        done.append(time.perf_counter())

    threads = [threading.Thread(target=row, args=(n,)) for n in range(1, ROWS + 1)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    store.close()
    return (min(done) - t0) * 1000, (max(done) - t0) * 1000


def part2(service: Service, up) -> None:
    header(f"part 2: what durability adds -- the job store's share of one {ROWS}-row sync upload")
    with requests.Session() as http:
        t0 = time.monotonic()
        response = upload(http, service.url, hospitals_csv(ROWS, "Durable"))
        wall = time.monotonic() - t0
    document = response.json()
    activation = activation_round_trip(up.url)
    overhead = wall - DELAY - activation
    line("method (a), end to end", f"20-row sync upload, simulator delay {DELAY:g} s, no create limit")
    line("upload", f"HTTP {response.status_code}, {document.get('status')!r}, wall {wall:.3f} s, "
                   f"processing_time_seconds {document.get('processing_time_seconds')}")
    line("activation round trip (measured)", f"{activation * 1000:.2f} ms (median of 5 PATCH to the simulator)")
    line("overhead = wall - 5 s - activation", f"{overhead * 1000:.0f} ms ({overhead / wall * 100:.1f} % of wall); "
                                               "includes HTTP, CSV parsing, the wake call, threads and the store")

    line("method (b), store calls replayed", "in-process Store on a temp SQLite file (WAL, synchronous=NORMAL), "
                                             "serial, the calls jobs.py makes for one 20-row batch; median of 7 runs")
    results = {}
    for limiter in (False, True):
        runs = []
        with tempfile.TemporaryDirectory(prefix="bulkproc-store-") as tmp:
            for k in range(7):
                directory = Path(tmp) / f"run{k}"
                directory.mkdir()
                runs.append(replay_store_ops(directory, limiter))
        runs.sort(key=lambda r: r[0])
        results[limiter] = runs[len(runs) // 2]
        results[limiter] = (results[limiter][0], results[limiter][1], results[limiter][2],
                            statistics.mean(r[0] for r in runs))
    for limiter, (total, counts, spent, mean) in results.items():
        calls = sum(counts.values())
        label = "store ops, with rate limiter" if limiter else "store ops, no rate limiter"
        share = total / wall * 100
        line(label, f"{calls} calls, {total * 1000:.1f} ms (mean {mean * 1000:.1f} ms) = {share:.2f} % of the "
                    f"{wall:.2f} s upload  (target < {SHARE_TARGET_PCT:g} %)  {verdict(share < SHARE_TARGET_PCT)}")
        line("", ", ".join(f"{name} {counts[name]}x {spent[name] * 1000:.1f} ms" for name in counts))
    line("fan-out ramp (concurrent, not a %)", "20 threads at once, each the store calls a row makes before its "
                                               "POST; median of 5: ms until the first / last row may POST")
    for limiter in (False, True):
        with tempfile.TemporaryDirectory(prefix="bulkproc-ramp-") as tmp:
            ramps = []
            for k in range(5):
                directory = Path(tmp) / f"run{k}"
                directory.mkdir()
                ramps.append(fan_out_ramp(directory, limiter))
        first = median([r[0] for r in ramps])
        last = median([r[1] for r in ramps])
        label = "ramp, with rate limiter" if limiter else "ramp, no rate limiter"
        calls = "take_create_slot + update_row" if limiter else "update_row"
        line(label, f"{calls}: first {first:.1f} ms / last {last:.1f} ms "
                    f"(runs: {', '.join(f'{r[1]:.0f}' for r in ramps)} ms)")


def main() -> int:
    header("status_latency")
    up = serve(create_simulator(delay=DELAY, create_limit=0))
    service = Service(up.url, workers=2, env={"BULKPROC_CREATE_RATE": "0"})
    try:
        service.wait_healthy()
        part1(service, up)
        part2(service, up)
    finally:
        service.stop()
        service.cleanup()
        up.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
