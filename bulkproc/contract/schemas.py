"""The JSON schemas of the contract's models, as /openapi.json's `components.schemas` holds them."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema

from . import bodies, documents

REF_TEMPLATE = "#/components/schemas/{model}"

# What the service answers (described as it serializes them) and what it reads.
ANSWERED: tuple[type[BaseModel], ...] = (
    documents.Error, documents.BatchDocument, documents.BatchList, documents.ImportDocument,
    documents.ImportList, documents.Validation, documents.Health, documents.Ready,
    documents.BatchFinished, documents.ImportFinished)
READ: tuple[type[BaseModel], ...] = (bodies.RowFix,)


class ContractJsonSchema(GenerateJsonSchema):
    """pydantic's schemas without a title on every field: the field's name says it."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


@cache
def _generated() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((m, "serialization") for m in ANSWERED), *((m, "validation") for m in READ)]
    _, top = models_json_schema(models, ref_template=REF_TEMPLATE, schema_generator=ContractJsonSchema)
    return top["$defs"]


def components() -> dict[str, Any]:
    """Every model of the contract, and the enums they use, by name: the schemas of /openapi.json."""
    return copy.deepcopy(_generated())
