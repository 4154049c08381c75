"""How fast GET /hospitals/bulk/{id} answers while batches run, and what the job store costs.

Part 1 (target p99 < 20 ms): simulator delay 5 s, no create limit on either side (this measures
the store, not the limiter), 2 gunicorn workers. Three 20-row async uploads start at once, and
each upload's client (a process of its own, one requests.Session) polls its batch's status URL
every 50 ms until the batch is final.

Part 2 (target < 2 %): the store's share of a 20-row upload. There is no store-less mode, so
(a) a 20-row sync upload is timed end to end and (wall - 5 s creation - activation round trip)
is reported as the whole overhead, and (b) an in-process app whose Store times every call
runs a 20-row sync upload, and the time during which any store call was running is reported as a
% of that upload's wall time.

Run: .venv/bin/python bench/status_latency.py
"""

from __future__ import annotations

import io
import multiprocessing
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests
from _harness import (
    Service,
    header,
    hospitals_csv,
    line,
    median,
    percentile,
    upload,
    verdict,
    wait_until_final,
)

from bulkproc import create_app
from bulkproc.simulator import create_simulator, serve

DELAY = 5.0
ROWS = 20
UPLOADS = 3
READ_INTERVAL = 0.05  # each upload's client polls its batch every 50 ms: 20 reads/s each
P99_TARGET_MS = 20.0
SHARE_TARGET_PCT = 2.0


def part1(service: Service, up) -> None:
    header(f"part 1: GET /hospitals/bulk/{{id}} latency during {UPLOADS} concurrent {ROWS}-row async uploads "
           f"(simulator delay {DELAY:g} s, no create limit, BULKPROC_CREATE_RATE=0, 2 workers, "
           f"each upload's client polling its batch every {READ_INTERVAL * 1000:g} ms)")
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

    latencies, bad = read_statuses(locations, until_final=True, seconds=120.0)
    elapsed = time.monotonic() - started

    with requests.Session() as http:
        finals = [wait_until_final(http, url, time.monotonic() + 10) for url in locations]
    p50, p99, worst = percentile(latencies, 50), percentile(latencies, 99), max(latencies)
    line("batches", ", ".join(f"{d['status']} ({d['processed_hospitals']}/{d['total_hospitals']}, "
                              f"{d['processing_time_seconds']} s)" for d in finals)
         + f"; all final {elapsed:.2f} s after the first POST")
    line("status reads (client-side)", f"{len(latencies)} reads, {len(latencies) / elapsed:.0f}/s, "
                                       f"{len(bad)} non-200")
    line("latency p50 / p99 / max", f"{p50:.2f} / {p99:.2f} / {worst:.2f} ms")
    line("client-side p99 vs target", f"{p99:.2f} ms / {P99_TARGET_MS:g} ms = {p99 / P99_TARGET_MS:.2f}x  "
                          f"(target p99 < {P99_TARGET_MS:g} ms)  {verdict(p99 < P99_TARGET_MS)}")
    server = service.access_log_ms(r"^GET /hospitals/bulk/[0-9a-f-]{36} ")[:len(latencies)]
    if server:
        line("server-side (gunicorn's own timing)",
             f"{len(server)} reads, p50 {percentile(server, 50):.2f} / p99 {percentile(server, 99):.2f} / "
             f"max {max(server):.2f} ms (excludes the client and the network)")
        server_p99 = percentile(server, 99)
        line("server-side p99 vs target", f"{server_p99:.2f} ms / {P99_TARGET_MS:g} ms = "
                                          f"{server_p99 / P99_TARGET_MS:.2f}x  (target p99 < {P99_TARGET_MS:g} ms)  "
                                          f"{verdict(server_p99 < P99_TARGET_MS)}")
    # The same readers once every batch is final: no writers left, so what remains is HTTP, JSON,
    # the store's read and this 2-CPU machine shared by the client threads and the workers.
    quiet, _ = read_statuses(locations, until_final=False, seconds=2.0)
    line("baseline, batches final (no writes)", f"{len(quiet)} reads, p50 {percentile(quiet, 50):.2f} / "
                                                f"p99 {percentile(quiet, 99):.2f} / max {max(quiet):.2f} ms "
                                                f"(same readers, 2 s; tells store contention from CPU/client cost)")
    line("upstream", f"{up.sim.stats['created']} created, {up.sim.stats['activations']} activations, "
                     f"{up.sim.stats['rate_limited']} 429s, max in flight {up.sim.stats['max_in_flight']}")
    if up.sim.stats["max_in_flight"] < UPLOADS * ROWS:
        line("note", f"max in flight {up.sim.stats['max_in_flight']} < {UPLOADS * ROWS}: the kernel gave several "
                     "uploads to one worker, and BULKPROC_CONCURRENCY=20 caps each worker's creations, so "
                     "batches sharing a worker queue behind each other (+5 s per extra 20 rows)")


FINAL = ("completed", "partially_failed", "failed", "interrupted", "rolled_back")


