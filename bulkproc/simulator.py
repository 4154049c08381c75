"""A local stand-in for the Hospital Directory API, with its limits, delays and scripted faults."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import signal
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server, select_address_family

CAPACITY = 10_000
BATCH_CAP = 20
DOCUMENTED_LIMITS = {"create": 30, "health": 100, "other": 50}
OPS = frozenset(
    {"health", "list", "create", "get", "update", "delete", "list_batch", "activate", "delete_batch"}
)
PRE_FAULTS = frozenset({"error_500", "html_502", "rate_limit", "reject_422", "hang"})
POST_FAULTS = frozenset({"store_then_500", "store_then_drop", "store_then_hang"})
LATENCY_FAULTS = frozenset({"slow"})
FAULT_KINDS = PRE_FAULTS | POST_FAULTS | LATENCY_FAULTS
REQUEST_STATS = {"create": "create_requests", "activate": "activate_requests", "list_batch": "batch_reads"}
STAT_KEYS = (
    "create_requests", "created", "rate_limited", "activations",
    "activate_requests", "batch_reads", "faults_fired", "max_in_flight",
)
_log = logging.getLogger(__name__)

BAD_GATEWAY_HTML = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    "<body><h1>Bad Gateway</h1><p>The service is waking up or overloaded. "
    "Please try again.</p></body></html>\n"
)


class Invalid(Exception):
    """A request failed validation; carries FastAPI-style error entries."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


@dataclass
class _Fault:
    kind: str
    times: int
    after: int
    seconds: float | None = None


