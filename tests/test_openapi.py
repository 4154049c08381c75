"""The OpenAPI document: valid, complete, served with its explorer, and true of real responses.

Conformance tests drive the app on a real loopback server against the simulator and check each
response against the document (tests/openapi_conformance.py): the status is documented for the
operation, the content type is one it documents, required headers are there, and a JSON body
validates against the schema, with every object closed (a field the document does not describe
fails the test). Endpoints that other branches are building are tested too, and skipped while the
app has no route for them.
"""

import json
import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from openapi_spec_validator import validate as validate_spec
from werkzeug.exceptions import MethodNotAllowed, NotFound

from bulkproc.contract import schemas as contract_schemas
from bulkproc.states import BatchStatus, ImportStatus, RowStatus
from bulkproc.web import openapi
from tests.browser import start_chromium
from tests.openapi_conformance import DOCUMENT, assert_conforms
from tests.support import hospitals_csv

BAD_CSV = "name,address,phone\nGeneral Hospital,,555-0100\n"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
# Routes of the app that are not API operations: files of the pages.
UNDOCUMENTED_ROUTES = {"/static/{filename}", "/docs/{filename}"}
# The schemas written in openapi.py: the multipart upload form.
UPLOAD_FORMS = {"Upload", "CsvFile"}


def require_route(service, method, path):
    """Skip the test when the app has no route for `method path`: another branch is building it."""
    adapter = service.app.url_map.bind("127.0.0.1")
    try:
        adapter.match(path, method)
    except (NotFound, MethodNotAllowed):
        pytest.skip(f"{method} {urlsplit(path).path}: not built on this branch yet")


def _upload_id(service, csv_text=None, **params):
    response = service.upload(csv_text or hospitals_csv(2), **params)
    assert response.status_code in (200, 202), response.text
    return response.json()["batch_id"]


# -- the document itself ---------------------------------------------------------------------


@pytest.mark.parametrize("token_required", [False, True])
def test_the_document_is_valid_openapi(token_required):
    validate_spec(openapi.document(token_required=token_required))


def test_status_enums_hold_every_state_of_the_code():
    schemas = DOCUMENT["components"]["schemas"]
    for document, enum in (("BatchDocument", BatchStatus), ("RowDocument", RowStatus),
                           ("ImportDocument", ImportStatus)):
        assert schemas[document]["properties"]["status"]["$ref"] == f"#/components/schemas/{enum.__name__}"
        assert schemas[enum.__name__]["enum"] == [str(s) for s in enum]
    assert "cancelled" in schemas["BatchStatus"]["enum"]


def test_the_schemas_are_generated_from_the_models():
    schemas = DOCUMENT["components"]["schemas"]
    assert {name: schemas[name] for name in schemas if name not in UPLOAD_FORMS} == contract_schemas.components()
    models = [(m, "serialization") for m in contract_schemas.ANSWERED] + [(m, "validation") for m in
                                                                           contract_schemas.READ]
    for model, mode in models:
        own = model.model_json_schema(ref_template=contract_schemas.REF_TEMPLATE, mode=mode,
                                      schema_generator=contract_schemas.ContractJsonSchema)
        own.pop("$defs", None)
        assert own == schemas[model.__name__], model.__name__
    assert schemas["RowFix"]["additionalProperties"] is False


