"""Workbooks (.xlsx, .xls, .ods): read by python-calamine in a child process bounded in memory and time.

calamine builds a sheet as one dense grid: a small file naming a cell at XFD1048576 asks for
hundreds of gigabytes and aborts the process that asked. So the reading happens in a child
process with its own address-space and CPU limits and a wall-clock timeout; the web worker only
ever sees rows of text, or a refusal. Zip bombs are refused before any child starts, from the
sizes the archive declares.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass, field

from .problems import Problem, quoted

log = logging.getLogger(__name__)

MAX_COLUMNS = 50
MAX_UNPACKED_BYTES = 64 * 2**20
# Deflate's best is about 1000:1; a sheet of real data packs about 10:1, padding about 100:1.
MAX_RATIO = 200
RATIO_FLOOR_BYTES = 4 * 2**20
MAX_ENTRIES = 10_000
MAX_TEXT_CHARACTERS = 4 * 2**20
CHILD_MEMORY_BYTES = 512 * 2**20
CHILD_CPU_SECONDS = 5
CHILD_WAIT_SECONDS = 8.0
MAX_LISTED_SHEETS = 30
MAX_NAMED_SHEETS = 6
# Reading a workbook costs a process; a few at once per worker are plenty.
_CHILDREN = threading.BoundedSemaphore(2)
_SAVE_AS = "save the sheet as CSV UTF-8 and upload that"

_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, KeyError,
               NotImplementedError)
_OPENDOCUMENT = "application/vnd.oasis.opendocument."


@dataclass(frozen=True)
class Sheet:
    """The rows of one sheet as text (with their sheet row numbers), or why it cannot be read."""

    name: str | None = None
    names: list[str] = field(default_factory=list)
    records: list[tuple[int, list[str]]] = field(default_factory=list)
    # Non-blank rows counted beyond the records kept.
    more: int = 0
    problem: Problem | None = None


def zip_kind(data: bytes) -> tuple[str | None, str | None]:
    """Return (workbook format, None) for an .xlsx/.ods archive, else (None, what the archive is)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = {info.filename: info for info in archive.infolist()[: MAX_ENTRIES + 1]}
            if "mimetype" in entries and entries["mimetype"].file_size <= 100:
                mimetype = archive.open("mimetype").read(100).decode("ascii", "replace").strip()
            else:
                mimetype = ""
    except _ZIP_ERRORS:
        return None, "a damaged zip archive"
    if "xl/workbook.xml" in entries:
        return "xlsx", None
    if "xl/workbook.bin" in entries:
        return "xlsb", None
    if mimetype == _OPENDOCUMENT + "spreadsheet":
        return "ods", None
    return None, _other_archive(entries, mimetype)


def _other_archive(entries: dict[str, zipfile.ZipInfo], mimetype: str) -> str:
    if "word/document.xml" in entries:
        return "a Word document (.docx)"
    if "ppt/presentation.xml" in entries:
        return "a PowerPoint presentation (.pptx)"
    if mimetype.startswith(_OPENDOCUMENT):
        return "an OpenDocument " + mimetype[len(_OPENDOCUMENT):].split("-")[0] + " document"
    if "Index/Document.iwa" in entries:
        return "an Apple Numbers, Pages or Keynote file"
    return "a zip archive that is not a workbook"


