"""The JSON body a client sends: new values for a failed row (`PATCH /hospitals/bulk/{batch_id}/rows/{row}`).

The model takes the types (strings; a null phone) and no other field. What the strings may hold
is the file rules' to judge, in their words (files/rules.py); the schema only tells a client the
gist of them, so that every value it describes is one the rules accept.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import MISSING, ConfigDict, Field

from ..files.rules import (
    FORMULA_STARTS,
    MAX_LENGTH,
    PHONE_MAX_DIGITS,
    PHONE_MAX_EXTENSION_DIGITS,
    PHONE_MAX_LENGTH,
    PHONE_MIN_DIGITS,
)
from .documents import Document

# The characters a cell may not hold (controls, text-direction marks), written for any regex dialect.
_INVISIBLE = r"\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069"
_FORMULA = "".join("\\" + c if c == "-" else c for c in FORMULA_STARTS)
# Trimmed, not empty, not a formula (nor one behind a quote), nothing invisible.
_TEXT = rf"^\s*'?[^\s'{_FORMULA}{_INVISIBLE}][^{_INVISIBLE}]*$"
_SEPARATORS = r"[ ().\-]*"
_EXTENSION = rf"(?:[xX#]|[eE][xX][tT](?:\.|[eE][nN][sS][iI][oO][nN])?) *[0-9]{{1,{PHONE_MAX_EXTENSION_DIGITS}}}"
# Empty (no phone), or digits with spaces and ( ) . -, a leading + and an extension at the end.
_PHONE = (rf"^(?:\s*|\(?\+?{_SEPARATORS}(?:[0-9]{_SEPARATORS}){{{PHONE_MIN_DIGITS},{PHONE_MAX_DIGITS}}}"
          rf"(?:{_EXTENSION})?)$")

Text = Annotated[str, Field(json_schema_extra={"maxLength": MAX_LENGTH, "pattern": _TEXT})]


class RowFix(Document):
    """New values for a failed row, checked by the file rules (`422` naming the field when refused)."""

    model_config = ConfigDict(strict=True, json_schema_extra={"minProperties": 1})

    name: Text | MISSING = MISSING
    address: Text | MISSING = MISSING
    phone: str | None | MISSING = Field(MISSING, description="Empty or null: no phone.",
                                        json_schema_extra={"maxLength": PHONE_MAX_LENGTH, "pattern": _PHONE})

    def changes(self) -> dict[str, str]:
        """The fields sent, a null phone as the empty one."""
        return {key: getattr(self, key) or "" for key in self.model_fields_set}
