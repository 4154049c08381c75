"""Three concurrent 20-row uploads against the upstream's create limit, on a scaled-down clock.

The real limit is 30 creations per 60 s with 5 s per creation; to keep the run short the
simulator runs the same rule on a SCALED window: 30 creations per 12 s, 1 s per creation, and
the service is told the same (BULKPROC_CREATE_RATE=30/12). Everything else is at its default:
BULKPROC_CONCURRENCY follows the create rate's N (30), so each window's creations go in one round.

Targets (issue 7): total time at most 1.05 x the least the limit allows, 0 upstream 429s, 0 failed
rows, each worker's peak RSS (VmHWM) <= 80 MB. Run on one gunicorn worker (all three uploads in
one process), then on two sharing the limiter through the SQLite job store.

Run: .venv/bin/python bench/rate_limited.py
"""

from __future__ import annotations

import threading
import time

import requests
from _harness import Service, header, hospitals_csv, least_time, line, peak_rss_mb, upload, verdict, wait_until_final

from bulkproc.simulator import create_simulator, serve
from bulkproc.work.rate_limit import EDGE_SECONDS, WINDOW_MARGIN

LIMIT = 30
# One fifth of the real clock: a tenth would leave the fixed costs of a run (threads, store
# writes, HTTP on a loaded VM, about 0.3 s) twice their real weight against the window.
WINDOW = 12.0
DELAY = 1.0
ROWS = 20
UPLOADS = 3
MAX_429 = 0
RSS_TARGET_MB = 80.0
RATIO_TARGET = 1.05


def main() -> int:
    run_once(1, "default settings")
    run_once(2, "default settings")
    return 0


def run_once(workers: int, label: str, extra_env: dict[str, str] | None = None) -> None:
    creations = ROWS * UPLOADS
    header(f"rate_limited: {UPLOADS} concurrent {ROWS}-row async uploads ({creations} creations), "
           f"{workers} worker{'s' if workers > 1 else ''}, {label}")
    line("SCALED clock", f"simulator limit {LIMIT} creations per {WINDOW:g} s window (real: per 60 s), "
                         f"creation delay {DELAY:g} s (real: 5 s); service BULKPROC_CREATE_RATE={LIMIT}/{WINDOW:g}")

    up = serve(create_simulator(delay=DELAY, create_limit=LIMIT, window=WINDOW))
    service = Service(up.url, workers=workers,
                      env={"BULKPROC_CREATE_RATE": f"{LIMIT}/{WINDOW:g}", **(extra_env or {})})
    try:
        service.wait_healthy()
        workers = service.worker_pids()
        rss_at_start = {pid: peak_rss_mb(pid) for pid in workers}
        # Time the activation round trip on its own (404 on an empty batch: the same path, no work).
        with requests.Session() as http:
            t0 = time.perf_counter()
            http.patch(f"{up.url}/hospitals/batch/00000000-0000-4000-8000-000000000000/activate", timeout=10)
            activation = time.perf_counter() - t0

        locations: list[str | None] = [None] * UPLOADS
        finals: list[dict | None] = [None] * UPLOADS
        final_at: list[float] = [0.0] * UPLOADS
        failures: list[str] = []
        barrier = threading.Barrier(UPLOADS)

        def run(n: int) -> None:
            try:
                with requests.Session() as http:
                    barrier.wait()
                    response = upload(http, service.url, hospitals_csv(ROWS, f"Limited{n}"), asynchronous=True)
                    if response.status_code != 202:
                        failures.append(f"upload {n}: HTTP {response.status_code} {response.text[:200]}")
                        return
                    locations[n] = service.url + response.headers["Location"]
                    finals[n] = wait_until_final(http, locations[n], time.monotonic() + 120, poll=0.05)
                    final_at[n] = time.monotonic()
            except Exception as exc:  # reported below, the run goes on
                failures.append(f"upload {n}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=run, args=(n,)) for n in range(UPLOADS)]
        first_post = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = max(final_at) - first_post if all(final_at) else float("nan")
        rss = {pid: peak_rss_mb(pid) for pid in workers}
        stats = dict(up.sim.stats)
    finally:
        service.stop()
        service.cleanup()
        up.stop()

    least = least_time(creations, LIMIT, WINDOW, DELAY, activation)
    our_span = WINDOW * WINDOW_MARGIN + EDGE_SECONDS
    ours = least_time(creations, LIMIT, our_span, DELAY, activation)
    ratio = total / least
    failed_rows = sum(d["failed_hospitals"] for d in finals if d) + sum(d is None for d in finals) * ROWS

    for n, d in enumerate(finals):
        if d:
            line(f"batch {n + 1}", f"{d['status']}, {d['processed_hospitals']}/{d['total_hospitals']} processed, "
                                   f"{d['failed_hospitals']} failed, processing_time_seconds "
                                   f"{d['processing_time_seconds']}, final {final_at[n] - first_post:.2f} s after first POST")
    for failure in failures:
        line("ERROR", failure)
    line("least time the limit allows", f"{least:.3f} s = window {WINDOW:g} x ceil({creations}/{LIMIT} - 1) "
                                        f"+ delay {DELAY:g} + activation {activation * 1000:.1f} ms")
    line("why", f"the first {LIMIT} creations start at once; the last {creations - LIMIT} cannot start before "
                f"the {WINDOW:g} s window ends, then take one creation plus the activation")
    line("service limiter window", f"{our_span:.3f} s = {WINDOW:g} x WINDOW_MARGIN {WINDOW_MARGIN} + EDGE_SECONDS "
                                   f"{EDGE_SECONDS} (so our least is {ours:.3f} s, ratio floor {ours / least:.3f})")
    line("total time (first POST to last final)", f"{total:.3f} s; ratio to least {ratio:.3f}  "
                                                  f"(target <= {RATIO_TARGET:.2f}, floor 1.00)  "
                                                  f"{verdict(ratio <= RATIO_TARGET)}")
    line("upstream 429s", f"{stats['rate_limited']}  (target <= {MAX_429})  {verdict(stats['rate_limited'] <= MAX_429)}")
    line("failed rows", f"{failed_rows}  (target 0)  {verdict(failed_rows == 0)}")
    line("upstream calls", f"{stats['create_requests']} create requests, {stats['created']} created, "
                           f"{stats['activate_requests'] - 1} activate requests (+1 timing probe), {stats['activations']} activations, "
                           f"{stats['batch_reads']} batch reads, max in flight {stats['max_in_flight']}")
    for pid in workers:
        mb = rss[pid]
        text = "gone" if mb is None else (f"{mb:.1f} MB (at boot {rss_at_start[pid]:.1f} MB); "
                                          f"{mb / RSS_TARGET_MB:.2f} of target  (target <= {RSS_TARGET_MB:g} MB)  "
                                          f"{verdict(mb <= RSS_TARGET_MB)}")
        line(f"worker {pid} peak RSS (VmHWM)", text)


if __name__ == "__main__":
    raise SystemExit(main())
