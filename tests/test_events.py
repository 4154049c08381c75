"""The live event stream of a batch."""

from __future__ import annotations

import json
import time

from bulkproc.simulator import create_simulator, serve
from tests.support import hospitals_csv


def read_stream(service, batch_id: str) -> tuple[list[dict], list[str]]:
    """Every event document and comment line of the stream, which must end by itself."""
    documents, comments = [], []
    with service.get(f"/hospitals/bulk/{batch_id}/events", stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                documents.append(json.loads(line[len("data: "):]))
            elif line.startswith(":"):
                comments.append(line)
    return documents, comments


def test_the_stream_sends_each_change_and_ends_at_the_final_state(make_app, serve_app):
    with serve(create_simulator(delay=0.3, create_limit=0)) as slow:
        service = serve_app(make_app(HOSPITAL_API_BASE_URL=slow.url, SSE_HEARTBEAT_SECONDS=0.1))
        batch_id = service.upload(hospitals_csv(3), **{"async": "1"}).json()["batch_id"]

        documents, comments = read_stream(service, batch_id)

    statuses = [d["status"] for d in documents]
    assert statuses[-1] == "completed" and "activating" in statuses
    assert [d["processed_hospitals"] for d in documents] == sorted(d["processed_hospitals"] for d in documents)
    assert documents[-1]["hospitals"][0]["status"] == "created_and_activated"
    assert ": keep-alive" in comments  # a 0.3 s creation outlasts the 0.1 s heartbeat


def test_a_finished_batch_streams_its_final_document_and_ends(service):
    batch_id = service.upload(hospitals_csv(1)).json()["batch_id"]

    documents, _ = read_stream(service, batch_id)

    assert [d["status"] for d in documents] == ["completed"]


def test_the_stream_of_a_batch_whose_process_died_ends_as_interrupted(app, service):
    from bulkproc.files.rules import parse

    store = app.extensions["bulkproc"].store
    batch_id, _ = store.insert_batch("3f0e1a2b-4c5d-4e6f-8a7b-9c0d1e2f3a4b", parse(hospitals_csv(2).encode()),
                                     owner="gone:1", lease_until=time.time() - 1)

    documents, _ = read_stream(service, batch_id)

    assert [d["status"] for d in documents] == ["interrupted"]
