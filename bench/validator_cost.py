"""The file validator's cost per byte on adversarial inputs and every reader, as the input doubles up to about 1 MiB.

Each family builds a file of a given size meant to make a careless check slow (a run of
spaces in a phone, doubled quotes, long fields, many columns, many rows, combining marks,
invisible characters). For each size it times `csv_input.inspect` in CPU seconds of this
process (the best of a few runs, so that other processes on a shared machine weigh less), and
prints the cost per byte at each size and the ratio of the cost per byte at the largest size to
the smallest. About 1 means linear; a quadratic check doubles its cost per byte at every
doubling, a ratio of about 128 from 8 KiB to 1 MiB.

Families that hold their payload in one cell stop at 128 KiB: Python's csv module refuses a
field over 131,072 characters before any check runs (the file is then refused as unreadable).

The readers of issue 14 have families too: `;`, tab and `|` files, UTF-16, a named encoding, an
address in parts, many ignored columns, and .xlsx/.ods/.xls workbooks (read in a child process,
whose CPU time is counted with this one's). Last, the wall time of reading a 1,000-row workbook
of each kind (the import limit), which should stay under 0.5 s.

Run: .venv/bin/python bench/validator_cost.py [words of family names, or workbook]
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bulkproc.files.rules import ReadOptions, inspect  # noqa: E402
from tests import spreadsheets  # noqa: E402

SMALLEST = 8 * 1024
LARGEST = 1024 * 1024
ONE_CELL_LARGEST = 128 * 1024
REPEATS = 5
# The row limit does not change the work done per row; a large one keeps every row on the path.
MAX_ROWS = 1_000_000
# Two combining marks of different classes, which CPython's normalisation has to reorder.
MARKS = "\u0301\u0316"


def _fill(line: Callable[[int], bytes], size: int) -> bytes:
    """Return lines line(0), line(1), ... up to about `size` bytes."""
    parts: list[bytes] = []
    length = n = 0
    while length < size:
        part = line(n)
        parts.append(part)
        length += len(part)
        n += 1
    return b"".join(parts)


FAMILIES: dict[str, tuple[Callable[[int], bytes], int]] = {
    "spaces in one phone": (lambda size: b"A,1 Main St,1" + b" " * size + b"234567\n", ONE_CELL_LARGEST),
    "spaces in many phones": (
        lambda size: _fill(lambda n: b"H%d,1 Main St,1%s234567\n" % (n, b" " * 30), size), LARGEST,
    ),
    "spaces before an extension": (
        lambda size: _fill(lambda n: b"H%d,1 Main St,5550100%sx12\n" % (n, b" " * 25), size), LARGEST,
    ),
    "doubled quotes in one cell": (lambda size: b'A,"' + b'""' * (size // 2) + b'"\n', ONE_CELL_LARGEST),
    "quotes everywhere": (lambda size: _fill(lambda n: b'"H""%d""","""1"" Main",""""\n' % n, size), LARGEST),
    "one long name": (lambda size: b"N" * size + b",1 Main St\n", ONE_CELL_LARGEST),
    "long fields in many rows": (
        lambda size: _fill(lambda n: b"%d%s,%s,%s\n" % (n, b"N" * 300, b"A" * 300, b"9" * 100), size), LARGEST,
    ),
    "many header columns": (lambda size: b"name,address" + b",z" * (size // 2) + b"\nA,1 Main St\n", LARGEST),
    "many trailing empty cells": (lambda size: b"A,1 Main St" + b"," * size + b"\n", LARGEST),
    "many rows": (lambda size: _fill(lambda n: b"Hospital %d,%d Main St,555-010-%04d\n" % (n, n, n % 10_000), size),
                  LARGEST),
    "30 combining marks a name": (
        lambda size: _fill(lambda n: f"H{n}{MARKS * 15},1 Main St\n".encode(), size), LARGEST,
    ),
    "790 combining marks a cell": (
        lambda size: _fill(lambda n: f"H{n}{MARKS * 395},1 Main St\n".encode(), size), LARGEST,
    ),
    "invisible characters": (
        lambda size: _fill(lambda n: f"\u202eH{n}\x1b[0m,=1\u2066 Main\x00,\x9b1\n".encode(), size), LARGEST,
    ),
}


def _rows(n: int) -> list[list[object]]:
    return [[f"Hospital {i}", f"{i} Main St", "Springfield", 5550000 + i % 10_000] for i in range(n)]


def _workbook(write: Callable[[list], bytes], size: int) -> bytes:
    """A workbook of hospitals of about `size` bytes: its rows scaled from a small one's size."""
    header = [["Hospital Name", "Street", "City", "Phone"]]
    rows = 200
    for _ in range(2):  # packing improves with size: scale twice to come near `size`
        data = write(header + _rows(rows))
        rows = max(1, rows * size // len(data))
    return write(header + _rows(rows))


def _text_rows(delimiter: str, size: int) -> bytes:
    line = delimiter.join(["Hospital %d", "%d Main St", "555-010-%04d"])
    return _fill(lambda n: (line % (n, n, n % 10_000) + "\n").encode(), size)


ENCODINGS: dict[str, str] = {"windows-1252 named": "windows-1252"}

FAMILIES.update({
    "semicolons": (lambda size: _text_rows(";", size), LARGEST),
    "tabs": (lambda size: _text_rows("\t", size), LARGEST),
    "pipes": (lambda size: _text_rows("|", size), LARGEST),
    "utf-16 with tabs": (lambda size: "\ufeff".encode("utf-16-le") + _text_rows("\t", size // 2).decode()
                         .encode("utf-16-le"), LARGEST),
    "windows-1252 named": (lambda size: _fill(lambda n: f"Hôpital {n};{n} rue de l'Église\n".encode("cp1252"), size),
                           LARGEST),
    "address in parts": (lambda size: b"Hospital;Street;Suite;City;State;Zip;Tel\n" + _fill(
        lambda n: b"H%d;%d Main St;Suite %d;Springfield;IL;62701;555-010-%04d\n" % (n, n, n, n % 10_000), size),
                         LARGEST),
    "40 ignored columns": (lambda size: b"name,address," + b",".join(b"c%d" % i for i in range(40)) + b"\n" + _fill(
        lambda n: b"H%d,%d Main St," % (n, n) + b"x," * 39 + b"x\n", size), LARGEST),
    "xlsx": (lambda size: _workbook(spreadsheets.xlsx, size), LARGEST),
    "ods": (lambda size: _workbook(spreadsheets.ods, size), LARGEST),
    "xls": (lambda size: _workbook(spreadsheets.xls, size), LARGEST // 2),
})


def _cpu() -> float:
    """CPU seconds of this process and of the children it waited for (the workbook reader)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def seconds_for(data: bytes, options: ReadOptions | None = None) -> float:
    """Return the least CPU time of a few runs of inspect over `data`."""
    best = float("inf")
    for _ in range(REPEATS):
        start = _cpu()
        inspect(data, MAX_ROWS, options)
        best = min(best, _cpu() - start)
    return best


def workbook_seconds() -> dict[str, float]:
    """The best wall time of reading a 1,000-row workbook of each kind, at the import's row limit."""
    header = [["Hospital Name", "Street", "City", "Phone"]]
    seconds = {}
    for kind, write in (("xlsx", spreadsheets.xlsx), ("ods", spreadsheets.ods), ("xls", spreadsheets.xls)):
        data = write(header + _rows(1000))
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter()
            inspection = inspect(data, 1000)
            best = min(best, time.perf_counter() - start)
        assert inspection.valid and inspection.total == 1000, inspection.problems[:3]
        seconds[kind] = best
    return seconds


def measure(build: Callable[[int], bytes], largest: int, options: ReadOptions | None = None) -> list[tuple[int, float]]:
    """Return (bytes, nanoseconds per byte) for sizes doubling from SMALLEST to `largest`."""
    figures = []
    size = SMALLEST
    while size <= largest:
        data = build(size)
        figures.append((len(data), seconds_for(data, options) * 1e9 / len(data)))
        size *= 2
    return figures


def main() -> None:
    print(f"{'family':28} {'smallest':>16} {'largest':>18} {'ratio':>6}   ns/byte at each size")
    only = sys.argv[1:]
    for name, (build, largest) in FAMILIES.items():
        if only and not any(word in name for word in only):
            continue
        encoding = ENCODINGS.get(name)
        figures = measure(build, largest, ReadOptions(encoding=encoding) if encoding else None)
        (small, small_cost), (big, big_cost) = figures[0], figures[-1]
        costs = " ".join(f"{cost:.0f}" for _, cost in figures)
        print(f"{name:28} {small:>7} B {small_cost:5.0f} ns {big:>9} B {big_cost:5.0f} ns "
              f"{big_cost / small_cost:6.2f}   {costs}")
    if not only or "workbook" in only:
        for kind, seconds in workbook_seconds().items():
            print(f"a 1,000-row {kind} workbook is read in {seconds:.3f} s (the aim: under 0.5 s)")


if __name__ == "__main__":
    main()
