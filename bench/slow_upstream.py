"""One 20-row upload against an upstream slower than the read timeout (creations 1.5 x it).

Scaled clock: each creation takes 3 s and the service's read timeout is 2 s (connect timeout
0.5 s), so every POST times out while its creation is still under way upstream. The service must
neither post again too early (a duplicate) nor lose a row: it waits until the creation could have
landed (3 read timeouts + the connect timeout after sending), reads the batch, and takes what it
finds. Targets: 0 hospitals extra, 0 missing, 20 creation requests; the time is printed against
the floor (one creation plus the activation), where the gap is the price of not duplicating.

Run: .venv/bin/python bench/slow_upstream.py
"""

from __future__ import annotations

import time

import requests
from _harness import Service, header, hospitals_csv, line, upload, verdict

from bulkproc.simulator import create_simulator, serve
from bulkproc.work.rows import SETTLE_FACTOR

DELAY = 3.0
READ_TIMEOUT = 2.0
CONNECT_TIMEOUT = 0.5
ROWS = 20


def main() -> int:
    header(f"slow_upstream: one {ROWS}-row synchronous upload, creations {DELAY:g} s = "
           f"{DELAY / READ_TIMEOUT:.1f} x the read timeout ({READ_TIMEOUT:g} s), 1 worker, otherwise default settings")
    up = serve(create_simulator(delay=DELAY, create_limit=30, window=60.0))
    service = Service(up.url, workers=1, env={"BULKPROC_READ_TIMEOUT": str(READ_TIMEOUT),
                                              "BULKPROC_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT)})
    try:
        service.wait_healthy()
        with requests.Session() as http:
            t0 = time.perf_counter()
            http.patch(f"{up.url}/hospitals/batch/00000000-0000-4000-8000-000000000000/activate", timeout=10)
            activation = time.perf_counter() - t0
            started = time.monotonic()
            response = upload(http, service.url, hospitals_csv(ROWS, "Slow"), timeout=120)
            wall = time.monotonic() - started
        document = response.json()
        stored = up.sim.hospitals(document.get("batch_id"))
        stats = dict(up.sim.stats)
    finally:
        service.stop()
        service.cleanup()
        up.stop()

    names = [h["name"] for h in stored]
    extra = len(names) - len(set(names))
    missing = ROWS - len(set(names))
    floor = DELAY + activation
    settle = SETTLE_FACTOR * READ_TIMEOUT + CONNECT_TIMEOUT
    line("response", f"HTTP {response.status_code}, status {document.get('status')!r}, "
                     f"{document.get('processed_hospitals')} processed, {document.get('failed_hospitals')} failed")
    line("hospitals upstream", f"{len(stored)} for {ROWS} rows: {extra} extra, {missing} missing  "
                               f"(target 0 and 0)  {verdict(extra == 0 and missing == 0)}")
    line("creation requests", f"{stats['create_requests']}  (target {ROWS}: none posted twice)  "
                              f"{verdict(stats['create_requests'] == ROWS)}")
    line("wall time (client, POST to 200)", f"{wall:.3f} s")
    line("floor", f"{floor:.3f} s = one creation {DELAY:g} s + activation {activation * 1000:.1f} ms")
    line("ratio to the floor", f"{wall / floor:.3f}  (expected about {(settle + activation) / floor:.2f}: the "
                               f"service waits {settle:g} s after sending before it reads)")
    line("upstream calls", f"{stats['batch_reads']} batch reads, {stats['activate_requests'] - 1} activate requests "
                           f"(+1 timing probe), {stats['rate_limited']} 429s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
