"""schemathesis against the live service: no request ends in a 500, every answer is as documented.

The service runs for real (gunicorn, two workers, on loopback) against the simulator, and
schemathesis generates requests from /openapi.json, valid and invalid, and checks each answer:
not a server error, a documented status, content type, headers and schema; a stateful run
follows the document's links from an upload to its batch; and every fix the document allows,
sent to a failed row, must be taken (schemathesis's positive_data_acceptance check with only 2xx
expected), which holds the description's RowFix to the file rules that judge it. Hypothesis adds
what schemathesis seldom sends: Unicode digits and control characters in every parameter of a
read. `make test` runs a small derandomized budget; `make fuzz` sets FUZZ_EXAMPLES for a long
run. Anything they find becomes a plain test in tests/test_api_regressions.py.
"""

import os
import re
from contextlib import contextmanager
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from bulkproc.simulator import create_simulator, serve
from tests.gunicorn_service import GunicornService, service_env
from tests.openapi_conformance import DOCUMENT, assert_conforms

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3"))
SAMPLE_ID = "00000000-0000-4000-8000-000000000000"


TOKEN = "fuzz-token-of-16-chars-or-more"  # the contract refuses tokens under 16 characters
AUTHORIZATION = {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def _service(tmp, **env: str):
    """gunicorn serving the app against the simulator (0.05 s per creation, no rate limit)."""
    # No limit on any upstream endpoint: a long run activates hundreds of batches, and past the
    # simulator's 50 activations a minute a synchronous upload rightly waits out the 429s.
    upstream = serve(create_simulator(delay=0.05, create_limit=0, other_limit=0, health_limit=0,
                                      hang_seconds=3.0))
    service = GunicornService(service_env(upstream.url, f"sqlite:///{tmp}/jobs.sqlite3", **env),
                              tmp / "gunicorn.log", workers=2)
    service.upstream = upstream  # for faults
    try:
        service.start()
        yield service
    finally:
        service.stop()
        upstream.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with _service(tmp_path_factory.mktemp("fuzz")) as service:
        yield service


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    """The same with BULKPROC_API_TOKEN set."""
    with _service(tmp_path_factory.mktemp("fuzz-token"), BULKPROC_API_TOKEN=TOKEN) as service:
        yield service


def _built(live, path: str, method: str) -> bool:
    """Whether the service has a route for `method path`: Flask answers OPTIONS with its Allow list."""
    sample = re.sub(r"\{row\}", "1", re.sub(r"\{[a-z_]+_id\}", SAMPLE_ID, path))
    response = live.request("OPTIONS", sample, headers=AUTHORIZATION)
    return response.status_code == 200 and method.upper() in response.headers.get("Allow", "")


def _without_unbuilt(live, document: dict) -> dict:
    """The document less the operations the service has no route for (other branches build them)."""
    for path, item in list(document["paths"].items()):
        for method in [m for m in item if m != "parameters" and not _built(live, path, m)]:
            del item[method]
        if set(item) <= {"parameters"}:
            del document["paths"][path]
    operations = [op for item in document["paths"].values() for m, op in item.items() if m != "parameters"]
    built = {op["operationId"] for op in operations}
    links = document["components"]["links"]
    for name in [n for n in links if links[n]["operationId"] not in built]:
        del links[name]
    for response in (r for op in operations for r in op["responses"].values()):
        for name in set(response.get("links", {})) - set(links):
            del response["links"][name]
    return document


@pytest.fixture(scope="module")
def api_schema(live):
    document = _without_unbuilt(live, live.get("/openapi.json").json())
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=live.url)
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                    max_examples=EXAMPLES, deterministic=True)
    # A well-formed request may still be refused for what it says: a CSV's content (422), an
    # unknown batch (404), a batch's state (409). A 400 would be a bug: it means malformed.
    schema.config.checks.positive_data_acceptance.expected_statuses = ["2xx", "401", "404", "409", "422"]
    # DELETE rolls a batch back; the contract keeps it readable afterwards, as rolled_back.
    schema.config.checks.update(excluded_check_names=["use_after_free"])
    return schema


def _not_for(path: str) -> list:
    """Checks that do not apply to `path`."""
    if path.endswith("/validate"):
        # /hospitals/bulk/<batch_id> also matches /hospitals/bulk/validate: there GET and DELETE
        # answer 404 (no batch has the id "validate", as the contract says of a malformed id), not
        # 405, and the Allow header lists them.
        return [schemathesis.checks.unsupported_method, schemathesis.checks.allow_header_conformance]
    return []


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_breaks_the_service(case, live):
    case.call_and_validate(timeout=30, excluded_checks=_not_for(case.path))
    assert live.get("/healthz", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def token_api_schema(locked):
    document = _without_unbuilt(locked, locked.get("/openapi.json").json())
    if locked.get("/hospitals/bulk").status_code != 401:
        # Reads behind the token come with another branch (issue 8, item 6); until then only the
        # writes are held to it here (tests/test_openapi.py names the open reads).
        for item in document["paths"].values():
            if item.get("get", {}).get("security"):
                del item["get"]
    if "WWW-Authenticate" not in locked.post("/hospitals/bulk").headers:
        # Also built on that branch: until then a 401 without it is not this test's finding.
        document["components"]["headers"]["WWW-Authenticate"]["required"] = False
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=locked.url)
    # Valid requests carrying the token: the invalid ones are the test above's. (A generated
    # request "without its Authorization header" would still get the token at the call.)
    schema.config.generation.update(modes=[GenerationMode.POSITIVE], with_security_parameters=False,
                                    max_examples=EXAMPLES, deterministic=True)
    schema.config.checks.positive_data_acceptance.expected_statuses = ["2xx", "401", "404", "409", "422"]
    return schema


