"""`make run`: the simulator (unless HOSPITAL_API_BASE_URL names an upstream) and gunicorn, on loopback.

Refuses to start, with one line, when a port is taken or a variable is bad. Each server runs in a
session of its own, so the terminal's Ctrl-C reaches only this script, which forwards one signal to
gunicorn's master (a quick stop) and one to the simulator, and waits for both within a bound.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bulkproc.config import ConfigError, from_env

# gunicorn's master kills workers still busy this long after a stop; the script kills what is left
# of a server STOP_SECONDS after the signal. Together they keep Ctrl-C under 5 s.
GRACE_SECONDS = 2
STOP_SECONDS = 4.0


class Refused(Exception):
    """A reason not to start, told in one line."""


def _port(environ: Mapping[str, str], variable: str, default: str) -> int:
    text = environ.get(variable, default).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise Refused(f"{variable}={text!r} is not valid: expected a port number from 1 to 65535")
    return int(text)


def _check_free(port: int, variable: str) -> None:
    """Raise Refused when something already listens on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind it
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise Refused(f"port {port} ({variable}) is already in use; stop what holds it "
                          f"or choose another, e.g. {variable}={port + 1} make run") from None


def _wait_listening(process: subprocess.Popen, port: int, stopping: threading.Event, timeout: float) -> None:
    """Return once `port` accepts connections or a stop is asked; Refused if `process` exits first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and not stopping.is_set():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise Refused(f"the simulator did not listen on port {port} within {timeout:.0f} s") from None
            stopping.wait(0.05)
    if process.returncode is not None:
        raise Refused(f"the simulator exited with status {process.returncode}")


def _spawn(args: list[str], env: Mapping[str, str]) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=REPO, env=env, start_new_session=True)


def _stop(servers: list[tuple[subprocess.Popen, int]]) -> None:
    """Signal each server in turn, gunicorn first: while its workers wind down they may still ask
    the upstream about rows in flight. A session still running at the deadline is killed."""
    deadline = time.monotonic() + STOP_SECONDS
    for process, signum in reversed(servers):
        if process.poll() is None:
            process.send_signal(signum)
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _preflight(environ: dict[str, str]) -> tuple[int, int | None]:
    """The service's port and the simulator's (None with a real upstream), once both are free and
    every variable is good; `environ` then points at the simulator. Raises Refused or ConfigError."""
    port = _port(environ, "PORT", "8000")
    sim_port = None if environ.get("HOSPITAL_API_BASE_URL") else _port(environ, "SIMULATOR_PORT", "9000")
    if sim_port is not None:
        environ["HOSPITAL_API_BASE_URL"] = f"http://127.0.0.1:{sim_port}"
    from_env(environ)
    _check_free(port, "PORT")
    if sim_port is not None:
        _check_free(sim_port, "SIMULATOR_PORT")
    return port, sim_port


def _serve(environ: dict[str, str], port: int, sim_port: int | None, stopping: threading.Event) -> int:
    """Run the simulator (if any) and gunicorn until `stopping` is set or gunicorn exits."""
    servers: list[tuple[subprocess.Popen, int]] = []
    try:
        if sim_port is not None:
            simulator = _spawn([sys.executable, "-m", "bulkproc.simulator", "--host", "127.0.0.1",
                                "--port", str(sim_port)], environ)
            servers.append((simulator, signal.SIGTERM))
            _wait_listening(simulator, sim_port, stopping, timeout=30)
        if stopping.is_set():
            return 0
        # The launcher every start goes through: it checks the store too, then becomes gunicorn.
        gunicorn = _spawn([sys.executable, "-m", "bulkproc.serve", "--bind", f"127.0.0.1:{port}",
                           "--graceful-timeout", str(GRACE_SECONDS)], environ)
        # SIGINT asks gunicorn's master for a quick stop; it alone signals its workers, once.
        servers.append((gunicorn, signal.SIGINT))
        while not stopping.is_set() and gunicorn.poll() is None:
            stopping.wait(0.2)
        return 0 if stopping.is_set() else gunicorn.returncode or 1
    finally:
        _stop(servers)


def main() -> int:
    """Check, start, and on Ctrl-C (or gunicorn's exit) stop everything; one line for any refusal."""
    environ = dict(os.environ)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda _signum, _frame: stopping.set())
    try:
        port, sim_port = _preflight(environ)
        return _serve(environ, port, sim_port, stopping)
    except (Refused, ConfigError) as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
