"""Scripted faults, never random: which request of an operation misbehaves and how, and holds that end on demand.

Kinds, by when they act:
- before the request is handled, nothing stored: error_500, html_502, rate_limit, reject_422, hang
  (held for its seconds, then the connection is dropped);
- instead of the usual delay: slow (takes `seconds`, then acts normally);
- after a successful answer was made, so the change is stored: store_then_500, store_then_drop,
  store_then_hang (held for its seconds, then answered);
- wrong answers, as a proxy or a broken upstream might give them (only on the ops named):
  list_all (list_batch: every hospital of every batch, the filter ignored), string_ids (list_batch,
  list and create: ids as JSON strings, "7" for 7), error_body (activate: 200 {"error": "..."} and
  nothing activated), not_a_list (list and list_batch: 200 with the hospitals wrapped in an object);
- trickle (any op, needs `seconds`): the answer is made (a creation stores first), then its status
  line, headers and body are sent one byte every `seconds` seconds, and the connection closed.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PRE_FAULTS = frozenset({"error_500", "html_502", "rate_limit", "reject_422", "hang", "error_body"})
POST_FAULTS = frozenset({"store_then_500", "store_then_drop", "store_then_hang"})
LATENCY_FAULTS = frozenset({"slow"})
TRICKLE_FAULTS = frozenset({"trickle"})
# Wrong answers, each only where the upstream's answer has that shape.
SHAPE_FAULTS = {"list_all": frozenset({"list_batch"}), "string_ids": frozenset({"list_batch", "list", "create"}),
                "error_body": frozenset({"activate"}), "not_a_list": frozenset({"list", "list_batch"})}
FAULT_KINDS = PRE_FAULTS | POST_FAULTS | LATENCY_FAULTS | TRICKLE_FAULTS | frozenset(SHAPE_FAULTS)
NEEDS_SECONDS = LATENCY_FAULTS | TRICKLE_FAULTS
BAD_GATEWAY_HTML = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    "<body><h1>Bad Gateway</h1><p>The service is waking up or overloaded. "
    "Please try again.</p></body></html>\n"
)


@dataclass
class Fault:
    """One scripted fault: `times` requests of its operation, after skipping `after`, behave as `kind`."""

    kind: str
    times: int
    after: int
    seconds: float | None = None


class FaultScript:
    """The faults still to fire, per operation, in the order they were added."""

    def __init__(self, ops: frozenset[str]) -> None:
        self._ops = ops
        self._lock = threading.Lock()
        self._faults: dict[str, list[Fault]] = {op: [] for op in ops}

    def add(self, op: str, kind: str, times: int = 1, after: int = 0, seconds: float | None = None) -> None:
        """Script a fault; ValueError for an unknown op or kind, or seconds missing or negative."""
        if op not in self._ops:
            raise ValueError(f"unknown op {op!r}; expected one of {sorted(self._ops)}")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if kind in SHAPE_FAULTS and op not in SHAPE_FAULTS[kind]:
            raise ValueError(f"a {kind!r} fault is for {' and '.join(sorted(SHAPE_FAULTS[kind]))}, not {op!r}")
        if kind in NEEDS_SECONDS and seconds is None:
            raise ValueError(f"a {kind!r} fault needs seconds=")
        if seconds is not None and seconds < 0:
            raise ValueError(f"seconds must not be negative, got {seconds!r}")
        with self._lock:
            self._faults[op].append(Fault(kind, times, after, seconds))

    def take(self, op: str) -> Fault | None:
        """Count one request of `op` against every fault of it; return the fault that fires, if any."""
        with self._lock:
            fired = None
            for fault in self._faults[op]:
                if fault.after > 0:
                    fault.after -= 1
                elif fired is None:
                    fired, fault.times = fault, fault.times - 1
            self._faults[op] = [f for f in self._faults[op] if f.times > 0]
            return fired

    def clear(self) -> None:
        """Forget every fault not yet fired."""
        with self._lock:
            for faults in self._faults.values():
                faults.clear()


class Holds:
    """Requests held by hang faults, each until its time is up or release_all()."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: set[threading.Event] = set()

    def hold(self, seconds: float) -> bool:
        """Block the calling request thread for `seconds` or until release_all(); True when released."""
        # A real wait, not the simulator's injected sleep, so release_all() can end it at shutdown.
        gate = threading.Event()
        with self._lock:
            self._gates.add(gate)
        released = gate.wait(seconds)
        with self._lock:
            self._gates.discard(gate)
        return released

    def release_all(self) -> None:
        """End every hold now."""
        with self._lock:
            for gate in self._gates:
                gate.set()


def with_string_ids(body: Any) -> Any:
    """A hospital, or a list of them, with each id as a JSON string."""
    if isinstance(body, list):
        return [with_string_ids(h) for h in body]
    return {**body, "id": str(body["id"])} if isinstance(body, dict) and "id" in body else body


def trickle(environ: dict[str, Any], answer: bytes, seconds: float, wait: Callable[[float], bool]) -> None:
    """Send `answer` (a whole HTTP response) on the request's socket a byte every `seconds` (the
    rest at once when `wait` says the hold was released), then shut the socket, so werkzeug writes
    nothing more; stops early when the client goes away."""
    sock = environ.get("werkzeug.socket")
    if sock is None:
        raise ConnectionAbortedError("trickling an answer needs a real server connection")
    try:
        for sent in range(len(answer)):
            if sent and wait(seconds):
                sock.sendall(answer[sent:])
                break
            sock.sendall(answer[sent:sent + 1])
    except OSError:
        pass  # the client cut it off
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def drop_connection(environ: dict[str, Any]) -> None:
    """Cut the request's connection so the client gets no answer; ConnectionAbortedError without a real socket."""
    # Shutting the socket makes werkzeug's first write fail with BrokenPipeError, which it
    # treats as a client disconnect: no response bytes, no traceback, the client sees EOF.
    sock = environ.get("werkzeug.socket")
    if sock is None:
        raise ConnectionAbortedError("dropping a connection needs a real server connection")
    sock.shutdown(socket.SHUT_RDWR)
