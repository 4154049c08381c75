"""bulkproc under gunicorn as a real multi-process service, for the durability tests.

`GunicornService` starts `gunicorn --config gunicorn.conf.py wsgi:app` from the repository root in a
session of its own, so the whole service (master and workers) can be SIGKILLed at once like a crashed
host. It knows its worker pids (the master's children) and can pause every worker but one
(`only(pid)`), which is how a test proves which worker served a request: there are no test endpoints.
Every request goes on a fresh connection, so the kernel hands each one to whichever worker accepts it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.support import free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"

def service_env(upstream_url: str, database_url: str, **extra: str) -> dict[str, str]:
    """The environment the durability tests run gunicorn with: short leases, no create limit, fast retries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKPROC_")}
    for inherited in ("PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_CMD_ARGS"):
        env.pop(inherited, None)
    env.update({
        "HOSPITAL_API_BASE_URL": upstream_url,
        "DATABASE_URL": database_url,
        "BULKPROC_CREATE_RATE": "0",
        "BULKPROC_READ_RATE": "0",
        "BULKPROC_LEASE_SECONDS": "1",
        "BULKPROC_BACKOFF_SECONDS": "0.01",
        "BULKPROC_READ_TIMEOUT": "2",
        "BULKPROC_WAKE_TIMEOUT": "5",
        "BULKPROC_OUTAGE_GRACE": "2",
        "PYTHONUNBUFFERED": "1",
        **extra,
    })
    return env


