"""Shared fixtures: the simulator on loopback, apps on temporary stores, and real servers for them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from bulkproc import create_app
from bulkproc.simulator import ServedSimulator, create_simulator, serve
from tests.browser import start_chromium
from tests.gunicorn_service import GunicornService, service_env
from tests.support import ServedApp

RESOURCES = Path(__file__).parent / "resources"

# Generated tests: a small, derandomized budget in `make test` ("ci"); `make chaos` and `make fuzz`
# select "long" (HYPOTHESIS_PROFILE=long): fresh seeds, and each test's long budget
# (tests.support.examples).
_GENERATED = {"deadline": None, "database": None, "print_blob": True,
              "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]}
settings.register_profile("ci", derandomize=True, **_GENERATED)
settings.register_profile("long", **_GENERATED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# A session fixture (the PostgreSQL server) is set up once per worker anyway, and cheaply.
_SHARED_SCOPES = ("class", "module", "package")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group tests for `--dist loadgroup`: the serial ones together, and a module's tests that share
    one of its fixtures (a Chromium, a served cluster) on one worker, so that it is set up once."""
    if not config.pluginmanager.hasplugin("xdist"):  # -p no:xdist: no groups, nor their marker
        return
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        if item.get_closest_marker("serial"):
            item.add_marker(pytest.mark.xdist_group("serial"))
        elif any(defs[-1].scope in _SHARED_SCOPES for defs in item._fixtureinfo.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


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
            "READ_RATE": None,
            "CONNECT_TIMEOUT": 1.0,
            "READ_TIMEOUT": 1.0,
            "BACKOFF_SECONDS": 0.01,
            "RATE_LIMIT_PAUSE": 0.05,
            "LEASE_SECONDS": 2.0,
            "WAKE_TIMEOUT": 2.0,
            "OUTAGE_GRACE": 0.5,
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


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the page tests of one module."""
    driver = start_chromium()
    yield driver
    driver.quit()


@pytest.fixture
def live_server(make_app, serve_app):
    """Serve an app over real HTTP on 127.0.0.1, in front of the simulator; returns its URL.

    The shared fixtures stop the server, then close the app's jobs and its store: an unclosed
    store leaves SQLite connections for the garbage collector (a ResourceWarning on 3.13).
    """
    return lambda **config: serve_app(make_app(**config)).url + "/"


@pytest.fixture
def start_service(tmp_path: Path, upstream: ServedSimulator) -> Iterator[Callable[..., GunicornService]]:
    """Start gunicorn services on one SQLite file (a restart reuses it); stopped after the test."""
    services: list[GunicornService] = []

    def start(**extra_env: str) -> GunicornService:
        env = service_env(upstream.url, f"sqlite:///{tmp_path}/jobs.sqlite3", **extra_env)
        services.append(GunicornService(env, tmp_path / f"gunicorn-{len(services)}.log"))
        return services[-1].start()

    yield start
    for service in services:
        service.stop()
    for service in services:  # shown by pytest when the test failed
        print(f"--- {service.log_path.name} ---\n{service.log_tail()}")
