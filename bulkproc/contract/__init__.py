"""The contract written once: the documents the service answers and the bodies it reads, as typed models.

The views send the models' JSON, the webhooks and event streams carry it, PATCH bodies are parsed
by them, and /openapi.json describes them (schemas.components()). Nothing here knows of Flask or
the store; every layer above may use it.
"""

from .bodies import RowFix
from .documents import (
    BatchDocument,
    BatchFinished,
    BatchList,
    BatchSummary,
    Error,
    ErrorDetail,
    FileReading,
    Health,
    ImportBatch,
    ImportDocument,
    ImportFinished,
    ImportList,
    ImportSummary,
    Ready,
    RowDocument,
    Validation,
    ValidationRow,
)

__all__ = ["BatchDocument", "BatchFinished", "BatchList", "BatchSummary", "Error", "ErrorDetail", "FileReading",
           "Health", "ImportBatch", "ImportDocument", "ImportFinished", "ImportList", "ImportSummary", "Ready",
           "RowDocument", "RowFix", "Validation", "ValidationRow"]
