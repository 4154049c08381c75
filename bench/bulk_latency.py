"""How long one 20-row synchronous upload takes, against the upstream's real 5 s creation delay.

Target: wall time <= 1.10 x one creation (5 s); creations overlap, so 1.0 is the floor.
Also counts the upstream calls the upload made (from the simulator's counters): exactly 20
creations and 1 activation.

Run: .venv/bin/python bench/bulk_latency.py
"""

from __future__ import annotations

import time

import requests
from _harness import Service, header, hospitals_csv, line, upload, verdict

from bulkproc.simulator import create_simulator, serve

DELAY = 5.0
ROWS = 20
TARGET_RATIO = 1.10


def main() -> int:
    header(f"bulk_latency: one {ROWS}-row synchronous upload, simulator delay {DELAY:g} s, "
           "create limit 30/60 s (as upstream), service BULKPROC_CREATE_RATE=30/60 (default), 2 workers")
    up = serve(create_simulator(delay=DELAY, create_limit=30, window=60.0))
    service = Service(up.url, workers=2)
    try:
        service.wait_healthy()
        with requests.Session() as http:
            started = time.monotonic()
            response = upload(http, service.url, hospitals_csv(ROWS, "Latency"))
            wall = time.monotonic() - started
        document = response.json()
        stats = dict(up.sim.stats)
    finally:
        service.stop()
        service.cleanup()
        up.stop()

    ratio = wall / DELAY
    line("response", f"HTTP {response.status_code}, status {document.get('status')!r}, "
                     f"{document.get('processed_hospitals')} processed, {document.get('failed_hospitals')} failed")
    line("wall time (client, POST to 200)", f"{wall:.3f} s")
    line("ratio to one creation (5 s)", f"{ratio:.3f}  (target <= {TARGET_RATIO:.2f}, floor 1.00)  "
                                        f"{verdict(ratio <= TARGET_RATIO)}")
    line("service processing_time_seconds", f"{document.get('processing_time_seconds')} s "
                                             f"(client wall minus this: {wall - float(document.get('processing_time_seconds') or 0):.3f} s)")
    line("upstream creations (POSTs)", f"{stats['create_requests']} requests, {stats['created']} created  "
                                       f"(target exactly {ROWS})  {verdict(stats['create_requests'] == ROWS == stats['created'])}")
    line("upstream activations", f"{stats['activate_requests']} requests, {stats['activations']} succeeded  "
                                 f"(target exactly 1)  {verdict(stats['activate_requests'] == 1 == stats['activations'])}")
    line("upstream batch reads", f"{stats['batch_reads']}")
    line("upstream 429s", f"{stats['rate_limited']}")
    line("upstream max in flight", f"{stats['max_in_flight']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
