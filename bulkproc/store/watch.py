"""Watching: waiting on a batch's or an import's version, holding no connection meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable

from .database import Database


class Watching(Database):
    """Waiting for a batch or an import to change, whichever process changes it."""

    def wait_for_change(self, batch_id: str, seen_version: int | None, timeout: float,
                        poll: float = 0.5) -> int | None:
        """Wait up to `timeout` seconds for the batch's version to pass `seen_version`; return the
        version then (None for an unknown batch). Holds no database connection while waiting."""
        return self._wait_until_moved(lambda: self.version(batch_id), seen_version, timeout, poll)


    def _wait_until_moved(self, version_of: Callable[[], int | None], seen_version: int | None, timeout: float,
                          poll: float) -> int | None:
        deadline = time.monotonic() + timeout
        while True:
            current = version_of()
            remaining = deadline - time.monotonic()
            if current is None or current != seen_version or remaining <= 0:
                return current
            # Changes made in this process wake us at once; other workers' within `poll` seconds.
            with self._changed:
                self._changed.wait(min(poll, remaining))


    def wait_for_import_change(self, import_id: str, seen_version: int | None, timeout: float,
                               poll: float = 0.5) -> int | None:
        """Like wait_for_change, for an import and all its batches."""
        return self._wait_until_moved(lambda: self.import_version(import_id), seen_version, timeout, poll)