def _bodies(node, where=""):
    """(where, schema) of every JSON body under `node`, and of every event an event stream carries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "content":
                for media_type, media in value.items():
                    if media_type == "application/json":
                        yield f"{where} {media_type}", media["schema"]
                    elif media_type == "text/event-stream":
                        yield f"{where} {media_type}", media["schema"]["properties"]["data"]["contentSchema"]
            else:
                yield from _bodies(value, f"{where}/{key}")


def test_no_document_is_described_by_hand():
    """Every JSON body of a request, a response, an event or a webhook is a model's schema, named by
    reference; what openapi.py writes itself is parameters, headers, the upload form and the frame
    of an event stream."""
    generated = set(contract_schemas.components())
    bodies = list(_bodies({"paths": DOCUMENT["paths"], "webhooks": DOCUMENT["webhooks"],
                           "responses": DOCUMENT["components"]["responses"]}))
    assert len(bodies) > 30
    for where, schema in bodies:
        if where.startswith("/paths//openapi.json"):
            continue  # the description itself
        assert set(schema) == {"$ref"} and schema["$ref"].rsplit("/", 1)[1] in generated, where


def test_every_route_of_the_app_is_documented(app):
    documented = {(path, method.upper()) for path, item in DOCUMENT["paths"].items()
                  for method in item if method != "parameters"}
    routes = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        if path not in UNDOCUMENTED_ROUTES:
            routes |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes - documented == set()


def test_protected_operations_need_the_token_only_when_one_is_set():
    for token_required, expected in ((True, [{"bearerAuth": []}]), (False, [{"bearerAuth": []}, {}])):
        paths = openapi.document(token_required=token_required)["paths"]
        assert paths["/hospitals/bulk/{batch_id}"]["get"]["security"] == expected
        assert paths["/hospitals/imports"]["post"]["security"] == expected
        assert paths["/healthz"]["get"]["security"] == []


def test_every_link_leads_to_an_operation_with_the_parameters_it_fills():
    operations = {op["operationId"]: (path, op) for path, item in DOCUMENT["paths"].items()
                  for key, op in item.items() if key != "parameters"}
    for name, link in DOCUMENT["components"]["links"].items():
        path, _ = operations[link["operationId"]]
        assert set(link["parameters"]) == set(re.findall(r"\{(\w+)\}", path)), name


def test_every_error_answer_refers_to_the_error_document():
    for name, response in DOCUMENT["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, name
    assert "WWW-Authenticate" in DOCUMENT["components"]["responses"]["Unauthorized"]["headers"]
    assert "Retry-After" in DOCUMENT["components"]["responses"]["ServiceUnavailable"]["headers"]


# -- /openapi.json and /docs -------------------------------------------------------------------


class _Assets(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls, self.scripts = [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.scripts += tag == "script"
        for name in ("src", "href"):
            if attrs.get(name):
                self.urls.append(attrs[name])


def test_openapi_json_is_served_and_says_when_the_token_is_required(make_app, serve_app):
    open_service = serve_app(make_app())
    assert open_service.get("/openapi.json").json() == json.loads(json.dumps(openapi.document()))
    locked = serve_app(make_app(API_TOKEN="s3cret"))
    response = locked.get("/openapi.json")  # open even with a token
    assert_conforms(response, "GET", "/openapi.json")
    assert response.json()["paths"]["/hospitals/bulk"]["post"]["security"] == [{"bearerAuth": []}]


def test_docs_is_served_entirely_by_the_service(service):
    response = service.get("/docs")
    assert_conforms(response, "GET", "/docs")
    html = response.text
    assert not re.findall(r"https?://", html), "the page names an outside address"
    page = _Assets()
    page.feed(html)
    assert page.scripts >= 2
    assets = [u for u in page.urls if not u.startswith("data:")]
    assert any(u.endswith("swagger-ui-bundle.js") for u in assets)
    assert any(u.endswith(".css") for u in assets)
    for url in assets:
        absolute = urljoin(service.url + "/docs", url)
        assert urlsplit(absolute).netloc == urlsplit(service.url).netloc, url
        asset = service.get(urlsplit(absolute).path)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0, url
    assert 'data-url="/openapi.json"' in html


def test_docs_serves_no_file_outside_swagger_ui(service):
    for path in ("/docs/../api.py", "/docs/%2e%2e/__init__.py", "/docs/nothing.js"):
        response = service.get(path)
        assert response.status_code == 404
        assert response.headers["Content-Type"] == "application/json"


# -- open endpoints --------------------------------------------------------------------------


def test_healthz_and_the_page_conform(service):
    assert_conforms(service.get("/healthz"), "GET", "/healthz") == {"status": "ok"}
    assert_conforms(service.get("/"), "GET", "/") is None


def test_readyz_conforms(service):
    require_route(service, "GET", "/readyz")
    assert assert_conforms(service.get("/readyz"), "GET", "/readyz") == {"status": "ready"}


def test_metrics_conform(service):
    require_route(service, "GET", "/metrics")
    _upload_id(service)
    response = service.get("/metrics")
    assert_conforms(response, "GET", "/metrics")
    assert "bulkproc_hospitals_created_total" in response.text


# -- batches ---------------------------------------------------------------------------------


def test_a_synchronous_upload_conforms(service):
    document = assert_conforms(service.upload(hospitals_csv(3)), "POST", "/hospitals/bulk")
    assert document["status"] == "completed" and len(document["hospitals"]) == 3


@pytest.mark.parametrize("how", [{"headers": {"Prefer": "respond-async"}}, {"async": "1"}])
def test_an_asynchronous_upload_conforms(service, how):
    response = service.upload(hospitals_csv(2), **how)
    document = assert_conforms(response, "POST", "/hospitals/bulk")
    assert response.status_code == 202
    assert response.headers["Location"] == f"/hospitals/bulk/{document['batch_id']}"
    service.get(f"/hospitals/bulk/{document['batch_id']}/events", timeout=30)  # waits for the end


def test_an_idempotent_retry_conforms(service):
    headers = {"Idempotency-Key": "upload-1"}
    first = assert_conforms(service.upload(hospitals_csv(2), headers=headers), "POST", "/hospitals/bulk")
    again = assert_conforms(service.upload(hospitals_csv(2), headers=headers), "POST", "/hospitals/bulk")
    assert again["batch_id"] == first["batch_id"]
    refused = service.upload(hospitals_csv(3), headers=headers)
    assert refused.status_code == 422
    assert_conforms(refused, "POST", "/hospitals/bulk")


def test_get_listing_and_events_conform(service):
    batch_id = _upload_id(service)
    assert_conforms(service.get(f"/hospitals/bulk/{batch_id}"), "GET", "/hospitals/bulk/{batch_id}")
    listing = assert_conforms(service.get("/hospitals/bulk", params={"limit": 5}), "GET", "/hospitals/bulk")
    assert listing["batches"][0]["batch_id"] == batch_id
    events = assert_conforms(service.get(f"/hospitals/bulk/{batch_id}/events"), "GET",
                             "/hospitals/bulk/{batch_id}/events")
    assert events[-1]["status"] == "completed"


def test_the_listing_takes_exactly_the_documented_limits(service):
    limit = DOCUMENT["components"]["parameters"]["Limit"]["schema"]
    for value, status in ((limit["minimum"], 200), (limit["maximum"], 200),
                          (limit["minimum"] - 1, 400), (limit["maximum"] + 1, 400)):
        response = service.get("/hospitals/bulk", params={"limit": value})
        assert response.status_code == status, value
        assert_conforms(response, "GET", "/hospitals/bulk")


@pytest.mark.parametrize("path", ["/hospitals/bulk/validate", "/hospitals/imports/validate"])
def test_validate_conforms_for_valid_and_refused_files(service, path):
    require_route(service, "POST", path)
    valid = assert_conforms(service.upload(hospitals_csv(2), path=path), "POST", path)
    refused = assert_conforms(service.upload(BAD_CSV, path=path), "POST", path)
    assert valid["valid"] and not refused["valid"]
    assert refused["errors"][0]["column"] == "address"


def test_resume_conforms_when_completed_and_when_conflicting(service):
    batch_id = _upload_id(service)
    template = "/hospitals/bulk/{batch_id}/resume"
    assert assert_conforms(service.post(f"/hospitals/bulk/{batch_id}/resume"), "POST", template)["status"] == \
        "completed"
    rolled_back = assert_conforms(service.delete(f"/hospitals/bulk/{batch_id}"), "DELETE", "/hospitals/bulk/{batch_id}")
    assert rolled_back["status"] == "rolled_back"
    conflict = service.post(f"/hospitals/bulk/{batch_id}/resume")
    assert conflict.status_code == 409
    assert_conforms(conflict, "POST", template)


def test_resuming_a_partially_failed_batch_conforms(service, upstream):
    upstream.sim.add_fault("create", "reject_422", after=1)
    batch_id = _upload_id(service)
    assert service.get(f"/hospitals/bulk/{batch_id}").json()["status"] == "partially_failed"
    response = service.post(f"/hospitals/bulk/{batch_id}/resume", headers={"Prefer": "respond-async"})
    assert response.status_code == 202
    assert_conforms(response, "POST", "/hospitals/bulk/{batch_id}/resume")


def test_a_rollback_the_upstream_cannot_do_is_a_documented_502(service, upstream):
    batch_id = _upload_id(service)
    upstream.sim.add_fault("delete_batch", "error_500", times=100)
    response = service.delete(f"/hospitals/bulk/{batch_id}")
    assert response.status_code == 502
    assert_conforms(response, "DELETE", "/hospitals/bulk/{batch_id}")


@pytest.mark.parametrize("name", ["results.csv", "failed.csv"])
def test_result_files_conform(service, upstream, name):
    require_route(service, "GET", f"/hospitals/bulk/{UNKNOWN}/{name}")
    upstream.sim.add_fault("create", "reject_422", after=1)
    batch_id = _upload_id(service)
    response = service.get(f"/hospitals/bulk/{batch_id}/{name}")
    assert_conforms(response, "GET", "/hospitals/bulk/{batch_id}/" + name)
    header = response.text.splitlines()[0]
    assert header == {"results.csv": "row,name,address,phone,status,hospital_id,batch_id,error",
                      "failed.csv": "name,address,phone,error"}[name]
    unknown = service.get(f"/hospitals/bulk/{UNKNOWN}/{name}")
    assert unknown.status_code == 404
    assert_conforms(unknown, "GET", "/hospitals/bulk/{batch_id}/" + name)


def test_fixing_a_row_conforms(service, upstream):
    require_route(service, "PATCH", f"/hospitals/bulk/{UNKNOWN}/rows/1")
    template = "/hospitals/bulk/{batch_id}/rows/{row}"
    upstream.sim.add_fault("create", "reject_422", after=1)
    batch_id = _upload_id(service)
    failed = next(r["row"] for r in service.get(f"/hospitals/bulk/{batch_id}").json()["hospitals"]
                  if r["status"] == "failed")
    fixed = service.http.patch(f"{service.url}/hospitals/bulk/{batch_id}/rows/{failed}",
                               json={"phone": "555-0199"}, timeout=30)
    assert fixed.status_code == 200
    assert_conforms(fixed, "PATCH", template)
    for body, status in (({"name": ""}, 422), ("[", 400)):
        data = body if isinstance(body, str) else json.dumps(body)
        response = service.http.patch(f"{service.url}/hospitals/bulk/{batch_id}/rows/{failed}", data=data,
                                      headers={"Content-Type": "application/json"}, timeout=30)
        assert response.status_code == status, response.text
        assert_conforms(response, "PATCH", template)
    created = service.http.patch(f"{service.url}/hospitals/bulk/{batch_id}/rows/{failed % 2 + 1}",
                                 json={"phone": "555-0199"}, timeout=30)
    assert created.status_code == 409
    assert_conforms(created, "PATCH", template)


# -- errors ----------------------------------------------------------------------------------


def test_malformed_requests_are_documented_400s(service):
    not_multipart = service.post("/hospitals/bulk", data="name,address\nA,B\n", headers={"Content-Type": "text/csv"})
    no_file = service.post("/hospitals/bulk", files={"other": ("a.csv", b"x")})
    bad_limit = service.get("/hospitals/bulk", params={"limit": "0"})
    for response, method, template in ((not_multipart, "POST", "/hospitals/bulk"),
                                       (no_file, "POST", "/hospitals/bulk"),
                                       (bad_limit, "GET", "/hospitals/bulk")):
        assert response.status_code == 400
        assert_conforms(response, method, template)


def test_a_refused_csv_is_a_documented_422(service):
    response = service.upload(BAD_CSV)
    assert response.status_code == 422
    body = assert_conforms(response, "POST", "/hospitals/bulk")
    assert body["details"] == [{"row": 1, "column": "address", "message": body["details"][0]["message"], "line": 2}]


def test_unknown_batches_are_documented_404s(service):
    for method, template in (("GET", "/hospitals/bulk/{batch_id}"), ("GET", "/hospitals/bulk/{batch_id}/events"),
                             ("POST", "/hospitals/bulk/{batch_id}/resume"), ("DELETE", "/hospitals/bulk/{batch_id}")):
        for batch_id in (UNKNOWN, "not-a-uuid"):
            response = service.http.request(method, service.url + template.format(batch_id=batch_id), timeout=30)
            assert response.status_code == 404
            assert_conforms(response, method, template)


def test_a_method_not_allowed_is_a_documented_405(service):
    response = service.http.put(service.url + "/hospitals/bulk", timeout=30)
    assert response.status_code == 405
    assert_conforms(response, "PUT", "/hospitals/bulk",
                    operation={"responses": {"405": {"$ref": "#/components/responses/MethodNotAllowed"}}})
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_an_oversized_upload_is_a_documented_413(make_app, serve_app):
    service = serve_app(make_app(MAX_UPLOAD_BYTES=200))
    response = service.upload(hospitals_csv(20))
    assert response.status_code == 413
    assert_conforms(response, "POST", "/hospitals/bulk")


def test_a_missing_token_is_a_documented_401(make_app, serve_app):
    service = serve_app(make_app(API_TOKEN="s3cret"))
    response = service.upload(hospitals_csv(1))
    assert response.status_code == 401
    if "WWW-Authenticate" not in response.headers:
        pytest.xfail("the 401's WWW-Authenticate header is built on another branch (issue 8, item 6)")
    assert_conforms(response, "POST", "/hospitals/bulk")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _sample_path(template):
    return template.replace("{batch_id}", UNKNOWN).replace("{import_id}", UNKNOWN).replace("{row}", "1")


def test_with_a_token_every_protected_operation_refuses_a_request_without_it(make_app, serve_app):
    service = serve_app(make_app(API_TOKEN="s3cret"))
    document = service.get("/openapi.json").json()
    open_reads = []
    for template, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters" or operation["security"] == []:
                continue
            path = _sample_path(template)
            if service.app.url_map.bind("127.0.0.1").test(path, method.upper()) is False:
                continue  # not built on this branch yet
            response = service.http.request(method.upper(), service.url + path, timeout=30)
            if response.status_code != 401 and method == "get":
                open_reads.append(f"GET {template}: {response.status_code}")
                continue
            assert response.status_code == 401, f"{method.upper()} {template}: {response.status_code}"
            assert response.headers["Content-Type"] == "application/json"
    if open_reads:
        pytest.xfail("reads behind the token are built on another branch (issue 8, item 6): " + ", ".join(open_reads))


# -- imports ---------------------------------------------------------------------------------


def _start_import(service, csv_text):
    require_route(service, "POST", "/hospitals/imports")
    response = service.upload(csv_text, path="/hospitals/imports")
    document = assert_conforms(response, "POST", "/hospitals/imports")
    assert response.status_code == 202
    assert response.headers["Location"] == f"/hospitals/imports/{document['import_id']}"
    return document["import_id"]


def test_an_import_and_its_reads_conform(service):
    import_id = _start_import(service, hospitals_csv(25))
    base = f"/hospitals/imports/{import_id}"
    events = service.get(base + "/events", timeout=60)  # ends when the import is final
    assert_conforms(events, "GET", "/hospitals/imports/{import_id}/events")
    document = assert_conforms(service.get(base), "GET", "/hospitals/imports/{import_id}")
    assert document["status"] == "completed" and document["estimated_seconds_remaining"] is None
    assert [(b["first_row"], b["last_row"]) for b in document["batches"]] == [(1, 20), (21, 25)]
    listing = assert_conforms(service.get("/hospitals/imports", params={"limit": 3}), "GET", "/hospitals/imports")
    assert listing["imports"][0]["import_id"] == import_id
    for name in ("results.csv", "failed.csv"):
        assert_conforms(service.get(f"{base}/{name}"), "GET", "/hospitals/imports/{import_id}/" + name)
    assert_conforms(service.post(base + "/resume"), "POST", "/hospitals/imports/{import_id}/resume")
    assert_conforms(service.delete(base), "DELETE", "/hospitals/imports/{import_id}")


def test_cancelling_an_import_conforms(service):
    import_id = _start_import(service, hospitals_csv(40))
    response = service.post(f"/hospitals/imports/{import_id}/cancel")
    assert_conforms(response, "POST", "/hospitals/imports/{import_id}/cancel")


def test_unknown_imports_are_documented_404s(service):
    require_route(service, "GET", f"/hospitals/imports/{UNKNOWN}")
    for method, suffix in (("GET", ""), ("GET", "/events"), ("POST", "/cancel"), ("POST", "/resume"),
                           ("DELETE", ""), ("GET", "/results.csv"), ("GET", "/failed.csv")):
        template = "/hospitals/imports/{import_id}" + suffix
        response = service.http.request(method, service.url + template.format(import_id=UNKNOWN), timeout=30)
        assert response.status_code == 404
        assert_conforms(response, method, template)


# -- /docs in a browser ----------------------------------------------------------------------



@pytest.fixture
def browser():
    driver = start_chromium(window="1200,900", performance_log=True)  # the log shows where requests went
    yield driver
    driver.quit()


def _requested_urls(driver):
    """Every URL the page asked the network for, from Chromium's performance log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_docs_renders_every_operation_and_tries_one_out_offline(browser, service):
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(service.url + "/docs")
    wait.until(expected_conditions.presence_of_element_located(("id", "operations-service-healthz")))
    rendered = {e.get_attribute("id") for e in browser.find_elements("css selector", ".opblock[id]")}
    documented = {f"operations-{op['tags'][0]}-{op['operationId']}"
                  for item in [*DOCUMENT["paths"].values(), *DOCUMENT["webhooks"].values()]
                  for key, op in item.items() if key != "parameters"}
    assert rendered == documented

    healthz = browser.find_element("id", "operations-service-healthz")
    healthz.find_element("css selector", ".opblock-summary").click()
    wait.until(lambda _: healthz.find_elements("css selector", ".try-out__btn"))[0].click()
    healthz.find_element("css selector", ".execute").click()
    wait.until(lambda _: healthz.find_elements("css selector", ".live-responses-table tbody .response-col_status"))
    assert healthz.find_element("css selector", ".live-responses-table tbody .response-col_status").text.strip() == "200"

    upload = browser.find_element("id", "operations-batches-create_batch")
    upload.find_element("css selector", ".opblock-summary").click()
    wait.until(lambda _: upload.find_elements("css selector", ".try-out__btn"))[0].click()
    assert wait.until(lambda _: upload.find_elements("css selector", "input[type=file]")), "no file picker for the CSV"

    requested = [u for u in _requested_urls(browser) if not u.startswith("data:")]
    assert service.url + "/healthz" in requested
    assert [u for u in requested if urlsplit(u).netloc != urlsplit(service.url).netloc] == []
