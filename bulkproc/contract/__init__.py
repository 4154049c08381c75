"""The contract written once: the documents the service answers and the bodies it reads, as typed models.

The views send the models' JSON, the webhooks and event streams carry it, PATCH bodies are parsed
by them, and /openapi.json describes them (schemas.components()). The package knows the statuses
(states.py) and the file rules' limits, nothing of Flask or the store: web and work use it, the
store does not, and the command (bulkproc.cli) reads the same documents as plain JSON.
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
