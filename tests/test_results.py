"""Result files: results.csv and failed.csv of a batch, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import uuid

import pytest

from bulkproc.files import rules as csv_input
from bulkproc.files.results import failed_lines, neutralise, results_lines
from bulkproc.store import Row, Run
from tests.support import hospitals_csv


def _row(number: int, status: str, **values) -> Row:
    defaults = {"name": f"Hospital {number}", "address": f"{number} Main St", "phone": None,
                "hospital_id": None, "error": None}
    return Row(row=number, status=status, **{**defaults, **values})


def _read(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


# --- the lines ------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("=1+2", "'=1+2"),
    ("+1 555 0100", "'+1 555 0100"),
    ("-2", "'-2"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tcmd", "'\tcmd"),
    ("\rcmd", "'\rcmd"),
    ('=HYPERLINK("http://x.example","click")', '\'=HYPERLINK("http://x.example","click")'),
    ("General = Hospital", "General = Hospital"),
    ("'quoted", "'quoted"),
    ("", ""),
    (None, ""),
    (101, "101"),
])
def test_cells_a_spreadsheet_would_run_are_neutralised(value, expected):
    assert neutralise(value) == expected


def test_results_lines_have_the_header_and_one_line_per_row_in_order():
    rows = [_row(1, "created_and_activated", hospital_id=7, phone="555-0100"),
            _row(2, "failed", error="refused, try again"),
            _row(3, "pending", address="3 Elm St, Boston")]

    text = "".join(results_lines(("b-1", r) for r in rows))

    assert _read(text) == [
        ["row", "name", "address", "phone", "status", "hospital_id", "batch_id", "error"],
        ["1", "Hospital 1", "1 Main St", "555-0100", "created_and_activated", "7", "b-1", ""],
        ["2", "Hospital 2", "2 Main St", "", "failed", "", "b-1", "refused, try again"],
        ["3", "Hospital 3", "3 Elm St, Boston", "", "pending", "", "b-1", ""],
    ]
    assert text.endswith("\r\n")


def test_results_lines_name_each_rows_own_batch():
    pairs = [("b-1", _row(20, "created")), ("b-2", _row(21, "failed", error="x"))]

    assert [line[6] for line in _read("".join(results_lines(pairs)))[1:]] == ["b-1", "b-2"]


def test_failed_lines_keep_only_rows_not_created():
    statuses = ["created", "failed", "pending", "created_and_activated", "cancelled", "deleted", "in_progress"]
    rows = [_row(n, s, error=f"because {n}") for n, s in enumerate(statuses, start=1)]

    lines = _read("".join(failed_lines(("b", r) for r in rows)))

    assert lines == [["name", "address", "phone", "error"],
                     ["Hospital 2", "2 Main St", "", "because 2"],
                     ["Hospital 3", "3 Main St", "", "because 3"],
                     ["Hospital 5", "5 Main St", "", "because 5"]]


def test_every_cell_is_neutralised_including_the_error():
    row = _row(1, "failed", name="@Clinic", address="=cmd|' /C calc'!A0", phone="-5",
               error="=HYPERLINK(\"http://evil.example\")")

    results = _read("".join(results_lines([("b", row)])))[1]
    failed = _read("".join(failed_lines([("b", row)])))[1]

    assert failed == ["'@Clinic", "'=cmd|' /C calc'!A0", "'-5", "'=HYPERLINK(\"http://evil.example\")"]
    assert [results[i] for i in (1, 2, 3, 7)] == failed


def test_lines_are_produced_lazily_from_any_iterable():
    def endless():
        n = 0
        while True:
            n += 1
            yield "b", _row(n, "failed")

    lines = results_lines(endless())
    assert [next(lines) for _ in range(3)][2].startswith("2,")


# --- the endpoints ---------------------------------------------------------------


def test_results_csv_of_a_completed_batch(client, upstream):
    document = client.post("/hospitals/bulk", data={"file": (io.BytesIO(hospitals_csv(3).encode()), "h.csv")}).json

    response = client.get(f"/hospitals/bulk/{document['batch_id']}/results.csv")

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="batch-{document["batch_id"]}-results.csv"')
    lines = _read(response.get_data(as_text=True))
    assert lines[0] == ["row", "name", "address", "phone", "status", "hospital_id", "batch_id", "error"]
    expected = [[str(h["row"]), h["name"], f"{h['row']} Main St, Springfield", f"555-010-{h['row']:04d}",
                 "created_and_activated", str(h["hospital_id"]), document["batch_id"], ""]
                for h in document["hospitals"]]
    assert lines[1:] == expected
    assert sorted(h["id"] for h in upstream.sim.hospitals()) == sorted(int(line[5]) for line in lines[1:])


def test_failed_csv_lists_the_failed_rows_with_their_errors_ready_to_upload(client, upstream):
    upstream.sim.add_fault("create", "reject_422", after=1)
    document = client.post("/hospitals/bulk", data={"file": (io.BytesIO(hospitals_csv(3).encode()), "h.csv")}).json
    failed = [h for h in document["hospitals"] if h["status"] == "failed"]
    assert document["status"] == "partially_failed" and len(failed) == 1

    response = client.get(f"/hospitals/bulk/{document['batch_id']}/failed.csv")

    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert 'filename="batch-' in response.headers["Content-Disposition"]
    lines = _read(response.get_data(as_text=True))
    row = failed[0]["row"]
    assert lines == [["name", "address", "phone", "error"],
                     [f"Hospital {row}", f"{row} Main St, Springfield", f"555-010-{row:04d}", failed[0]["error"]]]
    # What an upload reads of it, once the error column is set aside, is the failed row again.
    without_error = "\n".join(",".join(f'"{c}"' for c in line[:3]) for line in lines)
    assert [(r.name, r.address, r.phone) for r in csv_input.parse(without_error.encode())] == [
        (f"Hospital {row}", f"{row} Main St, Springfield", f"555-010-{row:04d}")]


def test_an_upstream_error_message_is_neutralised_in_both_files(app, client):
    store = app.extensions["bulkproc"].store
    batch_id, _ = store.insert_batch(str(uuid.uuid4()), csv_input.parse(hospitals_csv(1).encode()),
                                     owner="test", token="t", lease_until=0)
    store.record_row_failed(Run(batch_id, "t"), 1, "=1+1 refused by the directory")
    store.set_status(Run(batch_id, "t"), "failed")

    for name in ("results.csv", "failed.csv"):
        text = client.get(f"/hospitals/bulk/{batch_id}/{name}").get_data(as_text=True)
        assert _read(text)[1][-1] == "'=1+1 refused by the directory"


@pytest.mark.parametrize("name", ["results.csv", "failed.csv"])
@pytest.mark.parametrize("batch_id", [str(uuid.UUID(int=1)), "not-a-batch"])
def test_result_files_of_an_unknown_batch_are_404_json(client, name, batch_id):
    response = client.get(f"/hospitals/bulk/{batch_id}/{name}")

    assert response.status_code == 404
    assert "No batch" in response.json["error"]


def test_a_failed_csv_with_a_plus_phone_uploads_again_as_it_was():
    # The + of an international phone is written behind a quote (a spreadsheet would run it);
    # the file must still upload again with the phone as the user wrote it.
    row = Row(row=1, name="A", address="1 Main St", phone="+1 555 010 0100", status="failed",
              hospital_id=None, error="-refused")
    data = "".join(failed_lines([("b", row)])).encode()
    assert b"'+1 555" in data
    assert csv_input.parse(data) == [csv_input.HospitalRow(1, "A", "1 Main St", "+1 555 010 0100")]
