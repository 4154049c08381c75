"""The upstream is checked, not trusted (issue 13): a listing that ignores its filter, ids as strings,
an activation that answers 200 without activating, an answer that trickles in, and reads paced."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from bulkproc.errors import GaveUp, MaybeLanded
from bulkproc.simulator import create_simulator, serve
from bulkproc.upstream.client import DirectoryClient
from bulkproc.upstream.deadline import Watchdog
from tests.support import hospitals_csv, wait_until

FINAL = {"completed", "partially_failed", "failed", "cancelled", "interrupted", "rolled_back"}


def other_batch(upstream, count: int) -> tuple[str, list[int]]:
    """Hospitals of a batch that is not ours, created straight at the directory."""
    batch_id = str(uuid.uuid4())
    ids = [requests.post(f"{upstream.url}/hospitals/", timeout=5, json={
        "name": f"Theirs {n}", "address": f"{n} Elm St", "phone": None, "creation_batch_id": batch_id,
    }).json()["id"] for n in range(1, count + 1)]
    return batch_id, ids


def paired(document: dict, sim) -> bool:
    """Whether the batch's rows and its hospitals upstream pair one to one, every one active."""
    upstream = {h["id"]: h for h in sim.hospitals(document["batch_id"])}
    rows = [r["hospital_id"] for r in document["hospitals"]]
    return sorted(rows) == sorted(upstream) and all(h["active"] for h in upstream.values())


def test_a_listing_of_every_batch_deletes_nothing_and_our_batch_still_ends_right(make_app, serve_app, upstream,
                                                                               caplog):
    theirs, their_ids = other_batch(upstream, 5)
    service = serve_app(make_app())
    upstream.sim.add_fault("list_batch", "list_all", times=100)

    with caplog.at_level("WARNING", logger="bulkproc"):
        document = service.upload(hospitals_csv(3)).json()

    assert document["status"] == "completed" and document["batch_activated"], document
    assert [h["id"] for h in upstream.sim.hospitals(theirs)] == their_ids  # another batch's survive
    assert paired(document, upstream.sim)
    distrusted = [r for r in caplog.records if "not trusted" in r.getMessage()]
    assert len(distrusted) == 1 and document["batch_id"] in distrusted[0].getMessage()


def test_a_late_duplicate_is_left_alone_while_the_listing_is_not_trusted(make_app, serve_app, upstream):
    service = serve_app(make_app())
    upstream.sim.add_fault("create", "reject_422", after=1)
    first = service.upload(hospitals_csv(2)).json()
    other_batch(upstream, 1)
    upstream.sim.add_fault("list_batch", "list_all", times=100)

    document = service.post(f"/hospitals/bulk/{first['batch_id']}/resume").json()

    assert document["status"] == "completed", document
    assert len(upstream.sim.hospitals()) == 3  # ours two, theirs one: nothing deleted on a listing of all


def test_ids_as_json_strings_are_ours_and_are_not_deleted(make_app, serve_app, upstream):
    service = serve_app(make_app())
    upstream.sim.add_fault("create", "string_ids", times=100)
    upstream.sim.add_fault("list_batch", "string_ids", times=100)

    document = service.upload(hospitals_csv(3)).json()

    assert document["status"] == "completed", document
    assert len(upstream.sim.hospitals(document["batch_id"])) == 3
    assert paired(document, upstream.sim)


def test_rows_whose_answers_were_lost_pair_with_string_ids(make_app, serve_app, upstream):
    service = serve_app(make_app())
    upstream.sim.add_fault("create", "store_then_500", times=2)
    upstream.sim.add_fault("list_batch", "string_ids", times=100)

    document = service.upload(hospitals_csv(2)).json()

    assert document["status"] == "completed", document
    assert upstream.sim.stats["create_requests"] == 2  # found in the listing, not posted again
    assert paired(document, upstream.sim)


def test_an_activation_answering_200_with_an_error_is_not_believed_and_the_batch_resumes(make_app, serve_app,
                                                                                      upstream):
    service = serve_app(make_app(MAX_ATTEMPTS=2))
    upstream.sim.add_fault("activate", "error_body", times=100)

    document = service.upload(hospitals_csv(3)).json()

    assert document["batch_activated"] is False and document["status"] == "partially_failed", document
    assert not any(h["active"] for h in upstream.sim.hospitals(document["batch_id"]))
    assert {r["status"] for r in document["hospitals"]} == {"created"}
    upstream.sim.clear_faults()
    resumed = service.post(f"/hospitals/bulk/{document['batch_id']}/resume").json()
    assert resumed["status"] == "completed" and resumed["batch_activated"], resumed
    assert paired(resumed, upstream.sim)


def test_a_trickling_creation_answer_is_cut_off_and_the_row_found(upstream):
    client = DirectoryClient(upstream.url, connect_timeout=0.5, read_timeout=0.5, max_attempts=2)
    upstream.sim.add_fault("create", "trickle", seconds=0.2)  # a read every 0.2 s: no read times out
    batch_id = str(uuid.uuid4())
    try:
        with pytest.raises(MaybeLanded, match="no whole answer within 1 s") as failure:
            client.create_hospital(batch_id, "General", "1 Main St", None)
        assert not failure.value.answered  # it may still be at work: the settle rules apply
        assert len(upstream.sim.hospitals(batch_id)) == 1  # stored first
    finally:
        client.close()


