"""Shared pieces of the benchmarks: gunicorn as a subprocess, health waits, CSVs, peak RSS, verdicts.

Every benchmark starts its own simulator (in-process) and its own gunicorn (a subprocess of
this interpreter's venv), on free 127.0.0.1 ports, with a job store in a temporary directory.
"""

from __future__ import annotations

import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import support  # noqa: E402  (the shared test helpers: one CSV generator for both)

GUNICORN = Path(sys.executable).parent / "gunicorn"


free_port = support.free_port


def hospitals_csv(count: int, prefix: str = "Hospital") -> bytes:
    """A valid CSV of `count` hospitals with a header; `prefix` keeps uploads apart."""
    return support.hospitals_csv(count, prefix=prefix).encode()


def upload(session: requests.Session, base_url: str, csv_bytes: bytes, *, asynchronous: bool = False,
           timeout: float = 300) -> requests.Response:
    """POST /hospitals/bulk with the CSV in the multipart field `file`."""
    params = {"async": "1"} if asynchronous else {}
    return session.post(base_url + "/hospitals/bulk", params=params, timeout=timeout,
                        files={"file": ("hospitals.csv", csv_bytes, "text/csv")})


FINAL_STATUSES = frozenset({"completed", "partially_failed", "failed", "cancelled", "interrupted", "rolled_back"})


def start_import(session: requests.Session, base_url: str, rows: int, *, prefix: str = "Imported",
                 timeout: float = 120) -> str:
    """POST a generated file of `rows` hospitals to /hospitals/imports; the import's URL (RuntimeError unless 202)."""
    response = session.post(base_url + "/hospitals/imports", timeout=timeout,
                            files={"file": ("import.csv", hospitals_csv(rows, prefix), "text/csv")})
    if response.status_code != 202:
        raise RuntimeError(f"import: HTTP {response.status_code} {response.text[:300]}")
    return base_url + response.headers["Location"]


def wait_until_final(session: requests.Session, url: str, deadline: float, poll: float = 0.05) -> dict:
    """Poll a batch's or an import's status URL until its status is final; TimeoutError past `deadline`
    (monotonic)."""
    while True:
        document = session.get(url, timeout=60).json()
        if document["status"] in FINAL_STATUSES:
            return document
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} still {document['status']!r} at the deadline")
        time.sleep(poll)


class Service:
    """bulkproc under gunicorn, as a subprocess, with its own job store and log file."""

    def __init__(self, upstream_url: str, *, workers: int = 2, env: dict[str, str] | None = None,
                 workdir: str | None = None) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="bulkproc-bench-")
        self.workdir = Path(workdir or self._tmp.name)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "gunicorn.log"
        self.database = self.workdir / "jobs.sqlite3"
        environment = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.database}",
            "HOSPITAL_API_BASE_URL": upstream_url,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(GUNICORN), "--config", "gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(workers), "wsgi:app"],
            cwd=ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT)
        self.workers = workers

    def wait_healthy(self, timeout: float = 30.0) -> float:
        """Wait for /healthz to answer 200 and every worker to be up; return the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}; see {self.log_path}:\n"
                                   + self.log_path.read_text(errors="replace")[-2000:])
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200 \
                        and len(self.worker_pids()) >= self.workers:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.url}/healthz not healthy within {timeout:g} s; see {self.log_path}")
            time.sleep(0.05)

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: the master's child processes."""
        return children_of(self.proc.pid)

    def access_log_ms(self, pattern: str) -> list[float]:
        """Request durations (ms, from gunicorn's %(D)s in µs) of access-log lines whose request matches `pattern`."""
        self._log.flush()
        regex = re.compile(r'"(?P<request>[^"]*)" (?P<status>\d{3}) \S+ (?P<us>\d+)us$')
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = regex.search(line)
            if match and re.search(pattern, match["request"]):
                found.append(int(match["us"]) / 1000)
        return found

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM the master and wait for it (SIGKILL after `timeout`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
        self.cleanup()


def least_time(creations: int, limit: int, window: float, delay: float, activation: float) -> float:
    """The first `limit` creations start at once, each later group a window after the one before;
    the last group takes one creation and one activation."""
    return window * math.ceil(creations / limit - 1) + delay + activation


def children_of(pid: int) -> list[int]:
    """Pids whose parent is `pid` (read from /proc/*/stat)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces; the ppid follows the state.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident set size (VmHWM) of a live process in MB (MiB), or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile (pct in 0..100) of `values`."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def line(label: str, text: str) -> None:
    """One labelled output line, aligned."""
    print(f"  {label:<34} {text}", flush=True)


def header(title: str) -> None:
    print(f"== {title}", flush=True)