def unpacking_problem(data: bytes) -> Problem | None:
    """Why an archive would unpack to too much (by the sizes it declares), or None."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except _ZIP_ERRORS:
        return Problem(None, None, f"The workbook is damaged and cannot be read; {_SAVE_AS}.")
    total = sum(info.file_size for info in infos)
    packed = [info for info in infos
              if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1)]
    if len(infos) > MAX_ENTRIES or total > MAX_UNPACKED_BYTES or packed:
        return Problem(None, None, (
            f"The workbook unpacks to {total // 2**20} MiB in {len(infos)} parts, more than it may "
            f"({MAX_UNPACKED_BYTES // 2**20} MiB); {_SAVE_AS}."))
    return None


def read(data: bytes, sheet: str | None, max_records: int) -> Sheet:
    """Return the rows of the sheet named `sheet` (else the first), keeping at most `max_records`."""
    params = {"sheet": sheet, "max_records": max_records, "max_columns": MAX_COLUMNS,
              "max_text": MAX_TEXT_CHARACTERS, "max_sheets": MAX_LISTED_SHEETS}
    payload = json.dumps(params).encode() + b"\n" + data
    with _CHILDREN:
        try:
            done = subprocess.run([sys.executable, "-I", "-c", _child()], input=payload, capture_output=True,
                                  timeout=CHILD_WAIT_SECONDS, env={"RUST_BACKTRACE": "0"}, check=False)
        except subprocess.TimeoutExpired:
            return Sheet(problem=Problem(None, None, f"The workbook takes too long to read; {_SAVE_AS}."))
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        # The child died: out of its memory (a sheet spanning millions of cells) or CPU, or calamine panicked.
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        log.warning("a workbook could not be read (exit %s): %s", done.returncode, last[0][:200])
        return Sheet(problem=Problem(None, None, (
            "The workbook cannot be read in the memory and time an upload may take (its sheet spans "
            f"too many cells, or it is damaged); {_SAVE_AS}.")))
    return _sheet(answer)


def _sheet(answer: dict) -> Sheet:
    error = answer.get("error")
    names = answer.get("sheets", [])
    if error is None:
        return Sheet(answer["sheet"], names, [(line, cells) for line, cells in answer["rows"]], answer["more"])
    return Sheet(answer.get("sheet"), names, problem=Problem(None, None, _message(answer), answer.get("line")))


def _message(answer: dict) -> str:
    error = answer["error"]
    if error == "columns":
        return (f"Row {answer['line']} of the sheet has {answer['width']} columns, but a sheet may have at most "
                f"{MAX_COLUMNS}; delete the columns you do not need, or {_SAVE_AS}.")
    if error == "no_sheet":
        shown = ", ".join(quoted(name, 40) for name in answer["sheets"][:MAX_NAMED_SHEETS])
        shown += " and more" if len(answer["sheets"]) > MAX_NAMED_SHEETS else ""
        return f"The workbook has no sheet {quoted(answer['sheet'], 40)}; its sheets are {shown}."
    if error == "password":
        return f"The workbook is protected by a password; remove the password, or {_SAVE_AS}."
    if error == "text":
        return (f"The sheet holds more than {MAX_TEXT_CHARACTERS // 2**20} million characters of text, "
                "more than an upload may; keep only the hospitals in it.")
    if error == "empty":
        return "The workbook has no sheets; add the hospitals to a sheet and upload it again."
    return f"The workbook is damaged or of a kind that cannot be read; {_SAVE_AS}."


def _child() -> str:
    """The child's program, with the limits as they are now."""
    return _LIMITS.format(memory=CHILD_MEMORY_BYTES, cpu=CHILD_CPU_SECONDS) + _READER


# The child: limits first, then calamine. It reads its parameters as one JSON line, then the
# workbook's bytes, from stdin, and answers one JSON document on stdout.
_LIMITS = """
import resource
for limit, value in ((resource.RLIMIT_AS, {memory}), (resource.RLIMIT_CPU, {cpu})):
    try:
        resource.setrlimit(limit, (value, value))
    except (ValueError, OSError):  # a system that cannot lower it: the parent's timeout still holds
        pass
"""
_READER = """
import datetime, io, json, math, sys
import python_calamine as calamine

def text(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".15g")
    if isinstance(value, datetime.datetime):
        if value.time() == datetime.time():
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)

def answer(document):
    sys.stdout.write(json.dumps(document))
    sys.exit(0)

params = json.loads(sys.stdin.buffer.readline())
data = sys.stdin.buffer.read()
try:
    book = calamine.CalamineWorkbook.from_filelike(io.BytesIO(data))
except calamine.PasswordError:
    answer({"error": "password"})
except Exception:
    answer({"error": "unreadable"})
names = [name[:100] for name in book.sheet_names[: params["max_sheets"]]]
if not book.sheet_names:
    answer({"error": "empty"})
wanted = params["sheet"]
if wanted is None:
    visible = [m.name for m in book.sheets_metadata if m.visible == calamine.SheetVisibleEnum.Visible]
    wanted = (visible or book.sheet_names)[0]
elif wanted not in book.sheet_names:
    answer({"error": "no_sheet", "sheet": wanted, "sheets": names})
try:
    sheet = book.get_sheet_by_name(wanted)
except Exception:
    answer({"error": "unreadable", "sheet": wanted, "sheets": names})
# iter_rows yields every row from the sheet's first (its leading blank rows too), so the
# index counts sheet rows; its cells start at the first column that holds anything.
rows, more, characters = [], 0, 0
for index, values in enumerate(sheet.iter_rows()):
    cells = [text(value) for value in values]
    width = len(cells)
    while width and not cells[width - 1].strip():
        width -= 1
    if not width:
        continue
    line = index + 1
    if width > params["max_columns"]:
        answer({"error": "columns", "line": line, "width": width, "sheet": wanted, "sheets": names})
    if len(rows) >= params["max_records"]:
        more += 1
        continue
    characters += sum(map(len, cells[:width]))
    if characters > params["max_text"]:
        answer({"error": "text", "sheet": wanted, "sheets": names})
    rows.append([line, cells[:width]])
answer({"sheet": wanted, "sheets": names, "rows": rows, "more": more})
"""
