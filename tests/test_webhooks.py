"""Webhooks: final states announced to a receiver on loopback that verifies every signature with the
standardwebhooks package; retries with the same id, delivery after a restart, one delivery in
flight across instances, imports, 410, no redirects, the retry schedule and the settings."""

from __future__ import annotations

import base64
import io
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from bulkproc import config
from bulkproc.files.rules import HospitalRow
from bulkproc.store import Run, Store
from bulkproc.store.leases import new_token
from bulkproc.work.webhooks import Deliverer, RetryPolicy, announcement
from tests.support import FakeClock, hospitals_csv, metric, wait_until

SECRET = "whsec_" + base64.b64encode(b"a secret for the test receiver").decode()
FAST = RetryPolicy(delays=(0.05,), give_up_after=60.0)


class Receiver:
    """A webhook receiver on loopback: verifies each delivery, answers from a script (then 200),
    and holds the next `to_hold` requests until `release` is set."""

    def __init__(self, answers: tuple[int, ...] = (), location: str | None = None) -> None:
        self.answers, self.location = list(answers), location
        self.calls: list[dict] = []
        self.to_hold = 0
        self.release = threading.Event()
        self.in_flight = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, *_args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers["Content-Length"]))
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            self.in_flight += 1
            code = self.answers.pop(0) if self.answers else 200
            held, self.to_hold = self.to_hold > 0, max(0, self.to_hold - 1)
        if held:
            self.release.wait(30)
        payload = Webhook(SECRET).verify(body, headers)  # raises on a bad signature: no call recorded
        with self._lock:
            self.calls.append({"id": headers["webhook-id"], "payload": payload, "code": code})
            self.in_flight -= 1
        request.send_response(code)
        if self.location:
            request.send_header("Location", self.location)
        request.send_header("Content-Length", "0")
        request.end_headers()

    def answered(self, code: int = 200) -> list[dict]:
        with self._lock:
            return [c for c in self.calls if c["code"] == code]

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def start(*answers: int, location: str | None = None) -> Receiver:
        started.append(Receiver(answers, location))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


def hooked(make_app, receiver: Receiver, **overrides):
    return make_app(WEBHOOK_URL=receiver.url, WEBHOOK_SECRET=SECRET, WEBHOOK_RETRY_POLICY=FAST,
                    WEBHOOK_POLL_SECONDS=0.05, **overrides)


def upload(client, rows: int, path: str = "/hospitals/bulk"):
    return client.post(path, data={"file": (io.BytesIO(hospitals_csv(rows).encode()), "h.csv")})


def test_a_finished_batch_is_announced_and_a_500_is_tried_again_with_the_same_id(make_app, receivers):
    receiver = receivers(500)
    app = hooked(make_app, receiver)
    client = app.test_client()
    before = metric(client.get("/metrics").text, "bulkproc_webhook_deliveries_total", result="failed")
    batch = upload(client, 2).get_json()
    assert batch["status"] == "completed"

    delivered = wait_until(receiver.answered, timeout=10, what="the delivery after the 500")
    assert [c["id"] for c in receiver.calls] == [delivered[0]["id"]] * 2  # the 500, then the same id
    payload = delivered[0]["payload"]
    assert payload["type"] == "batch.finished" and payload["timestamp"].endswith("Z")
    assert payload["data"] == client.get(f"/hospitals/bulk/{batch['batch_id']}").get_json()
    store = app.extensions["bulkproc"].store
    [event] = wait_until(lambda: [e for e in store.webhook_events() if e["status"] == "delivered"], timeout=10,
                         what="the event settled")
    assert event["attempts"] == 2
    exposition = client.get("/metrics").text
    assert metric(exposition, "bulkproc_webhook_deliveries_total", result="failed") == before + 1
    assert metric(exposition, "bulkproc_webhook_deliveries_total", result="delivered") >= 1


def test_without_a_webhook_url_no_event_is_written(app, client):
    assert upload(client, 1).get_json()["status"] == "completed"
    assert app.extensions["bulkproc"].store.webhook_events() == []


