"""How soon a batch's or an import's webhook reaches the receiver after its final state, and how
long a delivery answered 500 waits before it is tried again.

Setup: the service under gunicorn (2 workers, as the harness starts it) against the simulator
(0.05 s per creation, no create limit on either side), with BULKPROC_WEBHOOK_URL pointing at a
receiver on 127.0.0.1 run in a process of its own (so the simulator's threads in this one do not
delay its clock readings). The receiver notes the wall time each POST's headers arrive, verifies
every signature with the `standardwebhooks` package, and answers 204 (or 500 when told to).

1. Delivery latency: UPLOADS sync uploads of ROWS rows one after another, then IMPORTS imports of
   IMPORT_ROWS rows (two batches' worth each). Latency = arrival at the receiver minus the final
   state's `updated_at` in the delivered document. That stamp is taken by the service inside the
   transaction that writes the final state and the event (the event's own `timestamp` is read a
   few µs later in it), from the host's wall clock, which the receiver reads too: so this is the
   whole path, commit, wake, claim, signing and POST, with no clock skew. The moment the client
   sees the upload's answer is printed beside it but is not the reference: the answer is sent after
   the same commit, so the two race (a negative figure: the webhook came first), and for an import
   the client only polls.
   References: the Deliverer's poll interval (what bounds the latency if only polling found the
   event) and one status read round trip (GET /hospitals/bulk/{id} of a final batch, client-side).
   The deliverer of the process that writes a final state is woken by that transaction's commit
   (store.on_announce), so the latency should be a few status reads, not the poll interval.
2. A first delivery answered 500: the time from that attempt's arrival to the retry's (same
   webhook-id), against RetryPolicy's first backoff step (the spec says "from seconds"; the code's
   first step is 5 s).

Run: .venv/bin/python bench/webhook_latency.py
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import re
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from _harness import (
    Service,
    free_port,
    header,
    hospitals_csv,
    line,
    median,
    percentile,
    start_import,
    upload,
    verdict,
    wait_until_final,
)
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bulkproc.simulator import create_simulator, serve
from bulkproc.work.webhooks import RetryPolicy

SECRET = "whsec_YmVuY2ggd2ViaG9vayBzZWNyZXQsIDMyIGJ5dGVzIQ=="
DELAY = 0.05
UPLOADS = 40
ROWS = 2
IMPORTS = 2
IMPORT_ROWS = 25  # more than one batch (BULKPROC_MAX_ROWS 20): two parts
POLL_SECONDS = 2.0  # runtime.py's default WEBHOOK_POLL_SECONDS (not an environment variable)
FIRST_RETRY = RetryPolicy().delays[0]
WORKERS = 2
RETRY_TOLERANCE = 0.10  # the retry lands within 10 % of the first backoff step


# -- the receiver, in a process of its own ----------------------------------------------------

def _receive(port: int, secret: str, fail_next, arrivals, ready) -> None:
    verifier = Webhook(secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            arrived = time.time()  # the headers are in; the body follows
            body = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                verifier.verify(body, dict(self.headers.items()))
                verified = True
            except WebhookVerificationError:
                verified = False
            with fail_next.get_lock():
                failing, fail_next.value = fail_next.value > 0, max(0, fail_next.value - 1)
            code = 500 if failing or not verified else 204
            payload = json.loads(body)
            arrivals.put({"id": self.headers["webhook-id"], "arrived": arrived, "code": code,
                          "verified": verified, "type": payload["type"], "timestamp": payload["timestamp"],
                          "subject": payload["data"].get("batch_id") or payload["data"].get("import_id"),
                          "status": payload["data"]["status"], "updated_at": payload["data"]["updated_at"]})
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ready.set()
    server.serve_forever()


class Receiver:
    """The receiver process; `arrivals()` drains what it has noted so far."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.fail_next = context.Value("i", 0)
        self._queue = context.Queue()
        ready = context.Event()
        self._proc = context.Process(target=_receive, args=(self.port, SECRET, self.fail_next, self._queue, ready),
                                     daemon=True)
        self._proc.start()
        if not ready.wait(10):
            raise RuntimeError("the webhook receiver did not start")
        self.seen: list[dict] = []

    def wait_for(self, condition, timeout: float) -> list[dict]:
        """Collect arrivals until `condition(seen)` holds; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition(self.seen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"webhooks: {len(self.seen)} arrived, the condition still false")
            try:
                self.seen.append(self._queue.get(timeout=min(left, 0.5)))
            except queue.Empty:
                continue
        return self.seen

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.join(5)


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def delivered(subject: str):
    return lambda seen: any(a["subject"] == subject and a["code"] == 204 for a in seen)


# -- the measurements ----------------------------------------------------------------------------

def batches(service: Service, receiver: Receiver) -> tuple[list[float], list[float], list[str]]:
    """UPLOADS sync uploads one after another; ms from updated_at and from the answer to the delivery."""
    after_state, after_answer, ids = [], [], []
    with requests.Session() as http:
        for n in range(UPLOADS):
            response = upload(http, service.url, hospitals_csv(ROWS, f"Hook{n}x"))
            answered = time.time()
            document = response.json()
            if response.status_code != 200 or document["status"] != "completed":
                raise SystemExit(f"upload {n}: HTTP {response.status_code} {response.text[:300]}")
            seen = receiver.wait_for(delivered(document["batch_id"]), timeout=30)
            arrival = next(a for a in seen if a["subject"] == document["batch_id"])
            after_state.append((arrival["arrived"] - epoch(document["updated_at"])) * 1000)
            after_answer.append((arrival["arrived"] - answered) * 1000)
            ids.append(document["batch_id"])
    return after_state, after_answer, ids


def imports(service: Service, receiver: Receiver) -> list[tuple[float, dict]]:
    """IMPORTS imports one after another; (ms from the import's updated_at to the delivery, its document)."""
    found = []
    with requests.Session() as http:
        for n in range(IMPORTS):
            url = start_import(http, service.url, IMPORT_ROWS, prefix=f"HookImport{n}x")
            document = wait_until_final(http, url, time.monotonic() + 120)
            seen = receiver.wait_for(delivered(document["import_id"]), timeout=30)
            arrival = next(a for a in seen if a["subject"] == document["import_id"])
            found.append(((arrival["arrived"] - epoch(arrival["updated_at"])) * 1000, document))
    return found


def status_round_trip(service: Service, batch_id: str, reads: int = 20) -> float:
    """Median client-side ms of GET /hospitals/bulk/{id} of a final batch."""
    times = []
    with requests.Session() as http:
        for _ in range(reads):
            started = time.perf_counter()
            http.get(f"{service.url}/hospitals/bulk/{batch_id}", timeout=10).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return median(times)


def retried(service: Service, receiver: Receiver) -> tuple[float, list[dict]]:
    """One upload whose first delivery is answered 500: seconds from that attempt to the retry, the attempts."""
    with receiver.fail_next.get_lock():
        receiver.fail_next.value = 1
    with requests.Session() as http:
        document = upload(http, service.url, hospitals_csv(ROWS, "HookRetryx")).json()
    seen = receiver.wait_for(delivered(document["batch_id"]), timeout=FIRST_RETRY * 3 + 30)
    attempts = [a for a in seen if a["subject"] == document["batch_id"]]
    return attempts[-1]["arrived"] - attempts[0]["arrived"], attempts


def deliveries_metric(service: Service, receiver: Receiver, timeout: float = 10.0) -> str:
    """/metrics' delivery counts against the receiver's answers (a count follows the answer by a moment)."""
    expected = {"delivered": sum(a["code"] == 204 for a in receiver.seen),
                "failed": sum(a["code"] == 500 for a in receiver.seen)}
    deadline = time.monotonic() + timeout
    while True:
        text = requests.get(service.url + "/metrics", timeout=10).text
        counted = {result: int(float(value)) for result, value in
                   re.findall(r'^bulkproc_webhook_deliveries_total\{result="(\w+)"\} (\S+)$', text, re.MULTILINE)}
        if all(counted.get(k, 0) == n for k, n in expected.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    shown = ", ".join(f"{k} {counted.get(k, 0)}" for k in sorted(set(counted) | set(expected)))
    answers = ", ".join(f"{k} {n}" for k, n in expected.items())
    return (f"bulkproc_webhook_deliveries_total: {shown} (the receiver's answers: {answers})  "
            f"{verdict(all(counted.get(k, 0) == n for k, n in expected.items()))}")


def report(after_state, after_answer, imported, status_ms, retry_s, attempts, receiver, service) -> None:
    p50, p95, worst = median(after_state), percentile(after_state, 95), max(after_state)
    line("batches: final state -> arrival", f"{len(after_state)} deliveries, median {p50:.1f} / p95 {p95:.1f} / "
                                             f"max {worst:.1f} ms (from the document's updated_at)")
    line("batches: answer seen -> arrival", f"median {median(after_answer):.1f} / p95 "
                                            f"{percentile(after_answer, 95):.1f} / min {min(after_answer):.1f} ms "
                                            "(negative: the webhook came before the HTTP answer)")
    for ms, document in imported:
        line("import: final state -> arrival", f"{ms:.1f} ms ({document['status']}, "
                                               f"{document['total_hospitals']} rows in {len(document['batches'])} "
                                               "batches)")
    everything = after_state + [ms for ms, _ in imported]
    line("vs the poll interval", f"median {median(everything):.1f} ms / {POLL_SECONDS * 1000:.0f} ms = "
                                 f"{median(everything) / (POLL_SECONDS * 1000):.4f}x, max "
                                 f"{max(everything) / (POLL_SECONDS * 1000):.4f}x  (woken by the commit, not the "
                                 f"poll: target max < 0.25x)  {verdict(max(everything) < POLL_SECONDS * 250)}")
    line("status read round trip", f"median {status_ms:.2f} ms (20 GETs of a final batch)")
    line("vs one status read", f"median delivery {median(everything) / status_ms:.1f}x one status read")
    seen = receiver.seen
    line("signatures (standardwebhooks)", f"{sum(a['verified'] for a in seen)} of {len(seen)} verified  "
                                          f"{verdict(all(a['verified'] for a in seen))}")
    types = {t: sum(a["type"] == t for a in seen) for t in sorted({a["type"] for a in seen})}
    line("events by type", ", ".join(f"{t} {n}" for t, n in types.items()))
    codes = [a["code"] for a in attempts]
    same_id = len({a["id"] for a in attempts}) == 1
    ratio = retry_s / FIRST_RETRY
    line("retry after a 500", f"answers {codes}, same webhook-id: {same_id}; {retry_s:.3f} s after the first try")
    line("retry vs the first backoff step", f"{retry_s:.3f} s / {FIRST_RETRY:g} s = {ratio:.3f}x  (target "
                                            f"1.00 +- {RETRY_TOLERANCE:.2f})  "
                                            f"{verdict(same_id and codes == [500, 204] and abs(ratio - 1) <= RETRY_TOLERANCE)}")
    line("/metrics", deliveries_metric(service, receiver))


def main() -> int:
    header(f"webhook_latency: {UPLOADS} {ROWS}-row sync uploads and {IMPORTS} {IMPORT_ROWS}-row imports, "
           f"simulator delay {DELAY:g} s, no rate limits, {WORKERS} gunicorn workers, receiver on loopback "
           f"(own process), deliverer poll {POLL_SECONDS:g} s")
    up = serve(create_simulator(delay=DELAY, create_limit=0, other_limit=0))
    receiver = Receiver()
    service = Service(up.url, workers=WORKERS, env={"BULKPROC_CREATE_RATE": "0", "BULKPROC_READ_RATE": "0",
                                                    "BULKPROC_WEBHOOK_URL": receiver.url,
                                                    "BULKPROC_WEBHOOK_SECRET": SECRET})
    try:
        with service:
            service.wait_healthy()
            started = time.monotonic()
            after_state, after_answer, ids = batches(service, receiver)
            line("uploads", f"{UPLOADS} completed in {time.monotonic() - started:.1f} s")
            started = time.monotonic()
            imported = imports(service, receiver)
            line("imports", f"{IMPORTS} completed in {time.monotonic() - started:.1f} s")
            status_ms = status_round_trip(service, ids[-1])
            retry_s, attempts = retried(service, receiver)
            report(after_state, after_answer, imported, status_ms, retry_s, attempts, receiver, service)
    finally:
        receiver.stop()
        up.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
