"""An import at the create-rate limit, alone and beside a small upload, on a scaled-down clock.

The real limit is 30 creations per 60 s with 5 s per creation; to keep the run short the
simulator applies the same rule to a SCALED window (30 creations per 6 s, 0.5 s per creation)
and the service is told the same (BULKPROC_CREATE_RATE=30/6). 2 gunicorn workers share the
limiter through the SQLite job store; the import runs on whichever worker took the POST.

1. A 200-row import alone: from the POST to the import's final state, at most 1.05 x the least
   time the limit allows, with 0 upstream 429s.
2. The same import with a 20-row upload sent mid-way (async, to /hospitals/bulk): the import and
   the upload together within 1.05 x the least for all their rows, 0 429s, and the upload's own
   wait (its POST to its final state) printed against one window: it shares the budget with the
   import instead of queueing behind the rest of it.
3. A 1000-row import (100 creations per 2 s window, 0.05 s each, to keep it short): each worker's
   peak RSS (VmHWM) at most 80 MB.

The machine these figures come from is shared with other jobs: treat them as provisional.

Run: .venv/bin/python bench/import_pacing.py
"""

from __future__ import annotations

import math
import threading
import time

import requests
from _harness import (Service, header, hospitals_csv, least_time, line, peak_rss_mb, start_import, upload, verdict,
                      wait_until_final)

from bulkproc.simulator import create_simulator, serve
from bulkproc.work.rate_limit import EDGE_SECONDS, WINDOW_MARGIN

LIMIT = 30
WINDOW = 6.0
DELAY = 0.5
ROWS = 200
UPLOAD_ROWS = 20
WORKERS = 2
RATIO_TARGET = 1.05
RSS_ROWS = 1000
RSS_LIMIT, RSS_WINDOW, RSS_DELAY = 100, 2.0, 0.05
RSS_TARGET_MB = 80.0


def main() -> int:
    pacing("a 200-row import alone", with_upload=False)
    pacing(f"a 200-row import and a {UPLOAD_ROWS}-row upload sent mid-way", with_upload=True)
    memory()
    return 0


def activation_round_trip(base_url: str) -> float:
    """The activation call's own time (404 on an empty batch: the same path, no work)."""
    with requests.Session() as http:
        t0 = time.perf_counter()
        http.patch(f"{base_url}/hospitals/batch/00000000-0000-4000-8000-000000000000/activate", timeout=10)
        return time.perf_counter() - t0


def pacing(label: str, *, with_upload: bool) -> None:
    header(f"import_pacing: {label}, {WORKERS} workers")
    line("SCALED clock", f"simulator limit {LIMIT} creations per {WINDOW:g} s window (real: per 60 s), "
                         f"creation delay {DELAY:g} s (real: 5 s); service BULKPROC_CREATE_RATE={LIMIT}/{WINDOW:g}")
    up = serve(create_simulator(delay=DELAY, create_limit=LIMIT, window=WINDOW))
    service = Service(up.url, workers=WORKERS, env={"BULKPROC_CREATE_RATE": f"{LIMIT}/{WINDOW:g}",
                                                    "BULKPROC_READ_RATE": f"50/{WINDOW:g}"})
    small: dict = {}
    try:
        service.wait_healthy()
        activation = activation_round_trip(up.url)
        with requests.Session() as http:
            first_post = time.monotonic()
            url = start_import(http, service.url, ROWS)
            sender = None
            if with_upload:
                sender = threading.Thread(target=send_upload_mid_way, args=(service.url, url, small))
                sender.start()
            document = wait_until_final(http, url, time.monotonic() + 600)
            done_at = time.monotonic()
            if sender is not None:
                sender.join()
        stats = dict(up.sim.stats)
    finally:
        service.stop()
        service.cleanup()
        up.stop()

    creations = ROWS + (UPLOAD_ROWS if with_upload else 0)
    finished = max(done_at, small.get("final_at", 0.0))
    total = finished - first_post
    least = least_time(creations, LIMIT, WINDOW, DELAY, activation)
    span = WINDOW * WINDOW_MARGIN + EDGE_SECONDS
    floor = least_time(creations, LIMIT, span, DELAY, activation) / least
    ratio = total / least
    line("import", f"{document['status']}, {document['processed_hospitals']}/{document['total_hospitals']} "
                   f"processed in {len(document['batches'])} batches, {document['failed_hospitals']} failed, "
                   f"processing_time_seconds {document['processing_time_seconds']}")
    if with_upload:
        wait = small.get("final_at", math.nan) - small.get("posted_at", math.nan)
        line(f"{UPLOAD_ROWS}-row upload", f"{small.get('status')}, sent {small.get('posted_at', math.nan) - first_post:.2f} s "
                                          f"after the import; its own wait {wait:.2f} s = {wait / WINDOW:.2f} windows "
                                          f"(the import alone still needed {small.get('left_then', '?')} creations "
                                          f"= {small.get('left_then', 0) / LIMIT:.1f} windows when it was sent)")
    line("least time the limit allows", f"{least:.3f} s = window {WINDOW:g} x ceil({creations}/{LIMIT} - 1) "
                                        f"+ delay {DELAY:g} + activation {activation * 1000:.1f} ms")
    line("service limiter window", f"{span:.3f} s (WINDOW_MARGIN {WINDOW_MARGIN}, EDGE_SECONDS {EDGE_SECONDS}): "
                                   f"ratio floor {floor:.3f}")
    line("total (first POST to last final)", f"{total:.3f} s; ratio to least {ratio:.3f}  "
                                             f"(target <= {RATIO_TARGET:.2f})  {verdict(ratio <= RATIO_TARGET)}")
    line("upstream 429s", f"{stats['rate_limited']}  (target 0)  {verdict(stats['rate_limited'] == 0)}")
    line("upstream calls", f"{stats['create_requests']} create requests, {stats['created']} created, "
                           f"{stats['activations']} activations, {stats['batch_reads']} batch reads")


