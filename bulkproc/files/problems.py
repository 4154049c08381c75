"""What a refused file is told: problems naming the data row, the column and the line, kept small."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_LISTED_PROBLEMS = 100
QUOTED_PREFIX = 24

# C0 controls except the line breaks a quoted field may hold, DEL, C1 controls, the bidi
# embeddings, overrides and isolates that can make text read differently than it is stored, and
# lone surrogates (a JSON body can carry them; no store can keep them).
INVISIBLE = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


@dataclass(frozen=True)
class Problem:
    """One reason a file is refused; row, column and line are None when they do not apply.

    `row` counts data rows from 1; `line` is the line of the text file, or the sheet row of a
    workbook, where a person finds it in their program.
    """

    row: int | None
    column: str | None
    message: str
    line: int | None = None

    def as_dict(self) -> dict[str, int | str | None]:
        """Return the problem in the shape of an error detail."""
        return {"row": self.row, "column": self.column, "message": self.message, "line": self.line}


@dataclass
class Problems:
    """Problems in the order found, keeping the first `limit` and counting the rest."""

    limit: int = MAX_LISTED_PROBLEMS
    kept: list[Problem] = field(default_factory=list)
    hidden: int = 0

    def add(self, problem: Problem) -> None:
        """Keep `problem` while there is room, count it otherwise."""
        if len(self.kept) < self.limit:
            self.kept.append(problem)
        else:
            self.hidden += 1

    @property
    def count(self) -> int:
        """Every problem added, kept or not."""
        return len(self.kept) + self.hidden


def listed(groups: list[Problems]) -> list[Problem]:
    """Return the first problems of the groups in order, then one line counting the ones left out."""
    found = Problems()
    for group in groups:
        for problem in group.kept:
            found.add(problem)
        found.hidden += group.hidden
    if found.hidden:
        message = f"{found.hidden} more problems are not listed; fix the ones listed and check again."
        found.kept.append(Problem(None, None, message))
    return found.kept


def quoted(text: str, prefix: int = QUOTED_PREFIX) -> str:
    """Return a short, printable quotation of user text for a message."""
    shown = INVISIBLE.sub("\ufffd", text[:prefix])
    return f'"{shown}…"' if len(text) > prefix else f'"{shown}"'


def shortened(text: str, prefix: int = QUOTED_PREFIX) -> str:
    """Return a prefix of a long cell, so that an answer never echoes it whole."""
    return text[:prefix] + "…" if len(text) > prefix else text