def read_statuses(locations: list[str], *, until_final: bool, seconds: float) -> tuple[list[float], list[str]]:
    """Client-side ms of status reads by one client process per location, each polling its batch
    every READ_INTERVAL, for `seconds` or until its batch is final; (latencies, non-200 answers).

    Each reader is a process of its own with one thread, as real clients would be: threads of one
    Python process, or of this one with its in-process simulator, wait for each other's GIL turns
    (up to 5 ms each), and that would show as service latency.
    """
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    readers = [context.Process(target=_reader, args=(location, until_final, seconds, results))
               for location in locations]
    for reader in readers:
        reader.start()
    latencies: list[float] = []
    bad: list[str] = []
    for _ in readers:
        got, errors = results.get(timeout=seconds + 30)
        latencies += got
        bad += errors
    for reader in readers:
        reader.join()
    return latencies, bad


def _reader(location: str, until_final: bool, seconds: float, results) -> None:
    latencies: list[float] = []
    bad: list[str] = []
    stop_at = time.monotonic() + seconds
    with requests.Session() as http:
        while True:
            t0 = time.perf_counter()
            response = http.get(location, timeout=10)
            status = response.json()["status"]
            spent = time.perf_counter() - t0
            latencies.append(spent * 1000)
            if response.status_code != 200:
                bad.append(f"HTTP {response.status_code}")
            if (until_final and status in FINAL) or time.monotonic() >= stop_at:
                break
            time.sleep(max(0.0, READ_INTERVAL - spent))  # paced like a polling client, not a flood
    results.put((latencies, bad))


def activation_round_trip(upstream_url: str, tries: int = 5) -> float:
    """Median seconds of a PATCH .../activate round trip to the simulator (an empty batch: 404, no delay)."""
    times = []
    with requests.Session() as http:
        for _ in range(tries):
            t0 = time.perf_counter()
            http.patch(f"{upstream_url}/hospitals/batch/{uuid.uuid4()}/activate", timeout=10)
            times.append(time.perf_counter() - t0)
    return median(times)


def timed_store_upload(upstream_url: str, directory: Path) -> tuple[float, float, dict[str, int], dict[str, float]]:
    """One 20-row sync upload through an in-process app whose Store times every call it serves.

    Returns (upload wall s, store busy s, call counts, s per method summed over threads). Busy
    time is the wall time during which any store call was running: the most durability can add.
    """
    app = create_app({"DATABASE_URL": f"sqlite:///{directory / 'jobs.sqlite3'}",
                      "HOSPITAL_API_BASE_URL": upstream_url, "CREATE_RATE": (30, 60.0)})
    store = app.extensions["bulkproc"].store
    counts: dict[str, int] = {}
    spent: dict[str, float] = {}
    intervals: list[tuple[float, float]] = []
    lock = threading.Lock()

    def timing(name: str, method):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                t1 = time.perf_counter()
                with lock:
                    spent[name] = spent.get(name, 0.0) + t1 - t0
                    counts[name] = counts.get(name, 0) + 1
                    intervals.append((t0, t1))
        return timed

    # Every named transition writes through _change; the other calls each run their own transaction.
    for name in ("insert_batch", "get_batch", "version", "_change", "renew_leases", "take_lease",
                 "take_create_slots", "return_create_slot", "block_creates"):
        setattr(store, name, timing(name, getattr(store, name)))
    client = app.test_client()
    t0 = time.perf_counter()
    response = client.post("/hospitals/bulk", data={"file": (io.BytesIO(hospitals_csv(ROWS, "Timed")),
                                                             "hospitals.csv")})
    wall = time.perf_counter() - t0
    assert response.status_code == 200 and response.get_json()["status"] == "completed", response.get_data()
    app.extensions["bulkproc"].close()
    store.close()
    return wall, busy_time(intervals), counts, spent


def busy_time(intervals: list[tuple[float, float]]) -> float:
    """Seconds during which at least one store call was running: the most it can add to wall time."""
    busy, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy


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

    line("method (b), store timed in place", "an in-process app (default 30/60 limiter on) whose Store times "
                                             "every call, one 20-row sync upload; median of 3 runs")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bulkproc-store-") as tmp:
        for k in range(3):
            directory = Path(tmp) / f"run{k}"
            directory.mkdir()
            runs.append(timed_store_upload(up.url, directory))
            up.sim.reset()  # a fresh rate window upstream for the next run
    runs.sort(key=lambda r: r[1] / r[0])
    run_wall, store_s, counts, spent = runs[len(runs) // 2]
    share = store_s / run_wall * 100
    line("store busy time (wall)", f"{sum(counts.values())} calls, {store_s * 1000:.1f} ms = {share:.2f} % "
                                            f"of the {run_wall:.2f} s upload  (target < {SHARE_TARGET_PCT:g} %)  "
                                            f"{verdict(share < SHARE_TARGET_PCT)}")
    line("per method, summed over threads", ", ".join(f"{name} {counts[name]}x {spent[name] * 1000:.1f} ms"
                                                        for name in counts))


def main() -> int:
    header("status_latency")
    up = serve(create_simulator(delay=DELAY, create_limit=0))
    service = Service(up.url, workers=2, env={"BULKPROC_CREATE_RATE": "0"})
    try:
        with service:
            service.wait_healthy()
            part1(service, up)
            part2(service, up)
    finally:
        up.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