def _error(kind: str, loc: list[Any], msg: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


def _detail(message: str, status: int) -> Response:
    response = jsonify(detail=message)
    response.status_code = status
    return response


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """Decode a request body into a JSON object, or raise Invalid like FastAPI does."""
    if not raw.strip():
        raise Invalid([_error("missing", ["body"], "Field required", None)])
    try:
        body = json.loads(raw)
    except ValueError as exc:
        position = getattr(exc, "pos", 0)
        raise Invalid([{**_error("json_invalid", ["body", position], "JSON decode error", {}),
                        "ctx": {"error": getattr(exc, "msg", str(exc))}}]) from None
    if not isinstance(body, dict):
        raise Invalid([_error("model_attributes_type", ["body"],
                              "Input should be a valid dictionary or object to extract fields from", body)])
    return body


def _text_errors(body: dict[str, Any], field: str, required: bool) -> list[dict[str, Any]]:
    loc = ["body", field]
    if field not in body:
        return [_error("missing", loc, "Field required", body)] if required else []
    value = body[field]
    if value is None and not required:
        return []
    if not isinstance(value, str):
        return [_error("string_type", loc, "Input should be a valid string", value)]
    if not value.strip():
        message = f"Value error, {field.capitalize()} cannot be empty or whitespace"
        return [{**_error("value_error", loc, message, value), "ctx": {"error": {}}}]
    return []


def normalize_uuid(value: Any) -> str | None:
    """Return the canonical text of a UUID, or None when value is not one."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        return None


def _batch_id_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("creation_batch_id")
    if value is None or normalize_uuid(value) is not None:
        return []
    return [_error("uuid_parsing", ["body", "creation_batch_id"], "Input should be a valid UUID", value)]


def parse_create(raw: bytes) -> dict[str, Any]:
    """Validate a create body into name, address, phone, creation_batch_id, or raise Invalid."""
    body = parse_json_body(raw)
    errors = (_text_errors(body, "name", True) + _text_errors(body, "address", True)
              + _phone_errors(body) + _batch_id_errors(body))
    if errors:
        raise Invalid(errors)
    return {"name": body["name"], "address": body["address"], "phone": body.get("phone"),
            "creation_batch_id": normalize_uuid(body.get("creation_batch_id"))}


def _phone_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("phone")
    if value is None or isinstance(value, str):
        return []
    return [_error("string_type", ["body", "phone"], "Input should be a valid string", value)]


def parse_update(raw: bytes) -> dict[str, Any]:
    """Validate an update body into the fields it sets, or raise Invalid."""
    body = parse_json_body(raw)
    errors = _text_errors(body, "name", False) + _text_errors(body, "address", False) + _phone_errors(body)
    if errors:
        raise Invalid(errors)
    changes = {key: body[key] for key in ("name", "address") if body.get(key) is not None}
    if "phone" in body:
        changes["phone"] = body["phone"]
    return changes


def parse_hospital_id(raw: str) -> int:
    """Turn a path segment into a hospital id, or raise Invalid."""
    try:
        return int(raw)
    except ValueError:
        raise Invalid([_error("int_parsing", ["path", "hospital_id"],
                              "Input should be a valid integer, unable to parse string as an integer",
                              raw)]) from None


def parse_batch_id(raw: str) -> str:
    """Turn a path segment into a canonical batch id, or raise Invalid."""
    batch_id = normalize_uuid(raw)
    if batch_id is None:
        raise Invalid([_error("uuid_parsing", ["path", "batch_id"], "Input should be a valid UUID", raw)])
    return batch_id


class Simulator:
    """The Hospital Directory API in memory: same endpoints, bodies, limits and delays, plus faults."""

    def __init__(self, delay: float = 5.0, create_limit: int = 30, window: float = 60.0,
                 other_limit: int = 50, health_limit: int = 100, cold_start: float = 0.0,
                 idle_after: float = 900.0, hang_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, capacity: int = CAPACITY) -> None:
        self.delay, self.window, self.capacity = delay, window, capacity
        self.limits = {"create": create_limit, "health": health_limit, "other": other_limit}
        self.cold_start, self.idle_after, self.hang_seconds = cold_start, idle_after, hang_seconds
        self.clock, self.sleep = clock, sleep
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._lock = threading.Lock()
        self._store: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._next_id = 1
        self._windows: dict[tuple[str | None, str], tuple[float, int]] = {}
        self._faults: dict[str, list[_Fault]] = {op: [] for op in OPS}
        self._hangs: set[threading.Event] = set()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._last_seen: float | None = None
        self._waking: threading.Event | None = None
        self.app = self._build_app()

    # --- public controls -------------------------------------------------

    def add_fault(self, op: str, kind: str, times: int = 1, after: int = 0,
                  seconds: float | None = None) -> None:
        """Make the next `times` requests of `op`, after skipping `after`, behave as `kind`; ValueError if unknown.

        `seconds` is how long a "slow" request takes (required for it) or how long a "hang" or
        "store_then_hang" is held (default: hang_seconds); other kinds ignore it.
        """
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; expected one of {sorted(OPS)}")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if kind in LATENCY_FAULTS and seconds is None:
            raise ValueError(f"a {kind!r} fault needs seconds=")
        if seconds is not None and seconds < 0:
            raise ValueError(f"seconds must not be negative, got {seconds!r}")
        with self._lock:
            self._faults[op].append(_Fault(kind, times, after, seconds))

    def clear_faults(self) -> None:
        """Forget every scripted fault not yet fired."""
        with self._lock:
            for faults in self._faults.values():
                faults.clear()

    def hospitals(self, batch_id: str | None = None) -> list[dict[str, Any]]:
        """Return copies of the stored hospitals, oldest first, optionally of one batch only."""
        wanted = None if batch_id is None else (normalize_uuid(batch_id) or batch_id)
        with self._lock:
            return [dict(h) for h in self._store.values()
                    if wanted is None or h["creation_batch_id"] == wanted]

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being handled; False if `timeout` seconds passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def release_hangs(self) -> None:
        """End every hang and store_then_hang now (a hang drops its connection, a store_then_hang answers)."""
        with self._lock:
            for gate in self._hangs:
                gate.set()

    def reset(self) -> None:
        """Empty the store, counters, faults, rate windows and wake state; ids keep increasing."""
        self.release_hangs()
        with self._lock:
            self._store.clear()
            self._windows.clear()
            for faults in self._faults.values():
                faults.clear()
            self.stats.update(dict.fromkeys(STAT_KEYS, 0))
            self._last_seen = None

    # --- request plumbing ------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask(__name__)
        app.json.sort_keys = False  # type: ignore[attr-defined]
        app.before_request(self._arrive)
        app.teardown_request(self._leave)
        app.register_error_handler(Invalid, lambda exc: (jsonify(detail=exc.errors), 422))
        app.register_error_handler(HTTPException, self._http_error)
        routes = [
            ("/", "GET", "health", self._health), ("/hospitals/", "GET", "list", self._list),
            ("/hospitals/", "POST", "create", self._create),
            ("/hospitals/<hospital_id>", "GET", "get", self._get),
            ("/hospitals/<hospital_id>", "PUT", "update", self._update),
            ("/hospitals/<hospital_id>", "DELETE", "delete", self._delete),
            ("/hospitals/batch/<batch_id>", "GET", "list_batch", self._list_batch),
            ("/hospitals/batch/<batch_id>/activate", "PATCH", "activate", self._activate),
            ("/hospitals/batch/<batch_id>", "DELETE", "delete_batch", self._delete_batch),
        ]
        for rule, method, op, view in routes:
            app.add_url_rule(rule, op, self._endpoint(op, view), methods=[method],
                             provide_automatic_options=False)
        # Starlette answers a missing trailing slash with 307, which keeps the method and body.
        app.add_url_rule("/hospitals", "add_slash", self._add_slash,
                         methods=["GET", "POST", "PUT", "PATCH", "DELETE"], provide_automatic_options=False)
        return app

    def _http_error(self, exc: HTTPException) -> Response:
        response = _detail(exc.name, exc.code or 500)
        for key, value in exc.get_headers():
            if key == "Allow":
                response.headers[key] = value
        return response

    def _add_slash(self) -> Response:
        query = request.query_string.decode()
        location = request.host_url + "hospitals/" + (f"?{query}" if query else "")
        return Response(status=307, headers={"Location": location})

    def _arrive(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self._in_flight)
        self._wait_until_awake()

    def _leave(self, _exc: BaseException | None) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def _wait_until_awake(self) -> None:
        if self.cold_start <= 0:
            return
        with self._lock:
            now = self.clock()
            idle = self._last_seen is None or now - self._last_seen >= self.idle_after
            waking, leader = self._waking, False
            if waking is None and idle:
                waking, leader = threading.Event(), True
                self._waking = waking
            self._last_seen = now
        if waking is None:
            return
        if not leader:
            waking.wait()
            return
        self.sleep(self.cold_start)
        with self._lock:
            self._waking, self._last_seen = None, self.clock()
        waking.set()

    def _endpoint(self, op: str, view: Callable[..., Response]) -> Callable[..., Response]:
        def handle(**kwargs: str) -> Response:
            if op in REQUEST_STATS:
                self._bump(REQUEST_STATS[op])
            if not self._admit(op):
                return self._too_many(op)
            fault = self._take_fault(op)
            kind = None if fault is None else fault.kind
            if kind in PRE_FAULTS:
                return self._pre_fault(op, fault)
            if kind in LATENCY_FAULTS:
                self._take_time(op, fault.seconds)
            response = view(**kwargs)
            if kind in POST_FAULTS and response.status_code < 300:
                return self._post_fault(fault, response)
            return response
        return handle

    def _take_time(self, op: str, seconds: float | None) -> None:
        # A creation spends its time after the batch cap check, like the upstream, so it takes the
        # latency in place of its delay; the other operations have no delay and wait before acting.
        if op == "create":
            g.latency = seconds
        else:
            self.sleep(seconds or 0.0)

    def _creation_delay(self) -> float:
        latency = g.pop("latency", None)
        return self.delay if latency is None else latency

    def _bump(self, key: str, by: int = 1) -> None:
        with self._lock:
            self.stats[key] += by

    def _limit(self, op: str) -> tuple[str, int]:
        bucket = op if op in ("create", "health") else "other"
        return bucket, self.limits[bucket]

    def _admit(self, op: str) -> bool:
        # Like slowapi's per-route decorators: each endpoint has its own counter per client IP.
        _bucket, limit = self._limit(op)
        if limit <= 0:
            return True
        key = (request.remote_addr, op)
        with self._lock:
            now = self.clock()
            start, count = self._windows.get(key, (now, 0))
            if now - start >= self.window:
                start, count = now, 0
            if count >= limit:
                return False
            self._windows[key] = (start, count + 1)
            return True

    def _too_many(self, op: str) -> Response:
        bucket, limit = self._limit(op)
        limit = limit if limit > 0 else DOCUMENTED_LIMITS[bucket]
        period = "1 minute" if self.window == 60 else f"{self.window:g} seconds"
        self._bump("rate_limited")
        response = jsonify(error=f"Rate limit exceeded: {limit} per {period}")
        response.status_code = 429
        return response

    def _take_fault(self, op: str) -> _Fault | None:
        with self._lock:
            fired = None
            for fault in self._faults[op]:
                if fault.after > 0:
                    fault.after -= 1
                elif fired is None:
                    fired, fault.times = fault, fault.times - 1
            self._faults[op] = [f for f in self._faults[op] if f.times > 0]
            if fired is None:
                return None
            self.stats["faults_fired"] += 1
            return fired

    def _pre_fault(self, op: str, fault: _Fault) -> Response:
        kind = fault.kind
        if kind == "hang":
            # Held without storing anything, then cut: the client can only see a timeout or a drop.
            self._hang(fault.seconds)
            self._drop_connection()
            return _detail("Internal Server Error", 500)
        if kind == "rate_limit":
            return self._too_many(op)
        if kind == "html_502":
            return Response(BAD_GATEWAY_HTML, status=502, content_type="text/html; charset=utf-8")
        if kind == "reject_422":
            # Stands for a value the upstream's validation refuses that our CSV rules let through.
            response = jsonify(detail=[_error("value_error", ["body", "name"], "Value error, refused by the directory", None)])
            response.status_code = 422
            return response
        return _detail("Internal Server Error", 500)

    def _post_fault(self, fault: _Fault, response: Response) -> Response:
        if fault.kind == "store_then_500":
            return _detail("Internal Server Error", 500)
        if fault.kind == "store_then_drop":
            self._drop_connection()
        else:
            self._hang(fault.seconds)
        return response

    def _drop_connection(self) -> None:
        # Shutting the socket makes werkzeug's first write fail with BrokenPipeError, which it
        # treats as a client disconnect: no response bytes, no traceback, the client sees EOF.
        sock = request.environ.get("werkzeug.socket")
        if sock is None:
            raise ConnectionAbortedError("store_then_drop needs a real server connection")
        sock.shutdown(socket.SHUT_RDWR)

    def _hang(self, seconds: float | None) -> None:
        # A real wait, not the injected sleep, so release_hangs() can end it at shutdown.
        gate = threading.Event()
        with self._lock:
            self._hangs.add(gate)
        gate.wait(self.hang_seconds if seconds is None else seconds)
        with self._lock:
            self._hangs.discard(gate)

    # --- store -----------------------------------------------------------

    def _insert(self, fields: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            hospital = {"id": self._next_id, **fields, "active": fields["creation_batch_id"] is None,
                        "created_at": datetime.now().isoformat()}
            self._next_id += 1
            self._store[hospital["id"]] = hospital
            while len(self._store) > self.capacity:
                self._store.popitem(last=False)
            self.stats["created"] += 1
            return dict(hospital)

    def _batch(self, batch_id: str) -> list[dict[str, Any]]:
        return [h for h in self._store.values() if h["creation_batch_id"] == batch_id]

    # --- views -----------------------------------------------------------

    def _health(self) -> Response:
        return jsonify(status="OK")

    def _list(self) -> Response:
        return jsonify(self.hospitals())

    def _create(self) -> Response:
        fields = parse_create(request.get_data())
        batch_id = fields["creation_batch_id"]
        if batch_id is not None:
            with self._lock:
                full = len(self._batch(batch_id)) >= BATCH_CAP
            if full:
                return _detail(f"Batch cannot exceed {BATCH_CAP} hospitals", 400)
        # Like the upstream, the cap is checked before the delay and not again, so racing creates can pass it.
        self.sleep(self._creation_delay())
        return jsonify(self._insert(fields))

    def _get(self, hospital_id: str) -> Response:
        wanted = parse_hospital_id(hospital_id)
        with self._lock:
            hospital = self._store.get(wanted)
            found = None if hospital is None else dict(hospital)
        return _detail("Hospital not found", 404) if found is None else jsonify(found)

    def _update(self, hospital_id: str) -> Response:
        wanted = parse_hospital_id(hospital_id)
        changes = parse_update(request.get_data())
        with self._lock:
            hospital = self._store.get(wanted)
            if hospital is not None:
                hospital.update(changes)
                hospital = dict(hospital)
        return _detail("Hospital not found", 404) if hospital is None else jsonify(hospital)

    def _delete(self, hospital_id: str) -> Response:
        wanted = parse_hospital_id(hospital_id)
        with self._lock:
            removed = self._store.pop(wanted, None)
        return _detail("Hospital not found", 404) if removed is None else Response(status=204)

    def _list_batch(self, batch_id: str) -> Response:
        wanted = parse_batch_id(batch_id)
        found = self.hospitals(wanted)
        if not found:
            return _detail("No hospitals found with the specified batch ID", 404)
        return jsonify(found)

    def _activate(self, batch_id: str) -> Response:
        wanted = parse_batch_id(batch_id)
        with self._lock:
            members = self._batch(wanted)
            if not members:
                return _detail("No hospitals found with the specified batch ID", 404)
            if any(h["active"] for h in members):
                return _detail("Cannot activate batch: one or more hospitals in the batch are already active", 400)
            for hospital in members:
                hospital["active"] = True
            self.stats["activations"] += 1
        return jsonify(activated_count=len(members),
                       message=f"Successfully activated {len(members)} hospitals in batch {wanted}")

    def _delete_batch(self, batch_id: str) -> Response:
        wanted = parse_batch_id(batch_id)
        with self._lock:
            members = self._batch(wanted)
            for hospital in members:
                del self._store[hospital["id"]]
        if not members:
            return _detail("No hospitals found with the specified batch ID", 404)
        return jsonify(deleted_count=len(members),
                       message=f"Successfully deleted {len(members)} hospitals from batch {wanted}")


def create_simulator(**kwargs: Any) -> Simulator:
    """Build a Simulator; keyword arguments are those of Simulator."""
    return Simulator(**kwargs)


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
        server.app = self._count_request
        # One lock orders every transition (refuse, accept, stop) and the request countdown.
        self._lock = threading.RLock()
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
        """Close the listening socket now so new connections are refused (in-flight requests finish); RuntimeError after stop()."""
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


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bulkproc.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on; 0 picks a free one")
    parser.add_argument("--delay", type=float, default=5.0, help="seconds each creation takes")
    parser.add_argument("--create-limit", type=int, default=30, help="creations per window; 0 = no limit")
    parser.add_argument("--other-limit", type=int, default=50)
    parser.add_argument("--health-limit", type=int, default=100)
    parser.add_argument("--window", type=float, default=60.0, help="rate-limit window in seconds")
    parser.add_argument("--cold-start", type=float, default=0.0, help="seconds a sleeping instance takes to wake")
    parser.add_argument("--idle-after", type=float, default=900.0, help="idle seconds before it sleeps")
    parser.add_argument("--refuse-for", type=float, default=0.0, metavar="SECONDS",
                        help="refuse connections for this long (an outage), once")
    parser.add_argument("--refuse-after", type=int, default=0, metavar="REQUESTS",
                        help="start that outage when this many requests have arrived (0 = at start-up)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _log_to_stdout() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    _log.addHandler(handler)
    _log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Serve a simulator in the foreground until Ctrl-C or SIGTERM."""
    args = _parse_args(argv)
    sim = Simulator(delay=args.delay, create_limit=args.create_limit, window=args.window,
                    other_limit=args.other_limit, health_limit=args.health_limit,
                    cold_start=args.cold_start, idle_after=args.idle_after)
    # SIGINT is set explicitly because a shell's background job starts with it ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    _log_to_stdout()
    try:
        with serve(sim, args.host, args.port, args.verbose) as served:
            print(f"Hospital Directory simulator listening on {served.url}", flush=True)
            if args.refuse_for > 0:
                served.refuse_connections(args.refuse_for, after_requests=args.refuse_after)
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