class GunicornService:
    """One gunicorn master with `workers` gthread workers on a free loopback port."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *, workers: int = 2, app: str = "wsgi:app") -> None:
        self.env, self.log_path, self.workers, self.app = dict(env), log_path, workers, app
        # The workers' metrics go beside the log, so that a SIGKILLed service leaves nothing in /tmp.
        self.env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(log_path.with_suffix(".metrics")))
        self.port = 0
        self.url = ""
        self._process: subprocess.Popen | None = None
        self._log = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> GunicornService:
        """Spawn gunicorn and return once every worker answers /healthz; AssertionError otherwise."""
        assert self._process is None, "already started"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(self.log_path, "ab")
        self._process = subprocess.Popen(
            [str(GUNICORN), "--config", "gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(self.workers), self.app],
            cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        wait_until(lambda: self._healthy(0.5), timeout=timeout, what=f"gunicorn on {self.url}\n{self.log_tail()}")
        wait_until(lambda: len(self.worker_pids()) == self.workers,
                   timeout=max(0.1, deadline - time.monotonic()), what=f"{self.workers} workers")
        # Each worker loads the app after it forks: prove every one of them accepts on its own.
        for pid in self.worker_pids():
            with self.only(pid):
                remaining = max(0.5, deadline - time.monotonic())
                assert self.get("/healthz", timeout=remaining).status_code == 200

    def _healthy(self, timeout: float) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self._process.returncode}\n{self.log_tail()}")
        try:
            return self.get("/healthz", timeout=timeout).status_code == 200
        except requests.RequestException:
            return False

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the master (after waking any paused worker) and wait; SIGKILL everything on timeout."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._signal_workers(signal.SIGCONT, self.worker_pids())
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._finish()

    def kill(self) -> None:
        """SIGKILL master and workers at once, as a crash would, and reap the master."""
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.wait(10)
        self._finish()

    def _finish(self) -> None:
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    # -- workers -------------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        """The pids of the master's children: its workers (gunicorn forks nothing else)."""
        children: set[int] = set()
        tasks = list(Path(f"/proc/{self.pid}/task").glob("*"))
        if tasks and not (tasks[0] / "children").exists():
            return self._children_by_ppid()  # a kernel without CONFIG_PROC_CHILDREN
        for task in tasks:
            try:
                children.update(int(p) for p in (task / "children").read_text().split())
            except (FileNotFoundError, ProcessLookupError):
                continue
        return sorted(children)

    def _children_by_ppid(self) -> list[int]:
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # The command name may hold spaces and parentheses: the fields start after the last ')'.
                fields = stat.read_text().rpartition(")")[2].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == self.pid:
                children.append(int(stat.parent.name))
        return sorted(children)

    @contextmanager
    def only(self, worker: int) -> Iterator[None]:
        """SIGSTOP every worker but `worker`, so that it alone accepts new connections; SIGCONT after.

        Pause only workers that are idle or only read: a worker paused inside an SQLite write
        transaction would hold the write lock until it is continued.
        """
        others = [pid for pid in self.worker_pids() if pid != worker]
        assert worker in self.worker_pids(), f"{worker} is not a worker of {self.pid}"
        self._signal_workers(signal.SIGSTOP, others)
        try:
            yield
        finally:
            self._signal_workers(signal.SIGCONT, others)

    @staticmethod
    def _signal_workers(signum: int, pids: list[int]) -> None:
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    # -- HTTP, each request on a connection of its own ----------------------------------------

    def request(self, method: str, path: str, *, timeout: float = 30.0, **kwargs: Any) -> requests.Response:
        headers = {"Connection": "close", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=timeout, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def upload(self, csv_text: str, *, headers: dict | None = None, timeout: float = 30.0,
               **params: str) -> requests.Response:
        """POST the CSV to /hospitals/bulk as multipart field `file`; `params` go in the query."""
        files = {"file": ("hospitals.csv", csv_text.encode(), "text/csv")}
        return self.post("/hospitals/bulk", files=files, params=params, headers=headers or {}, timeout=timeout)

    def batch(self, batch_id: str, **kwargs: Any) -> dict[str, Any]:
        response = self.get(f"/hospitals/bulk/{batch_id}", **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_status(self, batch_id: str, statuses: set[str], timeout: float = 20.0) -> dict[str, Any]:
        """Poll the batch until its status is one of `statuses`; return its document."""
        def reached() -> dict[str, Any] | None:
            document = self.batch(batch_id)
            return document if document["status"] in statuses else None
        return wait_until(reached, timeout=timeout, what=f"batch {batch_id} to reach {sorted(statuses)}")


# -- the whole service paused, and its store failing, for the ownership chaos test --------------

def pause_group(service: GunicornService) -> None:
    """SIGSTOP master and workers at once, as a long GC pause or a frozen VM would stop a host;
    return once every one of them has stopped (a signal is delivered after kill() returns, and a
    process still running meanwhile may yet take a lock)."""
    os.killpg(service.pid, signal.SIGSTOP)
    wait_until(lambda: all(state in "TtZX" for state in _group_states(service.pid)), timeout=10,
               interval=0.001, what="the paused process group stopped")


def _group_states(group: int) -> list[str]:
    """The scheduler state (/proc/PID/stat's third field) of each process in the group."""
    states = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after its end.
        state, _ppid, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
        if int(pgrp) == group:
            states.append(state)
    return states


def continue_group(service: GunicornService) -> None:
    """SIGCONT master and workers after pause_group()."""
    try:
        os.killpg(service.pid, signal.SIGCONT)
    except ProcessLookupError:
        pass  # killed meanwhile


# While the file STORE_FAULT_FILE names exists, every write of the app made by
# app_with_store_faults() fails as SQLite's "database is locked" does once busy_timeout has passed.
STORE_FAULT_FILE = "TEST_STORE_FAULT_FILE"
_WRITES = ("INSERT", "UPDATE", "DELETE")


def app_with_store_faults():
    """The service's app (`tests.gunicorn_service:app_with_store_faults()`), whose store writes
    fail while the file named by TEST_STORE_FAULT_FILE exists."""
    import sqlite3

    from sqlalchemy import event

    from bulkproc import create_app

    app = create_app()
    flag = Path(os.environ[STORE_FAULT_FILE])

    def fail_writes(_conn, _cursor, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(_WRITES) and flag.exists():
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorname = "SQLITE_BUSY"
            raise error

    event.listen(app.extensions["bulkproc"].store.engine, "before_cursor_execute", fail_writes)
    return app
