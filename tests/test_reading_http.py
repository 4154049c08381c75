"""Every upload endpoint reads every format (issue 14), over real HTTP against the simulator."""

from __future__ import annotations

import json

import pytest

from tests import spreadsheets
from tests.support import wait_until

ROWS = [["Hospital Name", "Street", "City", "Phone Number"],
        ["General", "1 Main St", "Springfield", 5550100],
        ["Saint Mary's", "2 Elm St", "Boston", "(617) 555-0101"]]
SEMICOLONS = "Hospital Name;Street;City;Phone Number\r\nGeneral;1 Main St;Springfield;5550100\r\n" \
             "Saint Mary's;2 Elm St;Boston;(617) 555-0101\r\n"
EXPECTED = [("General", "1 Main St, Springfield", "5550100"), ("Saint Mary's", "2 Elm St, Boston", "(617) 555-0101")]
FILES = {"xlsx": lambda: spreadsheets.xlsx(ROWS), "semicolons": lambda: SEMICOLONS.encode()}


def upload(service, data: bytes, path: str, filename: str = "hospitals.xlsx", **form: str):
    return service.http.post(service.url + path, files={"file": (filename, data, "application/octet-stream")},
                             data=form, timeout=60)


@pytest.mark.parametrize("kind", FILES)
@pytest.mark.parametrize("path", ["/hospitals/bulk/validate", "/hospitals/imports/validate"])
def test_both_validates_read_the_file(service, upstream, path, kind):
    response = upload(service, FILES[kind](), path)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["valid"], document["errors"]
    assert [(h["name"], h["address"], h["phone"]) for h in document["hospitals"]] == EXPECTED
    assert document["file"]["columns"] == {"Hospital Name": "name", "Street": "address", "City": "city",
                                           "Phone Number": "phone"}
    assert document["file"]["format"] == ("xlsx" if kind == "xlsx" else "csv")
    assert upstream.sim.stats["create_requests"] == 0


@pytest.mark.parametrize("kind", FILES)
def test_a_batch_is_created_from_the_file(service, upstream, kind):
    response = upload(service, FILES[kind](), "/hospitals/bulk")
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["status"] == "completed"
    created = sorted((h["name"], h["address"], h["phone"]) for h in upstream.sim.hospitals(document["batch_id"]))
    assert created == sorted(EXPECTED)


@pytest.mark.parametrize("kind", FILES)
def test_an_import_is_created_from_the_file(service, upstream, kind):
    response = upload(service, FILES[kind](), "/hospitals/imports")
    assert response.status_code == 202, response.text
    import_id = response.json()["import_id"]
    final = wait_until(lambda: (d := service.get(f"/hospitals/imports/{import_id}").json())["status"] == "completed"
                       and d, timeout=30, what="the import to complete")
    assert final["total_hospitals"] == 2


def test_a_refused_workbook_names_the_sheet_rows_and_creates_nothing(service, upstream):
    rows = [["name", "address", "phone"], ["General", "", "555-0100"], ["Mercy", "2 Elm St", "12"]]
    response = upload(service, spreadsheets.xlsx(rows), "/hospitals/bulk")
    assert response.status_code == 422
    assert [(d["row"], d["column"], d["line"]) for d in response.json()["details"]] == [(1, "address", 2),
                                                                                        (2, "phone", 3)]
    assert upstream.sim.stats["create_requests"] == 0


def test_the_form_fields_encoding_sheet_and_columns_are_read(service):
    data = "Site;Where\r\nHôpital Nord;1 rue de l'Église\r\n".encode("cp1252")
    columns = json.dumps({"Site": "name", "Where": "address"})
    refused = upload(service, data, "/hospitals/bulk/validate", "h.csv").json()
    assert not refused["valid"] and refused["file"]["suggested_encoding"] == "windows-1252"
    document = upload(service, data, "/hospitals/bulk/validate", "h.csv", encoding="windows-1252",
                      columns=columns).json()
    assert document["valid"], document["errors"]
    assert document["hospitals"][0]["name"] == "Hôpital Nord"
    assert document["file"]["encoding"] == "windows-1252"
    book = spreadsheets.xlsx([["x"]], title="Notes", more_sheets=())
    sheet = upload(service, book, "/hospitals/bulk/validate", sheet="Elsewhere").json()
    assert '"Elsewhere"' in sheet["errors"][0]["message"]


@pytest.mark.parametrize("form, field", [
    ({"encoding": "klingon"}, "encoding"), ({"encoding": "rot13"}, "encoding"), ({"encoding": "punycode"}, "encoding"),
    ({"columns": "{"}, "columns"), ({"columns": "[1]"}, "columns"), ({"columns": '{"a": 1}'}, "columns"),
    ({"columns": "[" * 10_000}, "columns"), ({"sheet": "a\x00b"}, "sheet"),
])
def test_unusable_form_fields_are_400_naming_the_field(service, upstream, form, field):
    response = upload(service, b"name,address\nA,1 Main St\n", "/hospitals/bulk", "h.csv", **form)
    assert response.status_code == 400, response.text
    body = response.json()
    assert field in body["error"] or body["details"][0]["column"] == field
    assert upstream.sim.stats["create_requests"] == 0


def test_the_template_is_served_and_uploads_as_it_is(service):
    response = service.get("/hospitals/template.csv")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
    assert response.text.splitlines()[0] == "name,address,phone"
    check = upload(service, response.content, "/hospitals/bulk/validate", "template.csv").json()
    assert check["valid"] and check["total_hospitals"] == 2


def test_the_template_needs_no_token(make_app, serve_app):
    locked = serve_app(make_app(API_TOKEN="s3cret-token-0123456789"))
    assert locked.get("/hospitals/template.csv").status_code == 200
