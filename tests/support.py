"""Helpers shared by the tests and the benchmarks: CSV text, polling with a deadline, ports, served apps."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import requests
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import make_server

# HYPOTHESIS_PROFILE=long (make chaos, make fuzz) gives generated tests their long budgets.
LONG_RUN = os.environ.get("HYPOTHESIS_PROFILE") == "long"


def examples(ci: int, long: int) -> int:
    """A generated test's number of examples: `ci` in make test, `long` in a long run."""
    return long if LONG_RUN else ci


T = TypeVar("T")


def hospitals_csv(count: int, *, phone: bool = True, prefix: str = "Hospital") -> str:
    """A valid CSV of `count` hospitals with a header."""
    lines = ["name,address,phone" if phone else "name,address"]
    for n in range(1, count + 1):
        cells = [f"{prefix} {n}", f"{n} Main St, Springfield"]
        lines.append(f'{cells[0]},"{cells[1]}"' + (f",555-010-{n:04d}" if phone else ""))
    return "\n".join(lines) + "\n"


def wait_until(condition: Callable[[], T], *, timeout: float, what: str, interval: float = 0.02) -> T:
    """Call `condition` until it returns something truthy, and return that; AssertionError after `timeout` s.

    For state that only other processes or servers change, where no event can be waited on.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # sleep-ok: the pause between looks of a loop bounded by `deadline`


def metric(exposition: str, sample: str, **labels: str) -> float:
    """The value of one sample (e.g. `bulkproc_rows_failed_total`) in /metrics text; 0 when absent."""
    for family in text_string_to_metric_families(exposition):
        for found in family.samples:
            if found.name == sample and found.labels == labels:
                return found.value
    return 0.0


def free_port() -> int:
    """A loopback port nobody listens on, kept from other processes' free ports for a minute.

    The port is left in TIME_WAIT: the kernel hands it to no other bind(0) or outgoing connection
    meanwhile (other xdist workers pick ports too), while a server binding it with SO_REUSEADDR,
    as gunicorn, werkzeug, PostgreSQL and scripts/run.py do, gets it at once.
    """
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the side that closes first keeps the port in TIME_WAIT
            client.recv(1)  # its end of file: the close was seen, so TIME_WAIT has begun
    return port


class ServedApp:
    """An app on a real threaded server on loopback."""

    def __init__(self, app) -> None:
        self.app = app
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        self.http = requests.Session()

    def upload(self, csv_text: str | bytes, *, path: str = "/hospitals/bulk", headers: dict | None = None,
               timeout: float = 60, **params: str) -> requests.Response:
        data = csv_text.encode() if isinstance(csv_text, str) else csv_text
        return self.http.post(self.url + path, files={"file": ("hospitals.csv", data, "text/csv")},
                              params=params, headers=headers or {}, timeout=timeout)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.http.get(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.http.post(self.url + path, timeout=kwargs.pop("timeout", 60), **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return self.http.delete(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def stop(self) -> None:
        self.http.close()
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()


def waited_for(condition: Callable[[], object], *, timeout: float, interval: float = 0.02) -> bool:
    """Like wait_until, but False instead of an AssertionError when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)  # sleep-ok: the pause between looks of a loop bounded by `deadline`
    return True


class FakeClock:
    """Wall-clock seconds that move only when the test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