token_schema = schemathesis.pytest.from_fixture("token_api_schema")


@token_schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_with_a_token_nothing_protected_answers_without_it(case):
    """schemathesis's ignored_auth check sends each request again without the token: it must be a 401."""
    # The method checks run above; here the document may lack the reads that are still open.
    case.call_and_validate(headers=AUTHORIZATION, timeout=30,
                           excluded_checks=[schemathesis.checks.unsupported_method,
                                            schemathesis.checks.allow_header_conformance])


@pytest.fixture(scope="module")
def failed_row(live):
    """(batch id, row) of a failed row of a one-row batch, which every fix may change again."""
    live.upstream.sim.add_fault("create", "reject_422")
    document = live.upload("name,address,phone\nMercy Hospital,1 Main St,555-0100\n").json()
    assert document["status"] == "failed", document
    return document["batch_id"], 1


@pytest.fixture(scope="module")
def fix_schema(live, failed_row):
    """The fix operation alone, aimed at that row, valid bodies only: each must be taken (200)."""
    document = live.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    batch_id, row = failed_row
    schema.config.update(base_url=live.url, parameters={"path.batch_id": batch_id, "path.row": row})
    schema.config.generation.update(modes=[GenerationMode.POSITIVE], max_examples=FIX_EXAMPLES,
                                    deterministic=True)
    # Anything the description allows is a fix the file rules take: a 422 here is a drift between
    # the two (as a refused null phone once was).
    schema.config.checks.positive_data_acceptance.expected_statuses = ["2xx"]
    return schema


FIX_EXAMPLES = EXAMPLES * 10
fixes = schemathesis.pytest.from_fixture("fix_schema").include(operation_id="fix_batch_row")


@fixes.parametrize()
@settings(max_examples=FIX_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_fix_the_description_allows_is_taken(case, failed_row):
    assert case.path_parameters == dict(zip(("batch_id", "row"), failed_row))
    case.call_and_validate(timeout=30)


def test_sequences_of_calls_keep_the_service_sound(api_schema):
    """Follow the document's links: upload, then read, resume, roll back, fetch the files of that batch."""
    api_schema.as_state_machine().run(settings=settings(
        max_examples=EXAMPLES, stateful_step_count=6, derandomize=True, deadline=None, database=None,
        suppress_health_check=list(HealthCheck)))


# Text that schemathesis seldom sends but that breaks number and id parsing: every kind of Unicode
# digit (int() takes some and refuses others, like "²"), controls, anything. (More digits than
# int() reads would not fit in the request line gunicorn accepts; a plain test covers them.)
HOSTILE_TEXT = st.one_of(
    st.text(st.characters(categories=["Nd"]), min_size=1, max_size=4),
    st.text(st.characters(categories=["No"]).filter(str.isdigit), min_size=1, max_size=4),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
)
# Every parameter of a read: (path template, parameter name, where).
READ_PARAMETERS = sorted(
    (path, parameter["name"], parameter["in"])
    for path, item in DOCUMENT["paths"].items() if "get" in item
    for parameter in [DOCUMENT["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]
                      for p in item.get("parameters", []) + item["get"].get("parameters", [])]
    if parameter["in"] in ("path", "query"))


@pytest.fixture(scope="module")
def built_reads(live):
    return [p for p in READ_PARAMETERS if _built(live, p[0], "get")]


@settings(max_examples=EXAMPLES * 20, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data(), text=HOSTILE_TEXT)
def test_hostile_text_in_any_parameter_of_a_read_is_answered_as_documented(live, built_reads, data, text):
    template, name, where = data.draw(st.sampled_from(built_reads), label="parameter")
    path = template.replace("{" + name + "}", quote(text, safe="")) if where == "path" else template
    path = re.sub(r"\{[a-z_]+_id\}", SAMPLE_ID, path)
    response = live.get(path, params={name: text} if where == "query" else None, timeout=30)
    if where == "path" and (response.status_code == 404 or "/" in text):
        # An unknown id; or, since the server decodes %2F, another address ("0/resume": a 405).
        assert response.status_code < 500 and response.headers["Content-Type"] == "application/json"
        return
    assert_conforms(response, "GET", template)
