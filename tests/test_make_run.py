"""`make run` as a developer uses it: one line for what stops it, and Ctrl-C that always stops it fast."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import requests

from tests.gunicorn_service import free_port, wait_until
from tests.support import hospitals_csv

REPO = Path(__file__).resolve().parent.parent
STOP_BOUND = 5.0  # seconds from Ctrl-C until every process of `make run` is gone

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BULKPROC_", "GUNICORN", "MAKE")) and k not in (
               "HOSPITAL_API_BASE_URL", "DATABASE_URL", "PORT", "SIMULATOR_PORT", "WEB_CONCURRENCY")}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3", "PYTHONUNBUFFERED": "1", **extra})
    return env


def _make_run(env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """`make run` in a session of its own, with this interpreter's venv, as a terminal would start it."""
    venv = Path(sys.prefix)
    out = open(log, "wb") if log else subprocess.PIPE
    try:
        # -o: use this venv as it is; never let the test install anything.
        return subprocess.Popen(["make", "--no-print-directory", "run", f"VENV={venv}", "-o", f"{venv}/.installed"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT if log else subprocess.PIPE,
                                text=log is None, start_new_session=True)
    finally:
        if log:
            out.close()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@contextmanager
def _held_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _refusal(process: subprocess.Popen) -> list[str]:
    """The lines `make run` printed (make's own status line aside), once it has exited."""
    out, err = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "Traceback" not in out + err
    return [line for line in (out + err).splitlines() if line and not line.startswith("make: ***")]


def test_a_taken_simulator_port_stops_make_run_with_one_line(tmp_path):
    port = free_port()
    with _held_port() as taken:
        process = _make_run(_env(tmp_path, PORT=str(port), SIMULATOR_PORT=str(taken)))
        lines = _refusal(process)

    assert lines == [f"make run: port {taken} (SIMULATOR_PORT) is already in use; stop what holds it "
                     f"or choose another, e.g. SIMULATOR_PORT={taken + 1} make run"]
    assert not _listening(port)


def test_a_taken_service_port_stops_make_run_with_one_line(tmp_path):
    simulator_port = free_port()
    with _held_port() as taken:
        process = _make_run(_env(tmp_path, PORT=str(taken), SIMULATOR_PORT=str(simulator_port)))
        lines = _refusal(process)

    assert len(lines) == 1 and lines[0].startswith(f"make run: port {taken} (PORT) is already in use")
    assert not _listening(simulator_port)


@pytest.mark.parametrize("variable,text", [("WEB_CONCURRENCY", "two"), ("GUNICORN_THREADS", "x")])
def test_a_bad_gunicorn_variable_stops_make_run_with_one_line(tmp_path, variable, text):
    env = _env(tmp_path, PORT=str(free_port()), SIMULATOR_PORT=str(free_port()), **{variable: text})

    lines = _refusal(_make_run(env))

    assert lines == [f"make run: {variable}={text!r} is not valid: expected a whole number of at least 1"]


def test_make_run_starts_through_the_launcher_which_waits_for_the_store(tmp_path):
    # The launcher's own check (make run's preflight knows nothing of stores): one line per try, then one.
    env = _env(tmp_path, PORT=str(free_port()), SIMULATOR_PORT=str(free_port()), BULKPROC_STORE_WAIT="0",
               DATABASE_URL=f"postgresql://u:p@127.0.0.1:{free_port()}/jobs")

    lines = _refusal(_make_run(env))

    assert lines[-1].startswith("bulkproc: the job store (postgresql://u:***@127.0.0.1:")


def _start_work(url: str, stack) -> None:
    """An async batch whose rows are in flight (5 s creations), and its event stream held open."""
    created = requests.post(f"{url}/hospitals/bulk?async=1", files={"file": ("h.csv", hospitals_csv(5))},
                            timeout=10)
    assert created.status_code == 202, created.text
    stream = stack.enter_context(requests.get(url + created.headers["Location"] + "/events",
                                              stream=True, timeout=10))
    assert stream.status_code == 200
    next(stream.iter_lines())  # the stream is being served
    # The creations are on their way (a row is marked in progress as its POST goes out): a Ctrl-C
    # sent just after the 202 once found the rows still waiting, and the worker left at once.
    document_url = url + created.headers["Location"]
    wait_until(lambda: {r["status"] for r in requests.get(document_url, timeout=5).json()["hospitals"]}
               == {"in_progress"}, timeout=10, what="every row's creation in flight")


def _ctrl_c(tmp_path: Path, busy: bool) -> tuple[float, str]:
    """Start `make run`, optionally give it work, press Ctrl-C; return the seconds it took to end, and its output."""
    port, simulator_port = free_port(), free_port()
    log = tmp_path / "make-run.log"
    process = _make_run(_env(tmp_path, PORT=str(port), SIMULATOR_PORT=str(simulator_port)), log)
    url = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        try:
            wait_until(lambda: _listening(port) and requests.get(url + "/healthz", timeout=2).ok,
                       timeout=60, what=f"make run on {url}")
            if busy:
                _start_work(url, stack)
            os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
            sent = time.monotonic()
            process.wait(timeout=STOP_BOUND)
            took = time.monotonic() - sent
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert not _listening(port) and not _listening(simulator_port)
    return took, log.read_text(errors="replace")


# serial: the 5 s bound is for make run on its own, not beside three busy xdist workers.
@pytest.mark.serial
@pytest.mark.parametrize("attempt", range(6))
def test_ctrl_c_stops_an_idle_make_run_cleanly_every_time(tmp_path, attempt):
    took, output = _ctrl_c(tmp_path, busy=False)

    assert took < STOP_BOUND
    # gunicorn's master stopped by itself, not killed by make run's last resort. (A worker still
    # booting may miss the master's signal, gunicorn then kills it after the graceful timeout.)
    assert "Shutting down: Master" in output and "Traceback" not in output, output[-3000:]


@pytest.mark.serial
@pytest.mark.parametrize("attempt", range(2))
def test_ctrl_c_stops_a_busy_make_run_within_five_seconds(tmp_path, attempt):
    # Creations take 5 s in the simulator: a worker waiting on one is killed by gunicorn's master
    # after make run's short graceful timeout; its rows stay resumable.
    took, output = _ctrl_c(tmp_path, busy=True)

    assert took < STOP_BOUND
    assert "Shutting down: Master" in output and "Traceback" not in output, output[-3000:]
    # The worker leaves before the master's deadline: no SIGKILL, so no "Perhaps out of memory?".
    assert "SIGKILL" not in output and "out of memory" not in output, output[-3000:]
    assert "stopping with work still in flight at gunicorn's stop deadline" in output, output[-3000:]