def test_an_event_written_before_a_stop_is_delivered_after_the_restart(make_app, receivers):
    receiver = receivers(*[503] * 1000)  # refusing everything until after the restart
    first = hooked(make_app, receiver)
    batch_id = upload(first.test_client(), 1).get_json()["batch_id"]
    wait_until(lambda: receiver.calls, timeout=10, what="a refused attempt")
    first.extensions["bulkproc"].close()  # the service stops; the event stays in the store
    first.extensions["bulkproc"].store.close()
    receiver.answers.clear()

    second = hooked(make_app, receiver)
    delivered = wait_until(receiver.answered, timeout=10, what="the delivery by the restarted service")
    assert delivered[0]["id"] == receiver.calls[0]["id"]
    assert delivered[0]["payload"]["data"]["batch_id"] == batch_id
    store = second.extensions["bulkproc"].store
    wait_until(lambda: store.webhook_events()[0]["status"] == "delivered", timeout=10, what="the event settled")


def test_an_import_announces_import_finished(make_app, receivers):
    receiver = receivers()
    client = hooked(make_app, receiver, MAX_ROWS=2).test_client()
    import_id = upload(client, 3, "/hospitals/imports").get_json()["import_id"]
    calls = wait_until(lambda: [c for c in receiver.answered() if c["payload"]["type"] == "import.finished"],
                       timeout=20, what="import.finished")
    data = calls[0]["payload"]["data"]
    assert (data["import_id"], data["status"], data["processed_hospitals"]) == (import_id, "completed", 3)
    assert data["estimated_seconds_remaining"] is None
    batches = wait_until(lambda: [c for c in receiver.answered() if c["payload"]["type"] == "batch.finished"]
                         if len(receiver.calls) >= 3 else None, timeout=10, what="each batch's event")
    assert len(batches) == 2 and len({c["id"] for c in receiver.calls}) == 3


# -- the deliverer itself, driven one step at a time ------------------------------------------


def finished_batch(store: Store) -> str:
    """A batch finished (failed) by a run, as the runner ends one: its event written with it."""
    run = Run(str(uuid.uuid4()), new_token())
    store.insert_batch(run.id, [HospitalRow(1, "General", "1 Main St", None)], owner="test",
                       lease_until=store.now() + 60, token=run.token)
    assert store.start_run(run, store.now()) and store.finish_run(run, "failed", "it failed", store.now())
    return run.id


@pytest.fixture
def stores(tmp_path):
    """Stores on one SQLite file, as instances sharing a database, with webhooks on and a fake clock."""
    clock, made = FakeClock(), []

    def make() -> Store:
        made.append(Store(f"sqlite:///{tmp_path}/hooks.sqlite3", clock=clock))
        made[-1].announcement = announcement
        return made[-1]

    make.clock = clock
    yield make
    for store in made:
        store.close()


def deliverer(store: Store, url: str, **kwargs) -> Deliverer:
    return Deliverer(store, url, SECRET, policy=kwargs.pop("policy", FAST), start=False, **kwargs)


def test_two_instances_never_have_one_event_in_flight_at_once(stores, receivers):
    receiver = receivers()
    one, other = stores(), stores()
    finished_batch(one)
    first, second = deliverer(one, receiver.url), deliverer(other, receiver.url)
    receiver.to_hold = 1
    sending = threading.Thread(target=first.deliver_one)
    sending.start()
    try:
        wait_until(lambda: receiver.in_flight == 1, timeout=10, what="the first delivery to arrive")
        assert second.deliver_one() is False  # claimed by the first: not sent again meanwhile
        assert second.deliver_due() > 0
    finally:
        receiver.release.set()
        sending.join()
        first.close()
    assert second.deliver_one() is False and len(receiver.calls) == 1
    assert other.webhook_events()[0]["status"] == "delivered"
    second.close()


