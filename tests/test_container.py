"""The image and the compose stack as a user runs them: nginx, the service, PostgreSQL and the simulator in containers.

Needs a Docker daemon and the base images (`.ci/run` provides both in CI, from Debian packages).
Without them the container tests are skipped, saying why; with CI=true they fail instead.
Run everything else with `-m "not container"`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.gunicorn_service import free_port, wait_until
from tests.support import hospitals_csv

REPO = Path(__file__).resolve().parent.parent
IMAGE = "bulkproc:latest"
PROXY_IMAGE = "bulkproc-proxy:latest"
SLOW_CLIENTS = 40
ROWS = 5


def _docker(*args: str, timeout: float = 120, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=stdin)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def _compose_commands() -> dict[str, list[str]]:
    """The Compose implementations installed: v2 (`docker compose`) and v1 (`docker-compose`)."""
    found = {}
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        found["v2"] = ["docker", "compose"]
    if shutil.which("docker-compose"):
        found["v1"] = ["docker-compose"]
    return found


COMPOSE = _compose_commands()


def _base_images() -> list[str]:
    """The images the Dockerfile, the proxy's Dockerfile and the compose file start from."""
    dockerfile = (REPO / "Dockerfile").read_text()
    proxy = (REPO / "deploy" / "proxy" / "Dockerfile").read_text()
    compose = (REPO / "docker-compose.yml").read_text()
    return [re.search(r"^FROM (\S+)", dockerfile, re.M).group(1),
            re.search(r"^\s+image: (postgres:\S+)", compose, re.M).group(1),
            re.search(r"^FROM (\S+)", proxy, re.M).group(1)]


def _missing_docker() -> str | None:
    """Why the container tests cannot run here, or None when they can."""
    if shutil.which("docker") is None:
        return "no docker command"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "the Docker daemon did not answer within 30 s"
    if info.returncode != 0:
        return f"no Docker daemon: {(info.stderr.strip().splitlines() or ['docker info failed'])[0]}"
    if not COMPOSE:
        return "neither `docker compose` nor `docker-compose` is installed"
    missing = [image for image in _base_images() if _docker("image", "inspect", image, check=False).returncode]
    if missing:
        return f"base images not present: {', '.join(missing)} (docker pull them, or run .ci/docker-standins.sh)"
    return None


# serial: one docker build at a time, and no load of the suite's beside the timing checks.
pytestmark = [pytest.mark.container, pytest.mark.serial]


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> str:
    """The service's image, built from the Dockerfile as it stands."""
    reason = _missing_docker()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the container tests: {reason}")
        # On the terminal even without -rs: a developer should know these did not run.
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"\ncontainer tests skipped: {reason}", yellow=True)
        pytest.skip(reason)
    # Host networking for the build only: the CI sandbox's daemon has no bridge, and elsewhere it
    # changes nothing but where pip's downloads come from.
    _docker("build", "--network", "host", "-t", IMAGE, str(REPO), timeout=600)
    _docker("build", "-t", PROXY_IMAGE, str(REPO / "deploy" / "proxy"), timeout=600)
    return IMAGE


class Stack:
    """One compose project (service, PostgreSQL, simulator) on free loopback ports."""

    def __init__(self, compose: list[str], profiles: tuple[str, ...] = ("local",)) -> None:
        self.command = [*compose, *(arg for profile in profiles for arg in ("--profile", profile))]
        self.project = f"bulkproc-test-{uuid.uuid4().hex[:8]}"
        self.port, self.simulator_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.simulator_url = f"http://127.0.0.1:{self.simulator_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BULKPROC_", "COMPOSE_")) and k not in (
            "HOSPITAL_API_BASE_URL", "DATABASE_URL", "PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS")}
        env.update({
            "PUBLISH_PORT": str(self.port), "SIMULATOR_PORT": str(self.simulator_port),
            "POSTGRES_PASSWORD": uuid.uuid4().hex,
            # A lease that expires soon after a kill, and creations of 3 s with a read timeout just
            # above them, so that a resume's settle wait (3 read timeouts + connect) stays short.
            "BULKPROC_LEASE_SECONDS": "2", "SIMULATOR_DELAY": "3", "BULKPROC_READ_TIMEOUT": "4",
            "BULKPROC_CONNECT_TIMEOUT": "1",
        })
        self.env = env

    def compose(self, *args: str, timeout: float = 180) -> str:
        command = [*self.command, "--project-name", self.project, *args]
        result = subprocess.run(command, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"
        return result.stdout

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).strip()

    def health(self, service: str) -> str:
        return _docker("inspect", "-f", "{{.State.Health.Status}}", self.container(service)).stdout.strip()

    def logs(self) -> str:
        try:
            return self.compose("logs", "--no-color", "--tail", "60", timeout=60)
        except AssertionError as exc:
            return str(exc)


