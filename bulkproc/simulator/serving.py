"""Serving a Simulator on a real socket in a background thread, with outages of refused connections."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server, select_address_family

from .app import Simulator

_log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    """A request handler that logs errors but not every request."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class ServedSimulator:
    """A Simulator served by a threaded werkzeug server on a background thread, which can refuse connections."""

    # How long accept() keeps trying to bind the port again while something else holds it.
    rebind_seconds = 5.0

    def __init__(self, sim: Simulator, server: BaseWSGIServer) -> None:
        self.sim = sim
        self.url = f"http://{server.host}:{server.port}"
        self._host, self._port = server.host, server.port
        self._handler = server.RequestHandlerClass
        self._app = server.app
        # Every request passes the countdown of refuse_connections(after_requests=...) first.
        server.app = self._count_request
        # One lock orders every transition (refuse, accept, stop) and the request countdown.
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._generation = 0
        self._countdown: tuple[int, float] | None = None  # requests until an outage, its seconds
        self._timers: list[threading.Thread] = []
        self._stopped = False
        self._stopping = threading.Event()
        self._listen_on(server)

    @property
    def refusing(self) -> bool:
        """True while the port is closed (refused connections) and the server is not stopped."""
        with self._lock:
            return self._server is None and not self._stopped

    def refuse(self) -> None:
        """Close the listening socket so new connections are refused, letting requests in flight finish.

        RuntimeError after stop().
        """
        with self._lock:
            self._check_running()
            self._supersede()
            self._close_listener()

    def accept(self) -> None:
        """Bind the same port again and serve; OSError if it stays taken for rebind_seconds, RuntimeError after stop()."""
        with self._lock:
            self._check_running()
            self._supersede()
            if self._server is None:
                self._listen_on(self._bind())

    def refuse_connections(self, seconds: float, after_requests: int = 0) -> None:
        """Refuse connections for `seconds`, from now or once the `after_requests`-th next request arrives.

        The request that starts the outage is still answered. A later refuse, accept or
        refuse_connections call replaces this one. RuntimeError after stop().
        """
        with self._lock:
            self._check_running()
            self._supersede()
            if after_requests > 0:
                self._countdown = (after_requests, seconds)
            else:
                self._begin_outage(seconds)

    def stop(self) -> None:
        """Stop serving (whether serving or refusing), end hangs, and close the listening socket."""
        self._stopping.set()
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._supersede()
            self.sim.release_hangs()
            self._close_listener()
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.join()

    def __enter__(self) -> ServedSimulator:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _supersede(self) -> None:
        """Cancel any pending outage start or end: the latest control call wins."""
        self._generation += 1
        self._countdown = None

    def _check_running(self) -> None:
        if self._stopped:
            raise RuntimeError("the simulator has been stopped")

    def _count_request(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            if self._countdown is not None:
                left, seconds = self._countdown
                self._countdown = (left - 1, seconds) if left > 1 else None
                if left <= 1:
                    self._begin_outage(seconds)
        return self._app(environ, start_response)

    def _begin_outage(self, seconds: float) -> None:
        self._close_listener()
        _log.info("refusing connections on port %s for %g s", self._port, seconds)
        timer = threading.Thread(target=self._end_outage, args=(self._generation, seconds),
                                 name=f"simulator-outage-{self._port}", daemon=True)
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _end_outage(self, generation: int, seconds: float) -> None:
        if self._stopping.wait(seconds):
            return
        with self._lock:
            if generation != self._generation or self._stopped:
                return
            try:
                self._listen_on(self._bind())
            except OSError as exc:
                if not self._stopping.is_set():
                    _log.error("could not listen on port %s again: %s", self._port, exc)
                return
        _log.info("accepting connections on port %s again", self._port)

    def _bind(self) -> BaseWSGIServer:
        # SO_REUSEADDR (werkzeug sets it) covers connections still in TIME_WAIT; a client's
        # ephemeral port or another server can still hold the port briefly, hence the retries.
        deadline = time.monotonic() + self.rebind_seconds
        family = select_address_family(self._host, self._port)
        while True:
            try:
                # Bound here because werkzeug answers a taken port with sys.exit(1).
                with socket.create_server((self._host, self._port), family=family) as sock:
                    return make_server(self._host, self._port, self._count_request, threaded=True,
                                       request_handler=self._handler, fd=sock.fileno())
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise
            if self._stopping.wait(0.05):
                raise OSError(errno.ECANCELED, "stopped while binding the port again")

    def _listen_on(self, server: BaseWSGIServer) -> None:
        self._server = server
        # A short poll interval keeps stop() quick; the default would cost 0.5 s per server.
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=f"simulator-{self._port}", daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.shutdown()
        thread.join()
        server.server_close()


def _make_server(sim: Simulator, host: str, port: int, verbose: bool) -> BaseWSGIServer:
    handler = WSGIRequestHandler if verbose else _QuietHandler
    return make_server(host, port, sim.app, threaded=True, request_handler=handler)


def serve(sim: Simulator, host: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> ServedSimulator:
    """Serve sim on host:port (0 picks a free port) at once, in a background thread."""
    return ServedSimulator(sim, _make_server(sim, host, port, verbose))

