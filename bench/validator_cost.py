"""The CSV validator's cost per byte on adversarial inputs, as the input doubles up to about 1 MiB.

Each family builds a file of a given size meant to make a careless check slow (a run of
spaces in a phone, doubled quotes, long fields, many columns, many rows, combining marks,
invisible characters). For each size it times `csv_input.inspect` in CPU seconds of this
process (the best of a few runs, so that other processes on a shared machine weigh less), and
prints the cost per byte at each size and the ratio of the cost per byte at the largest size to
the smallest. About 1 means linear; a quadratic check doubles its cost per byte at every
doubling, a ratio of about 128 from 8 KiB to 1 MiB.

Families that hold their payload in one cell stop at 128 KiB: Python's csv module refuses a
field over 131,072 characters before any check runs (the file is then refused as unreadable).

Run: .venv/bin/python bench/validator_cost.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bulkproc.files.rules import inspect  # noqa: E402

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


def seconds_for(data: bytes) -> float:
    """Return the least CPU time of a few runs of inspect over `data`."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.process_time()
        inspect(data, MAX_ROWS)
        best = min(best, time.process_time() - start)
    return best


def measure(build: Callable[[int], bytes], largest: int) -> list[tuple[int, float]]:
    """Return (bytes, nanoseconds per byte) for sizes doubling from SMALLEST to `largest`."""
    figures = []
    size = SMALLEST
    while size <= largest:
        data = build(size)
        figures.append((len(data), seconds_for(data) * 1e9 / len(data)))
        size *= 2
    return figures


def main() -> None:
    print(f"{'family':28} {'smallest':>16} {'largest':>18} {'ratio':>6}   ns/byte at each size")
    for name, (build, largest) in FAMILIES.items():
        figures = measure(build, largest)
        (small, small_cost), (big, big_cost) = figures[0], figures[-1]
        costs = " ".join(f"{cost:.0f}" for _, cost in figures)
        print(f"{name:28} {small:>7} B {small_cost:5.0f} ns {big:>9} B {big_cost:5.0f} ns "
              f"{big_cost / small_cost:6.2f}   {costs}")


if __name__ == "__main__":
    main()
