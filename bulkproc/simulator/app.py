"""The simulator's Flask app and state: the Hospital Directory API in memory, with its delays and faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from .directory import BATCH_NOT_FOUND, CAPACITY, AlreadyActive, Directory, NotFound
from .faults import (
    BAD_GATEWAY_HTML,
    LATENCY_FAULTS,
    POST_FAULTS,
    PRE_FAULTS,
    TRICKLE_FAULTS,
    Fault,
    FaultScript,
    Holds,
    drop_connection,
    trickle,
    with_string_ids,
)
from .limits import RateLimits
from .rules import (
    BATCH_CAP,
    OPS,
    Invalid,
    error_entry,
    normalize_uuid,
    parse_batch_id,
    parse_create,
    parse_hospital_id,
    parse_update,
)

REQUEST_STATS = {"create": "create_requests", "activate": "activate_requests", "list_batch": "batch_reads",
                 "list": "directory_reads"}
STAT_KEYS = (
    "create_requests", "created", "rate_limited", "activations",
    "activate_requests", "batch_reads", "directory_reads", "faults_fired", "max_in_flight",
)


def _detail(message: str, status: int) -> Response:
    response = jsonify(detail=message)
    response.status_code = status
    return response


class Simulator:
    """The Hospital Directory API in memory: same endpoints, bodies, limits and delays, plus faults."""

    def __init__(self, delay: float = 5.0, create_limit: int = 30, window: float = 60.0,
                 other_limit: int = 50, health_limit: int = 100, cold_start: float = 0.0,
                 idle_after: float = 900.0, hang_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, capacity: int = CAPACITY) -> None:
        self.delay = delay
        self.directory = Directory(capacity)
        self.rate_limits = RateLimits(create_limit, health_limit, other_limit, window, clock)
        self.cold_start, self.idle_after, self.hang_seconds = cold_start, idle_after, hang_seconds
        self.clock, self.sleep = clock, sleep
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._faults = FaultScript(OPS)
        self._holds = Holds()
        self._lock = threading.Lock()
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
        self._faults.add(op, kind, times, after, seconds)

    def clear_faults(self) -> None:
        """Forget every scripted fault not yet fired."""
        self._faults.clear()

    def hospitals(self, batch_id: str | None = None) -> list[dict[str, Any]]:
        """Return copies of the stored hospitals, oldest first, optionally of one batch only."""
        wanted = None if batch_id is None else (normalize_uuid(batch_id) or batch_id)
        return self.directory.hospitals(wanted)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being handled; False if `timeout` seconds passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def release_hangs(self) -> None:
        """End every hang and store_then_hang now (a hang drops its connection, a store_then_hang answers)."""
        self._holds.release_all()

    def reset(self) -> None:
        """Empty the store, counters, faults, rate windows and wake state; ids keep increasing."""
        self.release_hangs()
        self._faults.clear()
        self.rate_limits.reset()
        self.directory.clear()
        with self._lock:
            self.stats.update(dict.fromkeys(STAT_KEYS, 0))
            self._last_seen = None

    # --- request plumbing ------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask(__name__)
        app.json.sort_keys = False  # type: ignore[attr-defined]
        app.before_request(self._arrive)
        app.teardown_request(self._leave)
        app.register_error_handler(Invalid, lambda exc: (jsonify(detail=exc.errors), 422))
        app.register_error_handler(NotFound, lambda exc: _detail(str(exc), 404))
        app.register_error_handler(AlreadyActive, lambda exc: _detail(str(exc), 400))
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
            if not self.rate_limits.admit(request.remote_addr, op):
                return self._too_many(op)
            fault = self._take_fault(op)
            if fault is None:
                return view(**kwargs)
            if fault.kind in PRE_FAULTS:
                return self._pre_fault(op, fault)
            if fault.kind in LATENCY_FAULTS:
                self._take_time(op, fault.seconds)
            response = self._list_all() if fault.kind == "list_all" else view(**kwargs)
            if fault.kind in POST_FAULTS and response.status_code < 300:
                return self._post_fault(fault, response)
            return self._reshape(fault, response)
        return handle

    def _reshape(self, fault: Fault, response: Response) -> Response:
        """The answer as a wrong-shape or trickle fault sends it."""
        if fault.kind == "string_ids" and response.is_json:
            return jsonify(with_string_ids(response.get_json()))
        if fault.kind == "not_a_list" and response.is_json:
            return jsonify({"hospitals": response.get_json()})
        if fault.kind in TRICKLE_FAULTS:
            trickle(request.environ, _raw(response), fault.seconds or 0.0, self._holds.hold)
        return response

    def _bump(self, key: str, by: int = 1) -> None:
        with self._lock:
            self.stats[key] += by

    def _too_many(self, op: str) -> Response:
        self._bump("rate_limited")
        response = jsonify(error=self.rate_limits.refusal(op))
        response.status_code = 429
        return response

    # --- faults ----------------------------------------------------------

    def _take_fault(self, op: str) -> Fault | None:
        fault = self._faults.take(op)
        if fault is not None:
            self._bump("faults_fired")
        return fault

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

    def _pre_fault(self, op: str, fault: Fault) -> Response:
        if fault.kind == "hang":
            # Held without storing anything, then cut: the client can only see a timeout or a drop.
            self._hold(fault)
            drop_connection(request.environ)
            return _detail("Internal Server Error", 500)
        if fault.kind == "rate_limit":
            return self._too_many(op)
        if fault.kind == "error_body":
            # A 200 that is no activation: nothing was activated.
            return jsonify(error="Activation could not be completed; try again later")
        if fault.kind == "html_502":
            return Response(BAD_GATEWAY_HTML, status=502, content_type="text/html; charset=utf-8")
        if fault.kind == "reject_422":
            # Stands for a value the upstream's validation refuses that our CSV rules let through.
            entry = error_entry("value_error", ["body", "name"], "Value error, refused by the directory", None)
            response = jsonify(detail=[entry])
            response.status_code = 422
            return response
        return _detail("Internal Server Error", 500)

    def _post_fault(self, fault: Fault, response: Response) -> Response:
        if fault.kind == "store_then_500":
            return _detail("Internal Server Error", 500)
        if fault.kind == "store_then_drop":
            drop_connection(request.environ)
        else:
            self._hold(fault)
        return response

    def _hold(self, fault: Fault) -> None:
        self._holds.hold(self.hang_seconds if fault.seconds is None else fault.seconds)

    # --- views -----------------------------------------------------------

    def _health(self) -> Response:
        return jsonify(status="OK")

    def _list(self) -> Response:
        return jsonify(self.directory.hospitals())

    def _list_all(self) -> Response:
        """Every hospital of every batch, as a listing that ignored its batch filter would be."""
        found = self.directory.hospitals()
        return jsonify(found) if found else _detail(BATCH_NOT_FOUND, 404)

    def _create(self) -> Response:
        fields = parse_create(request.get_data())
        batch_id = fields["creation_batch_id"]
        if batch_id is not None and self.directory.batch_size(batch_id) >= BATCH_CAP:
            return _detail(f"Batch cannot exceed {BATCH_CAP} hospitals", 400)
        # Like the upstream, the cap is checked before the delay and not again, so racing creates can pass it.
        self.sleep(self._creation_delay())
        hospital = self.directory.insert(fields)
        self._bump("created")
        return jsonify(hospital)

    def _get(self, hospital_id: str) -> Response:
        return jsonify(self.directory.get(parse_hospital_id(hospital_id)))

    def _update(self, hospital_id: str) -> Response:
        wanted = parse_hospital_id(hospital_id)
        return jsonify(self.directory.update(wanted, parse_update(request.get_data())))

    def _delete(self, hospital_id: str) -> Response:
        self.directory.delete(parse_hospital_id(hospital_id))
        return Response(status=204)

    def _list_batch(self, batch_id: str) -> Response:
        found = self.directory.hospitals(parse_batch_id(batch_id))
        if not found:
            return _detail(BATCH_NOT_FOUND, 404)
        return jsonify(found)

    def _activate(self, batch_id: str) -> Response:
        wanted = parse_batch_id(batch_id)
        count = self.directory.activate(wanted)
        self._bump("activations")
        return jsonify(activated_count=count, message=f"Successfully activated {count} hospitals in batch {wanted}")

    def _delete_batch(self, batch_id: str) -> Response:
        wanted = parse_batch_id(batch_id)
        count = self.directory.delete_batch(wanted)
        return jsonify(deleted_count=count, message=f"Successfully deleted {count} hospitals from batch {wanted}")


def _raw(response: Response) -> bytes:
    """The whole HTTP/1.1 response as bytes on the wire, closing the connection after it."""
    body = response.get_data()
    headers = [(k, v) for k, v in response.headers.items() if k.lower() not in ("content-length", "connection")]
    headers += [("Content-Length", str(len(body))), ("Connection", "close")]
    head = [f"HTTP/1.1 {response.status}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def create_simulator(**kwargs: Any) -> Simulator:
    """Build a Simulator; keyword arguments are those of Simulator."""
    return Simulator(**kwargs)
