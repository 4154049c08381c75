"""The first row that had each name and address of an upload: in memory for a few thousand rows,
in a temporary SQLite file beyond, so that checking a file of any size holds a bounded amount.

A key a row in a dict cost about 140 bytes a row (1.4 MB at 10,000 rows, the largest thing an
import's upload held; bench/import_scale.py). Past SPILL_AFTER keys they move to a file of their
own, deleted when the check ends, with a small page cache; the answers stay the same.
"""

from __future__ import annotations

import sqlite3

# Keys kept in memory before they move to a file: a batch, and most imports, never get there.
SPILL_AFTER = 2_000
# The file's page cache, in KiB (SQLite's default is 2 MiB).
CACHE_KIB = 256


class SeenPairs:
    """Answers, for each key in turn, the first row that had it; `close()` when done."""

    def __init__(self, spill_after: int | None = None) -> None:
        self._spill_after = SPILL_AFTER if spill_after is None else spill_after
        self._first: dict[str, int] = {}
        self._file: sqlite3.Connection | None = None

    def first_row(self, key: str, row: int) -> int:
        """The first row given `key`: `row` itself when no earlier one was."""
        if self._file is None:
            earlier = self._first.setdefault(key, row)
            if len(self._first) > self._spill_after:
                self._spill()
            return earlier
        stored = _stored(key)
        if self._file.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (stored, row)).rowcount:
            return row
        return self._file.execute("SELECT row FROM seen WHERE key = ?", (stored,)).fetchone()[0]

    def _spill(self) -> None:
        # Created in the system's temporary folder and unlinked by SQLite once it is closed.
        self._file = sqlite3.connect("", isolation_level=None)
        self._file.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._file.execute("PRAGMA temp_store=FILE")
        self._file.execute("CREATE TABLE seen (key BLOB PRIMARY KEY, row INTEGER NOT NULL) WITHOUT ROWID")
        self._file.execute("BEGIN")  # one transaction for the whole check: nothing is ever committed
        self._file.executemany("INSERT INTO seen VALUES (?, ?)", ((_stored(k), r) for k, r in self._first.items()))
        self._first = {}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._first = {}


def _stored(key: str) -> bytes:
    """The key as the file keeps it: its UTF-8 bytes, a lone surrogate (which SQLite's text refuses) included."""
    return key.encode("utf-8", "surrogatepass")