# The compose file must work with both; CI has both (.ci/run), a developer whichever is installed.
@pytest.fixture(scope="module", params=sorted(COMPOSE) or ["none"])
def stack(request: pytest.FixtureRequest, image: str) -> Iterator[Stack]:
    """`docker compose --profile local up` with the image just built, torn down with its volumes after."""
    if os.environ.get("CI") == "true" and set(COMPOSE) != {"v1", "v2"}:
        pytest.fail(f"CI must run the stack with Compose v1 and v2; found: {sorted(COMPOSE)}")
    stack = Stack(COMPOSE[request.param])
    try:
        stack.compose("up", "-d", "--no-build")
        wait_until(lambda: stack.health("web") == "healthy", timeout=120,
                   what=f"the service container to turn healthy\n{stack.logs()}")
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")


def _document(stack: Stack, batch_id: str) -> dict:
    response = requests.get(f"{stack.url}/hospitals/bulk/{batch_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_the_image_holds_only_what_the_service_needs(image):
    listing = _docker("run", "--rm", "--entrypoint", "ls", image, "-A", "/app").stdout.split()

    assert sorted(listing) == ["bulkproc", "gunicorn.conf.py", "instance", "requirements.txt", "wsgi.py"]
    config = json.loads(_docker("image", "inspect", "-f", "{{json .Config}}", image).stdout)
    assert "/readyz" in " ".join(config["Healthcheck"]["Test"])
    assert not config.get("Volumes")  # none: it would leave an anonymous volume behind every container
    assert config["Cmd"] == ["python", "-m", "bulkproc.serve"]


def test_the_build_context_holds_only_what_the_image_needs(image):
    # The image's COPY lines pick files anyway; .dockerignore is what keeps .git, .venv, tests and
    # caches from being sent to the daemon at all. Copy the whole context to see what it holds.
    tag = f"bulkproc-context-{uuid.uuid4().hex[:8]}"
    _docker("build", "-q", "-t", tag, "-f", "-", str(REPO), stdin=f"FROM {_base_images()[0]}\nCOPY . /context\n")
    try:
        found = _docker("run", "--rm", "--network", "none", tag, "find", "/context", "-mindepth", "1").stdout.splitlines()
    finally:
        _docker("image", "rm", tag)

    top = {path.split("/")[2] for path in found}
    assert top == {"bulkproc", "gunicorn.conf.py", "requirements.txt", "wsgi.py"}
    assert not [path for path in found if "__pycache__" in path or path.endswith(".pyc")]


def test_the_image_alone_keeps_its_sqlite_store_in_a_named_volume(image):
    # The image's own CMD, with no DATABASE_URL: the store is SQLite in /app/instance, which the
    # non-root user must be able to write although a named volume is mounted there.
    name, port = f"bulkproc-alone-{uuid.uuid4().hex[:8]}", free_port()
    _docker("network", "create", name)  # the CI daemon has no default bridge
    try:
        _docker("run", "-d", "--name", name, "--network", name, "-p", f"127.0.0.1:{port}:8000",
                "-v", f"{name}:/app/instance", image)
        wait_until(lambda: _docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip() == "healthy",
                   timeout=90, what=f"the container to turn healthy\n{_docker('logs', name).stderr[-2000:]}")
        mounts = json.loads(_docker("inspect", "-f", "{{json .Mounts}}", name).stdout)
        stored = _docker("exec", name, "ls", "/app/instance").stdout.split()
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()
    finally:
        _docker("rm", "-f", "-v", name, check=False)
        _docker("network", "rm", name, check=False)
        _docker("volume", "rm", name, check=False)

    assert ready == {"status": "ready"}
    assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts] == [("volume", name, "/app/instance")]
    assert "bulkproc.sqlite3" in stored


def test_the_service_runs_as_a_non_root_user_and_turns_healthy(stack):
    uid = _docker("exec", stack.container("web"), "id", "-u").stdout.strip()
    mounts = json.loads(_docker("inspect", "-f", "{{json .Mounts}}", stack.container("web")).stdout)

    assert uid != "0"
    assert stack.health("web") == "healthy"
    assert mounts == []  # no anonymous volume: the store is PostgreSQL's named one
    assert requests.get(f"{stack.url}/readyz", timeout=10).json() == {"status": "ready"}


def _slow_client(port: int, stop: threading.Event, errors: list[str]) -> None:
    """Send a request one byte every 2 s until `stop`, as a slow (or hostile) client would."""
    request = b"POST /hospitals/bulk HTTP/1.1\r\nHost: slow\r\nX-Padding: " + b"x" * 200
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for byte in request:
                sock.sendall(bytes([byte]))
                if stop.wait(2):
                    return
    except OSError as exc:
        errors.append(repr(exc))