def test_a_delivery_whose_claim_lapsed_is_taken_over_and_its_outcome_not_recorded(stores, receivers):
    receiver = receivers(500)
    one, other = stores(), stores()
    finished_batch(one)
    first, second = deliverer(one, receiver.url, claim_seconds=5), deliverer(other, receiver.url)
    receiver.to_hold = 1
    sending = threading.Thread(target=first.deliver_one)
    sending.start()
    try:
        wait_until(lambda: receiver.in_flight == 1, timeout=10, what="the first delivery to arrive")
        stores.clock.advance(6)  # the first instance paused past its claim
        receiver.answers.clear()  # the second delivery is answered 200 at once
        assert second.deliver_one() is True
    finally:
        receiver.release.set()
        sending.join()
    [event] = other.webhook_events()
    # The first attempt's 500 came after the second's delivery: its claim was gone, nothing recorded.
    assert (event["status"], event["attempts"], event["last_error"]) == ("delivered", 1, None)
    first.close()
    second.close()


def test_a_410_stops_the_tries(stores, receivers):
    receiver = receivers(410)
    store = stores()
    finished_batch(store)
    hooks = deliverer(store, receiver.url)
    assert hooks.deliver_due() == hooks.poll  # tried once, then nothing is due ever again
    assert len(receiver.calls) == 1 and store.webhook_events()[0]["status"] == "gone"
    hooks.close()


def test_only_the_configured_url_is_called_no_redirect_followed(stores, receivers):
    elsewhere = receivers()
    receiver = receivers(307, location=elsewhere.url)
    store = stores()
    finished_batch(store)
    hooks = deliverer(store, receiver.url)
    assert hooks.deliver_one() is True
    assert elsewhere.calls == []
    [event] = store.webhook_events()
    assert (event["status"], event["last_error"]) == ("pending", "the receiver answered 307")
    hooks.close()


def test_an_event_too_old_for_another_try_is_given_up(stores, receivers):
    receiver = receivers(500)
    store = stores()
    finished_batch(store)
    stores.clock.advance(10)
    hooks = deliverer(store, receiver.url, policy=RetryPolicy(delays=(1,), give_up_after=10))
    assert hooks.deliver_one() is True and hooks.deliver_one() is False
    assert store.webhook_events()[0]["status"] == "given_up"
    hooks.close()


def test_the_retry_schedule_backs_off_from_seconds_to_hours_for_about_three_days():
    policy, age, delays = RetryPolicy(), 0.0, []
    while (delay := policy.next_delay(len(delays) + 1, age)) is not None:
        delays.append(delay)
        age += delay
    assert delays[0] == 5 and max(delays) == 12 * 3600 and delays == sorted(delays[:-1]) + delays[-1:]
    assert age == 3 * 86400  # the last try lands at three days, then none


def test_the_webhook_settings_are_checked_and_the_secret_never_shown():
    assert config.from_env({"BULKPROC_WEBHOOK_URL": "http://127.0.0.1:9/h",
                            "BULKPROC_WEBHOOK_SECRET": SECRET})["WEBHOOK_URL"] == "http://127.0.0.1:9/h"
    with pytest.raises(config.ConfigError, match="BULKPROC_WEBHOOK_SECRET is not"):
        config.from_env({"BULKPROC_WEBHOOK_URL": "http://127.0.0.1:9/h"})
    with pytest.raises(config.ConfigError, match=r"BULKPROC_WEBHOOK_SECRET \(18 characters\) is not valid") as refused:
        config.from_env({"BULKPROC_WEBHOOK_SECRET": "not-a-whsec-secret"})
    assert "not-a-whsec" not in str(refused.value)


def test_the_body_sent_is_the_one_signed(stores, receivers):
    receiver = receivers()
    store = stores()
    batch_id = finished_batch(store)
    hooks = deliverer(store, receiver.url)
    hooks.deliver_one()
    payload = receiver.calls[0]["payload"]
    assert payload == json.loads(store.webhook_events()[0]["body"])
    assert payload["data"]["batch_id"] == batch_id and payload["data"]["status"] == "failed"
    hooks.close()
