"""The processor's own cost as an import grows: 1,000 and 10,000 rows with nothing else to wait for.

The simulator takes 10 ms per creation and has no limits (creations and reads); the service is
told there is no create or read limit (BULKPROC_CREATE_RATE=0, BULKPROC_READ_RATE=0), so nothing paces the rows but the
processor itself: its store writes, its threads, its documents. One gunicorn worker, a SQLite
job store, BULKPROC_MAX_IMPORT_ROWS=10000. Each size runs on a fresh service, and prints:

- rows per second, from the POST to the import seen final (polled every 0.5 s);
- the worker's peak RSS (VmHWM) over the run, and its ratio between the two sizes: memory flat
  in the number of rows reads about 1.0;
- the time to fetch the finished import's results.csv;
- the worker's CPU time per row (user + system), which a machine shared with other work moves
  much less than the wall time.

Targets (issue 13): at least 400 rows/s at 10,000 rows, memory flat in the number of rows.

Run: .venv/bin/python bench/import_scale.py (or with sizes, e.g. `3000 40000`, for figures of those alone: the
service then takes imports as large as the largest)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import requests
from _harness import Service, header, line, peak_rss_mb, start_import, verdict, wait_until_final

from bulkproc.simulator import create_simulator, serve

SIZES = (1_000, 10_000)
DELAY = 0.01
POLL = 0.5
RATE_TARGET = 400.0
FLAT_TARGET = 1.10  # peak RSS at 10,000 rows over that at 1,000
ENV = {"BULKPROC_CREATE_RATE": "0", "BULKPROC_READ_RATE": "0", "BULKPROC_MAX_IMPORT_ROWS": str(max(SIZES)),
       "BULKPROC_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024)}


def main(sizes: tuple[int, ...] = SIZES) -> int:
    if sizes != SIZES:  # a quick look at other sizes, e.g. while profiling: figures only
        for rows in sizes:
            run(rows, max_rows=max(sizes))
        return 0
    header(f"import_scale: imports of {' and '.join(f'{n:,}' for n in SIZES)} rows, {DELAY * 1000:g} ms "
           "creations, no limits, 1 worker")
    figures = {rows: run(rows) for rows in SIZES}
    small, large = (figures[n] for n in SIZES)
    rate = large["rows_per_second"]
    line("rows per second", f"{rate:.0f} at {SIZES[1]:,} rows (target >= {RATE_TARGET:g})  "
                            f"{verdict(rate >= RATE_TARGET)}")
    ratio = large["rss"] / small["rss"]
    line("peak RSS, large over small", f"{ratio:.2f} ({large['rss']:.1f} / {small['rss']:.1f} MB; target <= "
                                       f"{FLAT_TARGET:.2f})  {verdict(ratio <= FLAT_TARGET)}")
    return 0


def run(rows: int, max_rows: int = max(SIZES)) -> dict[str, float]:
    """One import of `rows` rows on a fresh simulator and a service taking up to `max_rows`; its figures."""
    up = serve(create_simulator(delay=DELAY, create_limit=0, other_limit=0, health_limit=0))
    service = Service(up.url, workers=1, env={**ENV, "BULKPROC_MAX_IMPORT_ROWS": str(max_rows)})
    try:
        service.wait_healthy()
        (worker,) = service.worker_pids()
        at_boot, cpu_at_boot = peak_rss_mb(worker), cpu_seconds(worker)
        with requests.Session() as http:
            started = time.monotonic()
            url = start_import(http, service.url, rows, prefix="Scaled")
            document = wait_until_final(http, url, started + 1200, poll=POLL)
            done_at = time.monotonic()
            took = done_at - started
            fetch_started = time.monotonic()
            csv = http.get(url + "/results.csv", timeout=120)
            fetch = time.monotonic() - fetch_started
        rss, cpu = peak_rss_mb(worker), cpu_seconds(worker) - cpu_at_boot
        stats = dict(up.sim.stats)
    finally:
        service.stop()
        service.cleanup()
        up.stop()
    lines = csv.text.count("\n") - 1
    line(f"{rows:,} rows", f"{document['status']}, {document['processed_hospitals']:,} processed, "
                           f"{document['failed_hospitals']} failed, {stats['created']:,} created upstream; "
                           f"{took:.1f} s = {rows / took:.0f} rows/s (processing_time_seconds "
                           f"{document['processing_time_seconds']})")
    line(f"{rows:,} rows: worker peak RSS", f"{rss:.1f} MB (at boot {at_boot:.1f} MB)")
    line(f"{rows:,} rows: worker CPU", f"{cpu:.1f} s = {cpu / rows * 1000:.2f} ms per row (the POST, the run and "
                                       "the results.csv)")
    line(f"{rows:,} rows: results.csv", f"{fetch:.2f} s, {len(csv.content) / 1e6:.2f} MB, {lines:,} rows, "
                                        f"HTTP {csv.status_code}")
    return {"rows_per_second": rows / took, "rss": rss, "results_seconds": fetch}


def cpu_seconds(pid: int) -> float:
    """The user + system CPU time a live process has used, in seconds (from /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    raise SystemExit(main(tuple(int(n) for n in sys.argv[1:]) or SIZES))
