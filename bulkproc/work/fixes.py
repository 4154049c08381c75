"""Fixing a failed row in place: new values checked by the CSV rules, kept for the next resume."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..contract import RowFix
from ..errors import BatchConflict, RowNotFound, RowRefused
from ..files import rules
from ..files.problems import MAX_LISTED_PROBLEMS, quoted, shortened
from ..states import RUNNING, BatchStatus, RowStatus
from ..store import Batch, Row, Store
from .documents import reported_status

FIELDS = tuple(RowFix.model_fields)
# What a fixed row reads until a resume creates it: the upstream's old reason no longer applies.
FIXED_ERROR = "Changed since it failed; resume the batch to create it with the new values."


def changes_from(body: dict[str, Any], row: int) -> dict[str, str]:
    """The fields a PATCH body asks to change, read by the contract's RowFix (a null phone meaning
    none); RowRefused naming each field that is unknown or not a string, at most MAX_LISTED_PROBLEMS
    of them like a file's problems."""
    # Unknown keys are named here, in the body's order: pydantic cannot name a key that holds a lone
    # surrogate (it refuses the whole object), and its words are not the service's.
    problems = {key: f"{quoted(key)} is not a field of a row; only name, address and phone can be changed."
                for key in body if key not in RowFix.model_fields}
    try:
        fix = RowFix.model_validate({key: value for key, value in body.items() if key not in problems})
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0])
            problems[field] = f"The {field} must be a string (an empty string or null clears a phone)."
    if problems:
        order = {key: n for n, key in enumerate(body)}
        raise RowRefused(f"Row {row} was not changed: the body has fields that cannot be used.",
                         _capped(row, sorted(problems.items(), key=lambda problem: order[problem[0]])))
    if not fix.model_fields_set:
        raise RowRefused("Send at least one of the fields name, address and phone.",
                         [{"row": row, "column": None, "message": "The body is an empty object."}])
    return fix.changes()


def _capped(row: int, problems: list[tuple[str, str]]) -> list[dict[str, int | str | None]]:
    """The details of `problems`, the first MAX_LISTED_PROBLEMS and a line counting the rest."""
    details: list[dict[str, int | str | None]] = [
        {"row": row, "column": key if key in FIELDS else shortened(key), "message": message}
        for key, message in problems[: MAX_LISTED_PROBLEMS]]
    hidden = len(problems) - MAX_LISTED_PROBLEMS
    if hidden > 0:
        details.append({"row": row, "column": None,
                        "message": f"{hidden} more fields cannot be used; send only name, address and phone."})
    return details


def fix_row(store: Store, batch: Batch, number: int, changes: dict[str, str], now: float) -> None:
    """Give failed row `number` of `batch` new values; RowNotFound, BatchConflict when it cannot
    change now, RowRefused when the CSV rules refuse the values or they duplicate another row."""
    row = next((r for r in batch.rows if r.row == number), None)
    if row is None:
        raise RowNotFound(batch.id, number)
    _check_changeable(batch, row, now)
    current = {"name": row.name, "address": row.address, "phone": row.phone or ""}
    fixed = _checked(number, {**current, **changes})
    # The duplicate check runs in the store's transaction, against the rows as they are committed:
    # two fixes at once cannot both pass it against a snapshot read before either was written.
    if not store.fix_row(batch.id, number, fixed.name, fixed.address, fixed.phone, FIXED_ERROR,
                         check=lambda others: _refuse_duplicate(number, fixed, others)):
        raise BatchConflict(f"Batch {batch.id} changed meanwhile (a resume or a rollback started); "
                            "reload it and try again.")


def _refuse_duplicate(number: int, fixed: rules.HospitalRow, others: list[Row]) -> None:
    """RowRefused when `fixed` would duplicate one of the `others`, naming it."""
    twin = _duplicate_of(fixed, others)
    if twin is not None:
        raise RowRefused(f"Row {number} was not changed: it would duplicate row {twin}.", [
            {"row": number, "column": None,
             "message": f"Row {twin} has the same name and address; change the name or the address."}])


def _check_changeable(batch: Batch, row: Row, now: float) -> None:
    status = reported_status(batch, now)
    if status in RUNNING:
        raise BatchConflict(f"Batch {batch.id} is {status}; change its rows once it has stopped.")
    if status == BatchStatus.ROLLED_BACK:
        raise BatchConflict(f"Batch {batch.id} was rolled back; upload the rows again instead.")
    if row.status != RowStatus.FAILED:
        raise BatchConflict(f"Row {row.row} is {row.status}; only a failed row can be changed.")


def _checked(number: int, values: dict[str, str]) -> rules.HospitalRow:
    """The row as an upload would read it, or RowRefused with the problems under its real number."""
    if not any(value.strip() for value in values.values()):
        # An upload skips a blank line, so the file rules would see no row at all here.
        raise RowRefused(f"Row {number} was not changed: the values are refused.", [
            {"row": number, "column": column, "message": f"The {column} is empty; every hospital needs one."}
            for column in ("name", "address")])
    inspection = rules.inspect_table([list(FIELDS), [values[f] for f in FIELDS]], max_rows=1)
    if not inspection.valid:
        raise RowRefused(f"Row {number} was not changed: the values are refused.",
                         [_detail(number, problem) for problem in inspection.problems])
    (parsed,) = inspection.rows
    return parsed


def _detail(number: int, problem: rules.Problem) -> dict[str, int | str | None]:
    """A problem of the fixed values, under the row's own number (no line: the values come from no file)."""
    return {"row": number, "column": problem.column, "message": problem.message}


def _duplicate_of(fixed: rules.HospitalRow, others: list[Row]) -> int | None:
    """The number of the first other row an upload would call a duplicate of `fixed`, if any."""
    candidate = [fixed.name, fixed.address, fixed.phone or ""]
    for other in others:
        pair = [list(FIELDS), [other.name, other.address, other.phone or ""], candidate]
        # The candidate passes alone, so a problem of its own here comes from the pairing.
        if any(problem.row == 2 for problem in rules.inspect_table(pair, max_rows=2).problems):
            return other.row
    return None