def test_forty_slow_clients_do_not_stop_healthz_answering_within_a_second(stack):
    stop, errors = threading.Event(), []
    clients = [threading.Thread(target=_slow_client, args=(stack.port, stop, errors), daemon=True)
               for _ in range(SLOW_CLIENTS)]
    for client in clients:
        client.start()
    slowest, answered = 0.0, 0
    try:
        held_until = time.monotonic() + 16  # eight bytes from each client
        while time.monotonic() < held_until:
            started = time.monotonic()
            response = requests.get(f"{stack.url}/healthz", timeout=5)
            slowest = max(slowest, time.monotonic() - started)
            assert response.status_code == 200
            answered += 1
            stop.wait(0.2)
    finally:
        stop.set()
        for client in clients:
            client.join(10)

    assert not errors, errors[:3]  # every slow client was held open throughout
    assert answered > 40 and slowest < 1.0, (answered, slowest)


def test_the_proxy_answers_its_own_refusals_in_json(stack):
    too_long = requests.get(f"{stack.url}/{'a' * 9000}", timeout=10)
    headers_too_long = requests.get(f"{stack.url}/healthz", headers={"X-Big": "b" * 9000}, timeout=10)

    assert too_long.status_code == 414 and headers_too_long.status_code == 431
    for response in (too_long, headers_too_long):
        assert response.headers["Content-Type"] == "application/json"
        assert set(response.json()) == {"error", "details"} and response.headers["X-Request-ID"]


def test_an_upload_through_the_stack_lands_in_the_simulator(stack):
    response = requests.post(f"{stack.url}/hospitals/bulk", files={"file": ("h.csv", hospitals_csv(2, prefix="Sync"))},
                             timeout=60)

    assert response.status_code == 200, response.text
    document = response.json()
    assert document["status"] == "completed"
    upstream = requests.get(f"{stack.simulator_url}/hospitals/batch/{document['batch_id']}", timeout=10).json()
    assert sorted(h["name"] for h in upstream) == ["Sync 1", "Sync 2"]


def test_a_restart_mid_batch_resumes_without_duplicates(stack):
    if stack.command[:len(COMPOSE[min(COMPOSE)])] != COMPOSE[min(COMPOSE)]:
        pytest.skip(f"the restart is docker's, not compose's: it runs once, under Compose {min(COMPOSE)}")
    created = requests.post(f"{stack.url}/hospitals/bulk?async=1",
                            files={"file": ("h.csv", hospitals_csv(ROWS, prefix="Restart"))}, timeout=30)
    assert created.status_code == 202, created.text
    batch_id = created.json()["batch_id"]
    wait_until(lambda: any(r["status"] == "in_progress" for r in _document(stack, batch_id)["hospitals"]),
               timeout=30, what="rows in flight")

    # SIGTERM, then SIGKILL a second later: creations that take 5 s upstream are cut off mid-way.
    _docker("restart", "--time", "1", stack.container("web"))
    wait_until(lambda: _answers(f"{stack.url}/readyz"), timeout=60,
               what=f"the service after its restart\n{stack.logs()}")
    wait_until(lambda: _document(stack, batch_id)["status"] in ("interrupted", "partially_failed", "failed"),
               timeout=60, what="the batch to read resumable")
    resumed = requests.post(f"{stack.url}/hospitals/bulk/{batch_id}/resume?async=1", timeout=30)
    assert resumed.status_code == 202, resumed.text
    final = wait_until(lambda: (d := _document(stack, batch_id))["status"] not in ("queued", "processing", "activating") and d,
                       timeout=120, what=f"the resumed batch to finish\n{stack.logs()}")

    assert final["status"] == "completed", final
    upstream = requests.get(f"{stack.simulator_url}/hospitals/batch/{batch_id}", timeout=10).json()
    names = Counter(h["name"] for h in upstream)
    assert names == Counter(f"Restart {n}" for n in range(1, ROWS + 1))  # each once: no duplicate
    assert all(h.get("active") for h in upstream), upstream


def test_without_the_local_profile_the_stack_serves_against_the_real_directory(image):
    # `docker compose up`: PostgreSQL and the service only. No upload (CI has no internet): the
    # service must be ready on its database and name the real directory as its upstream.
    stack = Stack(COMPOSE[sorted(COMPOSE)[0]], profiles=())
    try:
        stack.compose("up", "-d", "--no-build")
        wait_until(lambda: stack.health("web") == "healthy", timeout=120,
                   what=f"the service container to turn healthy\n{stack.logs()}")
        services = set(_docker("ps", "--filter", f"label=com.docker.compose.project={stack.project}", "--format",
                               '{{.Label "com.docker.compose.service"}}').stdout.split())
        logs = stack.compose("logs", "--no-color", "web", timeout=60)
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")

    assert services == {"db", "web", "proxy"}
    assert "bulkproc: upstream https://hospital-directory.onrender.com" in logs
