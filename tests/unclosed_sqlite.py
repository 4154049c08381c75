"""A pytest plugin that makes Python 3.11 report unclosed SQLite connections as 3.13 does.

Python 3.13 warns (ResourceWarning) when a sqlite3.Connection is garbage-collected unclosed, and
`filterwarnings = ["error"]` turns that into a failure; 3.11 says nothing. Run, on 3.11:

    .venv/bin/python -X dev -W error::ResourceWarning -m pytest -p tests.unclosed_sqlite
"""

from __future__ import annotations

import sqlite3
import warnings


class _Tracked(sqlite3.Connection):
    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()

    def __del__(self) -> None:
        if not self.closed:
            warnings.warn(f"unclosed database in {self!r}", ResourceWarning, stacklevel=1)


_connect = sqlite3.connect


def _tracked_connect(*args, **kwargs):
    kwargs.setdefault("factory", _Tracked)
    return _connect(*args, **kwargs)


sqlite3.connect = _tracked_connect
sqlite3.dbapi2.connect = _tracked_connect  # SQLAlchemy's pysqlite dialect calls it from here
