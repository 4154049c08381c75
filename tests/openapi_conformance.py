"""Hold a real response to the OpenAPI document: documented status, content type, headers, schema.

Schemas are checked closed: every object of the document admits only the fields it describes,
so a field the document forgets fails as surely as a missing one.
"""

import json

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bulkproc.web import openapi

DOCUMENT = openapi.document()


def _closed(node):
    """A copy of the schema tree in which every object with properties admits no other field."""
    if isinstance(node, list):
        return [_closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    closed = {k: _closed(v) for k, v in node.items()}
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


_STRICT = _closed(DOCUMENT)
_REGISTRY = Registry().with_resource("urn:bulkproc", Resource.from_contents(_STRICT, DRAFT202012))


def _follow(node):
    """The object a `$ref` inside the document points at (followed until there is none)."""
    while isinstance(node, dict) and "$ref" in node:
        target = _STRICT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def validate(body, schema):
    """Assert that `body` is valid against `schema` (a `$ref` into the document, or a schema of it)."""
    ref = schema["$ref"] if "$ref" in schema else None
    root = {"$ref": "urn:bulkproc" + ref} if ref else schema
    validator = Draft202012Validator(root, registry=_REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER)
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}" for e in validator.iter_errors(body)]
    assert not problems, "\n".join(problems)


def assert_conforms(response, method, template, *, operation=None):
    """Check a requests.Response against the documented operation `method template`; return its JSON
    (for an event stream, the documents its events carry), if any."""
    if operation is None:
        operation = DOCUMENT["paths"][template][method.lower()]
    status = str(response.status_code)
    where = f"{method} {template} ({response.url}) answered {status}"
    assert status in operation["responses"], f"{where}, which is not documented: {response.text[:500]}"
    documented = _follow(operation["responses"][status])
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    assert media_type in documented.get("content", {}), f"{where} as {media_type!r}, not documented"
    for name, header in documented.get("headers", {}).items():
        if _follow(header).get("required"):
            assert name in response.headers, f"{where} without its {name} header"
    schema = documented["content"][media_type]["schema"]
    if media_type == "application/json":
        body = response.json()
        validate(body, schema)
        return body
    if media_type == "text/event-stream":
        events = [json.loads(line.removeprefix("data: ")) for line in response.text.splitlines()
                  if line.startswith("data: ")]
        for event in events:
            validate(event, _follow(schema)["properties"]["data"]["contentSchema"])
        return events
    return None
