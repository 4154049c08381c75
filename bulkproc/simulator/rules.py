"""The upstream's rules, pure: its operations, the batch cap, and request bodies and paths validated like FastAPI."""

from __future__ import annotations

import json
import uuid
from typing import Any

BATCH_CAP = 20
OPS = frozenset(
    {"health", "list", "create", "get", "update", "delete", "list_batch", "activate", "delete_batch"}
)


class Invalid(Exception):
    """A request failed validation; carries FastAPI-style error entries."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


def error_entry(kind: str, loc: list[Any], msg: str, value: Any) -> dict[str, Any]:
    """Build one FastAPI validation error entry."""
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """Decode a request body into a JSON object, or raise Invalid like FastAPI does."""
    if not raw.strip():
        raise Invalid([error_entry("missing", ["body"], "Field required", None)])
    try:
        body = json.loads(raw)
    except ValueError as exc:
        position = getattr(exc, "pos", 0)
        raise Invalid([{**error_entry("json_invalid", ["body", position], "JSON decode error", {}),
                        "ctx": {"error": getattr(exc, "msg", str(exc))}}]) from None
    if not isinstance(body, dict):
        raise Invalid([error_entry("model_attributes_type", ["body"],
                                   "Input should be a valid dictionary or object to extract fields from", body)])
    return body


def _text_errors(body: dict[str, Any], field: str, required: bool) -> list[dict[str, Any]]:
    loc = ["body", field]
    if field not in body:
        return [error_entry("missing", loc, "Field required", body)] if required else []
    value = body[field]
    if value is None and not required:
        return []
    if not isinstance(value, str):
        return [error_entry("string_type", loc, "Input should be a valid string", value)]
    if not value.strip():
        message = f"Value error, {field.capitalize()} cannot be empty or whitespace"
        return [{**error_entry("value_error", loc, message, value), "ctx": {"error": {}}}]
    return []


def normalize_uuid(value: Any) -> str | None:
    """Return the canonical text of a UUID, or None when value is not one."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        return None


def _batch_id_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("creation_batch_id")
    if value is None or normalize_uuid(value) is not None:
        return []
    return [error_entry("uuid_parsing", ["body", "creation_batch_id"], "Input should be a valid UUID", value)]


def parse_create(raw: bytes) -> dict[str, Any]:
    """Validate a create body into name, address, phone, creation_batch_id, or raise Invalid."""
    body = parse_json_body(raw)
    errors = (_text_errors(body, "name", True) + _text_errors(body, "address", True)
              + _phone_errors(body) + _batch_id_errors(body))
    if errors:
        raise Invalid(errors)
    return {"name": body["name"], "address": body["address"], "phone": body.get("phone"),
            "creation_batch_id": normalize_uuid(body.get("creation_batch_id"))}


def _phone_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("phone")
    if value is None or isinstance(value, str):
        return []
    return [error_entry("string_type", ["body", "phone"], "Input should be a valid string", value)]


def parse_update(raw: bytes) -> dict[str, Any]:
    """Validate an update body into the fields it sets, or raise Invalid."""
    body = parse_json_body(raw)
    errors = _text_errors(body, "name", False) + _text_errors(body, "address", False) + _phone_errors(body)
    if errors:
        raise Invalid(errors)
    changes = {key: body[key] for key in ("name", "address") if body.get(key) is not None}
    if "phone" in body:
        changes["phone"] = body["phone"]
    return changes


def parse_hospital_id(raw: str) -> int:
    """Turn a path segment into a hospital id, or raise Invalid."""
    try:
        return int(raw)
    except ValueError:
        raise Invalid([error_entry("int_parsing", ["path", "hospital_id"],
                                   "Input should be a valid integer, unable to parse string as an integer",
                                   raw)]) from None


def parse_batch_id(raw: str) -> str:
    """Turn a path segment into a canonical batch id, or raise Invalid."""
    batch_id = normalize_uuid(raw)
    if batch_id is None:
        raise Invalid([error_entry("uuid_parsing", ["path", "batch_id"], "Input should be a valid UUID", raw)])
    return batch_id
