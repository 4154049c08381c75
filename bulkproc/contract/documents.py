"""The documents the service answers: batches, imports, validations, errors, webhook payloads.

Each is a pydantic model whose fields are the contract's, in the contract's order; the views send
`model_dump(mode="json")` and /openapi.json describes the same classes. A field typed `| MISSING`
is left out of the JSON when it has no value, rather than sent as null.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import MISSING, BaseModel, ConfigDict, Field

from ..states import BatchStatus, ImportStatus, RowStatus

Count = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0)]
RowNumber = Annotated[int, Field(ge=1)]
Uuid = Annotated[str, Field(json_schema_extra={"format": "uuid"})]
Timestamp = Annotated[str, Field(description="ISO 8601, UTC.", json_schema_extra={"format": "date-time"})]
FileFormat = Literal["csv", "xlsx", "xlsb", "xls", "ods"]
Delimiter = Literal[",", ";", "\t", "|"]


class Document(BaseModel):
    """A document of the contract: its fields and no others."""

    model_config = ConfigDict(extra="forbid")


# -- errors -----------------------------------------------------------------------------------


class ErrorDetail(Document):
    """One problem of a request: where it is and what to do about it."""

    row: RowNumber | None = Field(description="Data row number, counting from 1; null when the problem is not "
                                              "about one row.")
    column: str | None = Field(description="Column or field name; null when none applies.")
    message: str = Field(description="What is wrong and how to fix it.")
    line: RowNumber | None | MISSING = Field(
        MISSING, description="The line of the text file, or the sheet row of a workbook, where the problem is; "
                             "null when none applies. Problems of a file only.")


class Error(Document):
    """Every error answers this document."""

    error: str = Field(description="One sentence.")
    details: list[ErrorDetail] = Field(description="May be empty.")


# -- batches ----------------------------------------------------------------------------------


class RowDocument(Document):
    """One row of a batch as it stands."""

    row: RowNumber = Field(description="The data row of the uploaded file.")
    hospital_id: int | None = Field(description="The upstream's id once created.")
    name: str
    status: RowStatus
    error: str | None = Field(description="Why the row failed; null otherwise.")


class _BatchHead(Document):
    batch_id: Uuid
    status: BatchStatus = Field(description="`partially_failed`, `failed` and `interrupted` batches can be "
                                            "resumed; `partially_activated` is final (finished without its "
                                            "failed rows).")
    total_hospitals: Count
    processed_hospitals: Count = Field(description="Rows that exist upstream.")
    failed_hospitals: Count = Field(description="Rows that do not.")
    processing_time_seconds: Seconds = Field(description="Wall time of the processing, every run added up.")
    batch_activated: bool
    error: str | None = Field(description="Why the batch stopped, when it did.")


class BatchDocument(_BatchHead):
    """A batch as it stands: counts so far and every row's state."""

    hospitals: list[RowDocument]
    created_at: Timestamp
    updated_at: Timestamp


class BatchSummary(_BatchHead):
    """A batch document without its rows."""

    created_at: Timestamp
    updated_at: Timestamp


class BatchList(Document):
    """Recent batches."""

    batches: list[BatchSummary] = Field(description="Newest first.")


# -- imports ----------------------------------------------------------------------------------


class ImportBatch(Document):
    """One batch of the import; its whole document is at /hospitals/bulk/{batch_id}."""

    batch_id: Uuid
    first_row: RowNumber
    last_row: RowNumber
    status: BatchStatus
    total_hospitals: Count
    processed_hospitals: Count
    failed_hospitals: Count
    batch_activated: bool
    created_at: Timestamp
    updated_at: Timestamp


class _ImportHead(Document):
    import_id: Uuid
    status: ImportStatus
    total_hospitals: Count
    processed_hospitals: Count
    failed_hospitals: Count
    processing_time_seconds: Seconds
    estimated_seconds_remaining: Seconds | None = Field(description="From the rate limit and what is left; "
                                                                    "null when final.")


class ImportDocument(_ImportHead):
    """An import: a file split into ordinary batches."""

    batches: list[ImportBatch] = Field(description="In file order.")
    created_at: Timestamp
    updated_at: Timestamp


class ImportSummary(_ImportHead):
    """An import document without its batches."""

    created_at: Timestamp
    updated_at: Timestamp


class ImportList(Document):
    """Recent imports."""

    imports: list[ImportSummary] = Field(description="Newest first.")


# -- validation -------------------------------------------------------------------------------


class ValidationRow(Document):
    """A row as it would be created."""

    row: RowNumber
    name: str
    address: str
    phone: str | None
    already_in_directory: int | None | MISSING = Field(
        MISSING, description="With `existing=skip` only: the id of the active hospital that already holds this "
                             "name and address, or null.")


class FileReading(Document):
    """How the file was read."""

    format: FileFormat | None = Field(description="What the bytes are; null when they are none of the formats "
                                                  "read.")
    encoding: str | MISSING = Field(MISSING, description="Text only: the encoding that read it (`utf-8`, "
                                                         "`utf-16`, or the `encoding` sent).")
    delimiter: Delimiter | MISSING = Field(MISSING, description="Text only.")
    sheet: str | MISSING = Field(MISSING, description="Workbooks only: the sheet read.")
    sheets: list[str] | MISSING = Field(MISSING, description="Workbooks only: every sheet, in order.")
    suggested_encoding: str | MISSING = Field(MISSING, description="Text that is not UTF-8: the encoding it "
                                                                   "most likely has, to send as `encoding`.")
    header: bool = Field(description="Whether the first row was read as a header.")
    columns: dict[str, str] = Field(description="Header cell -> field (name, address, address2, city, state, "
                                                "postal_code, phone).")
    ignored_columns: list[str] = Field(description="Header cells that were not read.")


class Validation(Document):
    """The verdict on a file; nothing is created."""

    valid: bool
    total_hospitals: Count = Field(description="Every data row of the file.")
    errors: list[ErrorDetail]
    hospitals: list[ValidationRow] = Field(description="The rows as they would be created; none when the file "
                                                       "is over the row limit.")
    file: FileReading


# -- the service ------------------------------------------------------------------------------


class Health(Document):
    """The process answers."""

    status: Literal["ok"]


class Ready(Document):
    """The job store answers."""

    status: Literal["ready"]


# -- webhooks ---------------------------------------------------------------------------------


class BatchFinished(Document):
    """Posted to BULKPROC_WEBHOOK_URL when a batch reaches a final state, signed as Standard Webhooks says."""

    type: Literal["batch.finished"]
    timestamp: Timestamp
    data: BatchDocument = Field(description="The batch's document in its final state.")


class ImportFinished(Document):
    """Posted to BULKPROC_WEBHOOK_URL when an import reaches a final state, signed as Standard Webhooks says."""

    type: Literal["import.finished"]
    timestamp: Timestamp
    data: ImportDocument = Field(description="The import's document in its final state.")
