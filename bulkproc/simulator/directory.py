"""The upstream's storage: hospitals in memory, a FIFO of limited size, ids never reused, one-shot activation."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

CAPACITY = 10_000
HOSPITAL_NOT_FOUND = "Hospital not found"
BATCH_NOT_FOUND = "No hospitals found with the specified batch ID"
ALREADY_ACTIVE = "Cannot activate batch: one or more hospitals in the batch are already active"


class NotFound(LookupError):
    """No hospital with that id, or no hospital in that batch; the message is the upstream's."""


class AlreadyActive(Exception):
    """A batch cannot be activated: one or more of its hospitals already are; the message is the upstream's."""


class Directory:
    """Hospitals by id, oldest first; every method returns copies and is safe across threads."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._hospitals: OrderedDict[int, dict[str, Any]] = OrderedDict()
        # The same hospitals by batch id, oldest first: a batch's reads and its 20-per-batch check
        # scanned every stored hospital, so a large import made each creation slower.
        self._batches: dict[str, dict[int, dict[str, Any]]] = {}
        self._next_id = 1

    def insert(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Store a hospital (inactive when it has a batch id), evicting the oldest beyond capacity."""
        with self._lock:
            hospital = {"id": self._next_id, **fields, "active": fields["creation_batch_id"] is None,
                        "created_at": datetime.now().isoformat()}
            self._next_id += 1
            self._hospitals[hospital["id"]] = hospital
            if hospital["creation_batch_id"] is not None:
                self._batches.setdefault(hospital["creation_batch_id"], {})[hospital["id"]] = hospital
            while len(self._hospitals) > self.capacity:
                self._unindex(self._hospitals.popitem(last=False)[1])
            return dict(hospital)

    def get(self, hospital_id: int) -> dict[str, Any]:
        """Return one hospital; NotFound if there is none with that id."""
        with self._lock:
            return dict(self._find(hospital_id))

    def update(self, hospital_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply changes to one hospital and return it; NotFound if there is none with that id."""
        with self._lock:
            hospital = self._find(hospital_id)
            hospital.update(changes)
            return dict(hospital)

    def delete(self, hospital_id: int) -> None:
        """Remove one hospital; NotFound if there is none with that id."""
        with self._lock:
            hospital = self._hospitals.pop(hospital_id, None)
            if hospital is None:
                raise NotFound(HOSPITAL_NOT_FOUND)
            self._unindex(hospital)

    def hospitals(self, batch_id: str | None = None) -> list[dict[str, Any]]:
        """Return every hospital, or those of one batch, oldest first."""
        with self._lock:
            found = self._hospitals if batch_id is None else self._batches.get(batch_id, {})
            return [dict(h) for h in found.values()]

    def batch_size(self, batch_id: str) -> int:
        """Count the hospitals of one batch."""
        with self._lock:
            return len(self._batch(batch_id))

    def activate(self, batch_id: str) -> int:
        """Activate every hospital of a batch and count them; NotFound when empty, AlreadyActive."""
        with self._lock:
            members = self._batch(batch_id)
            if not members:
                raise NotFound(BATCH_NOT_FOUND)
            if any(h["active"] for h in members):
                raise AlreadyActive(ALREADY_ACTIVE)
            for hospital in members:
                hospital["active"] = True
            return len(members)

    def delete_batch(self, batch_id: str) -> int:
        """Remove every hospital of a batch and count them; NotFound when empty."""
        with self._lock:
            members = self._batch(batch_id)
            if not members:
                raise NotFound(BATCH_NOT_FOUND)
            for hospital in members:
                del self._hospitals[hospital["id"]]
            del self._batches[batch_id]
            return len(members)

    def clear(self) -> None:
        """Remove every hospital; ids keep increasing."""
        with self._lock:
            self._hospitals.clear()
            self._batches.clear()

    def _find(self, hospital_id: int) -> dict[str, Any]:
        hospital = self._hospitals.get(hospital_id)
        if hospital is None:
            raise NotFound(HOSPITAL_NOT_FOUND)
        return hospital

    def _batch(self, batch_id: str) -> list[dict[str, Any]]:
        return list(self._batches.get(batch_id, {}).values())

    def _unindex(self, hospital: dict[str, Any]) -> None:
        """Forget a hospital gone from storage in its batch's index."""
        members = self._batches.get(hospital["creation_batch_id"])
        if members is not None:
            members.pop(hospital["id"], None)
            if not members:
                del self._batches[hospital["creation_batch_id"]]
