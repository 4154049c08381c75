"""Reading the batch back from the upstream: one shared read for many rows, and pairing rows with
hospitals, only ever with hospitals of the batch's own id (the listing is checked, not trusted)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from ..files.rules import HospitalRow
from ..files.rules import _comparable as comparable
from ..states import RowStatus
from ..store import Row
from ..upstream.client import DirectoryClient, Hospital


class Listings:
    """The batch's listing upstream, shared by its rows: one read that started after a row's
    moment serves every row waiting for one, so a burst of timeouts costs a read or two, not one
    per row (the upstream allows 50 reads a minute)."""

    def __init__(self, client: DirectoryClient, clock: Callable[[], float]) -> None:
        self._client, self._clock = client, clock
        self._latest: dict[str, tuple[float, list[Hospital]]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def read_since(self, batch_id: str, moment: float, deadline: float | None) -> list[Hospital]:
        """The batch's hospitals as read by a request sent at or after `moment`."""
        with self._guard:
            lock = self._locks.setdefault(batch_id, threading.Lock())
        with lock:
            latest = self._latest.get(batch_id)
            if latest is not None and latest[0] >= moment:
                return latest[1]
            started = self._clock()
            listing = self._client.list_batch(batch_id, deadline)
            self._latest[batch_id] = (started, listing)
            return listing

    def forget(self, batch_id: str) -> None:
        """Drop what is kept for the batch (its rows are done)."""
        with self._guard:
            self._latest.pop(batch_id, None)
            self._locks.pop(batch_id, None)


def ours(batch_id: str, listing: list[Hospital]) -> list[Hospital]:
    """The listed hospitals whose creation_batch_id is the batch's own."""
    return [h for h in listing if h.of_batch(batch_id)]


def strangers(batch_id: str, listing: list[Hospital]) -> list[Hospital]:
    """The listed hospitals of other batches (a proxy or upstream that ignored the filter)."""
    return [h for h in listing if not h.of_batch(batch_id)]


def matches(row: Row, hospital: Hospital) -> bool:
    """Whether the hospital carries the row's data."""
    return (hospital.name, hospital.address, hospital.phone or None) == (row.name, row.address, row.phone or None)


def match(rows: list[Row], listing: list[Hospital]) -> tuple[dict[Row, Hospital], list[Row]]:
    """Pair rows with the batch's hospitals upstream, each hospital to one row, a row's recorded
    hospital first; (pairs, unmatched rows). A row already in the directory is neither: its
    hospital is another batch's, and it is never created here."""
    rows = [r for r in rows if r.status != RowStatus.ALREADY_IN_DIRECTORY]
    by_id = {h.id: h for h in listing}
    found = {r: by_id[r.hospital_id] for r in rows if r.hospital_id in by_id and matches(r, by_id[r.hospital_id])}
    for row in rows:
        if row not in found:
            taken = set(found.values())
            hospital = next((h for h in listing if h not in taken and matches(row, h)), None)
            if hospital is not None:
                found[row] = hospital
    return found, [r for r in rows if r not in found]


# -- existing=skip: rows the directory already holds -----------------------------------------


def directory_key(name: str, address: str) -> tuple[str, str]:
    """Name and address as the file rules compare duplicates: NFC, case-folded, runs of spaces collapsed."""
    return comparable(name), comparable(address)


def in_directory(rows: Iterable[HospitalRow], directory: list[Hospital]) -> dict[int, int]:
    """The rows whose name and address match an active hospital of the directory (phone not
    compared), each with that hospital's id (the oldest, when several match): row -> hospital id."""
    active: dict[tuple[str, str], int] = {}
    for hospital in directory:
        if hospital.active:
            key = directory_key(hospital.name, hospital.address)
            active[key] = min(active.get(key, hospital.id), hospital.id)
    found = ((r.row, active.get(directory_key(r.name, r.address))) for r in rows)
    return {row: hospital_id for row, hospital_id in found if hospital_id is not None}