def test_a_request_with_a_shorter_limit_is_cut_on_time_while_the_watchdog_waits_for_a_longer_one():
    watchdog = Watchdog()
    try:
        with watchdog.limit(300) as long:
            wait_until(lambda: watchdog._wakes_at == long.deadline, timeout=5, what="the watchdog waiting")
            with watchdog.limit(0.05) as short:  # the watchdog must wake for it, not sleep 300 s
                wait_until(lambda: short.fired, timeout=10, what="the shorter request cut")
            assert not long.fired
    finally:
        watchdog.close()


def test_a_trickling_creation_answer_does_not_hold_the_batch(make_app, serve_app, upstream):
    service = serve_app(make_app(CONNECT_TIMEOUT=0.5, READ_TIMEOUT=0.5, BATCH_DEADLINE=5.0))
    upstream.sim.add_fault("create", "trickle", seconds=0.2, times=100)  # ~60 s per answer if read whole

    document = service.upload(hospitals_csv(2)).json()

    assert document["status"] == "completed", document
    assert upstream.sim.stats["create_requests"] == 2  # each cut off, then found: none posted again
    assert paired(document, upstream.sim)


def test_a_batch_whose_every_answer_trickles_ends_by_its_deadline_and_can_be_rolled_back(make_app, serve_app,
                                                                                       upstream):
    deadline, request_total = 3.0, 1.0
    service = serve_app(make_app(CONNECT_TIMEOUT=0.5, READ_TIMEOUT=0.5, BATCH_DEADLINE=deadline))
    for op in ("create", "list_batch", "activate"):
        upstream.sim.add_fault(op, "trickle", seconds=0.2, times=1000)
    batch_id = service.upload(hospitals_csv(2), **{"async": "1"}).json()["batch_id"]

    # The bound: the deadline, one request cut off at connect + read timeout, and time to close.
    document = wait_until(lambda: (d := service.get(f"/hospitals/bulk/{batch_id}").json())["status"] in FINAL
                          and d, timeout=deadline + request_total + 3.0, what="the batch to end")

    assert document["status"] in ("failed", "partially_failed"), document
    assert service.post(f"/hospitals/bulk/{batch_id}/resume", params={"async": "1"}).status_code != 409
    wait_until(lambda: service.get(f"/hospitals/bulk/{batch_id}").json()["status"] in FINAL,
               timeout=deadline + request_total + 3.0, what="the resume to end")
    upstream.sim.clear_faults()
    assert service.delete(f"/hospitals/bulk/{batch_id}").status_code == 200
    assert upstream.sim.hospitals(batch_id) == []


def test_many_one_row_batches_meet_no_read_429(make_app, serve_app):
    # The directory allows 10 reads per 0.5 s per endpoint; we pace all our reads together under that.
    with serve(create_simulator(delay=0.01, create_limit=0, other_limit=10, window=0.5)) as limited:
        service = serve_app(make_app(HOSPITAL_API_BASE_URL=limited.url, READ_RATE=(10, 0.5)))
        ids = [service.upload(hospitals_csv(1, prefix=f"B{n}"), **{"async": "1"}).json()["batch_id"]
               for n in range(12)]

        def statuses() -> set[str]:
            return {service.get(f"/hospitals/bulk/{b}").json()["status"] for b in ids}

        wait_until(lambda: statuses() <= FINAL, timeout=30, what="every batch to end")

        assert statuses() == {"completed"}
        assert limited.sim.stats["batch_reads"] >= 24  # two listings a batch, at least
        assert limited.sim.stats["rate_limited"] == 0


@pytest.mark.parametrize(("op", "kind"), [("create", "list_all"), ("activate", "string_ids"),
                                          ("list_batch", "error_body"), ("create", "trickle")])
def test_wrong_answer_faults_are_scripted_only_where_the_answer_has_that_shape(op, kind):
    sim = create_simulator()
    with pytest.raises(ValueError, match="not 'create'|not 'activate'|not 'list_batch'|needs seconds"):
        sim.add_fault(op, kind)


def test_a_request_is_cut_off_at_the_batch_deadline_and_none_is_sent_after_it(upstream):
    client = DirectoryClient(upstream.url, connect_timeout=5.0, read_timeout=5.0, max_attempts=2)
    upstream.sim.add_fault("create", "trickle", seconds=0.2)
    batch_id = str(uuid.uuid4())
    try:
        with pytest.raises(MaybeLanded, match=r"no whole answer within 0\.\d+ s"):  # not the 10 s of the timeouts
            client.create_hospital(batch_id, "General", "1 Main St", None, deadline=time.monotonic() + 0.3)
        with pytest.raises(GaveUp, match="deadline passed"):
            client.create_hospital(batch_id, "General", "1 Main St", None, deadline=time.monotonic() - 1)
        assert upstream.sim.stats["create_requests"] == 1  # nothing sent once the deadline had passed
    finally:
        client.close()
