"""Shared fixtures: the simulator on loopback, apps on temporary stores, and real servers for them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from bulkproc import create_app
from bulkproc.simulator import ServedSimulator, create_simulator, serve

RESOURCES = Path(__file__).parent / "resources"


def hospitals_csv(count: int, *, phone: bool = True, prefix: str = "Hospital") -> str:
    """A valid CSV of `count` hospitals with a header."""
    lines = ["name,address,phone" if phone else "name,address"]
    for n in range(1, count + 1):
        cells = [f"{prefix} {n}", f"{n} Main St, Springfield"]
        lines.append(f'{cells[0]},"{cells[1]}"' + (f",555-010-{n:04d}" if phone else ""))
    return "\n".join(lines) + "\n"


@pytest.fixture
def upstream() -> Iterator[ServedSimulator]:
    """The simulator on a free loopback port, fast: 0.05 s per creation, no rate limit."""
    served = serve(create_simulator(delay=0.05, create_limit=0, hang_seconds=3.0))
    yield served
    served.stop()


@pytest.fixture
def make_app(tmp_path: Path, upstream: ServedSimulator) -> Iterator[Callable[..., object]]:
    """Build apps on a temporary SQLite store, pointed at the simulator; closed after the test."""
    apps = []

    def build(**overrides: object):
        config = {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
            "HOSPITAL_API_BASE_URL": upstream.url,
            "CREATE_RATE": None,
            "CONNECT_TIMEOUT": 1.0,
            "READ_TIMEOUT": 1.0,
            "BACKOFF_SECONDS": 0.01,
            "RATE_LIMIT_PAUSE": 0.05,
            "LEASE_SECONDS": 2.0,
            "WAKE_TIMEOUT": 2.0,
            **overrides,
        }
        app = create_app(config)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["bulkproc"].close()
        app.extensions["bulkproc"].store.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


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


@pytest.fixture
def serve_app() -> Iterator[Callable[..., ServedApp]]:
    servers: list[ServedApp] = []

    def start(app) -> ServedApp:
        servers.append(ServedApp(app))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def service(app, serve_app) -> ServedApp:
    """The default app served for real against the simulator."""
    return serve_app(app)