def send_upload_mid_way(base_url: str, import_url: str, out: dict) -> None:
    """Once the import has created a third of its rows, send a small async upload and follow it."""
    try:
        with requests.Session() as http:
            while True:
                document = http.get(import_url, timeout=10).json()
                if document["processed_hospitals"] >= ROWS // 3:
                    break
                time.sleep(0.05)
            out["left_then"] = ROWS - document["processed_hospitals"]
            out["posted_at"] = time.monotonic()
            response = upload(http, base_url, hospitals_csv(UPLOAD_ROWS, "Small"), asynchronous=True)
            final = wait_until_final(http, base_url + response.headers["Location"], time.monotonic() + 600)
            out["final_at"], out["status"] = time.monotonic(), final["status"]
    except Exception as exc:  # reported in the output, the run goes on
        out["status"] = f"error: {type(exc).__name__}: {exc}"


def memory() -> None:
    header(f"import_pacing: peak RSS per worker during a {RSS_ROWS}-row import, {WORKERS} workers")
    line("SCALED clock", f"{RSS_LIMIT} creations per {RSS_WINDOW:g} s window, {RSS_DELAY:g} s per creation")
    up = serve(create_simulator(delay=RSS_DELAY, create_limit=RSS_LIMIT, window=RSS_WINDOW))
    service = Service(up.url, workers=WORKERS, env={"BULKPROC_CREATE_RATE": f"{RSS_LIMIT}/{RSS_WINDOW:g}",
                                                    "BULKPROC_READ_RATE": f"50/{RSS_WINDOW:g}",
                                                    "BULKPROC_CONCURRENCY": str(RSS_LIMIT)})
    try:
        service.wait_healthy()
        workers = service.worker_pids()
        at_boot = {pid: peak_rss_mb(pid) for pid in workers}
        with requests.Session() as http:
            started = time.monotonic()
            url = start_import(http, service.url, RSS_ROWS)
            # Read the document while it runs, as a page would: the biggest one is built meanwhile.
            document = wait_until_final(http, url, time.monotonic() + 600, poll=0.2)
            done_at = time.monotonic()
        rss = {pid: peak_rss_mb(pid) for pid in workers}
        stats = dict(up.sim.stats)
    finally:
        service.stop()
        service.cleanup()
        up.stop()
    line("import", f"{document['status']}, {document['processed_hospitals']}/{RSS_ROWS} processed in "
                   f"{len(document['batches'])} batches, {done_at - started:.1f} s, {stats['rate_limited']} 429s")
    for pid in workers:
        mb = rss[pid]
        text = "gone" if mb is None else (f"{mb:.1f} MB (at boot {at_boot[pid]:.1f} MB); {mb / RSS_TARGET_MB:.2f} "
                                          f"of target (<= {RSS_TARGET_MB:g} MB)  {verdict(mb <= RSS_TARGET_MB)}")
        line(f"worker {pid} peak RSS (VmHWM)", text)


if __name__ == "__main__":
    raise SystemExit(main())
