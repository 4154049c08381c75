"""Domain exceptions: what went wrong, in words a user can act on; no HTTP, no Flask.

`errors.py` holds the one table from these to HTTP statuses.
"""

from __future__ import annotations


class DomainError(Exception):
    """A failure a client should hear about: one sentence and optional per-field details."""

    def __init__(self, message: str, details: list[dict] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class MalformedRequest(DomainError):
    """The request itself is unusable (no file part, a bad header or query value)."""


class TokenRequired(DomainError):
    """The API token is missing or wrong."""


class BatchNotFound(DomainError):
    """No batch has this id."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"No batch with id {batch_id!r}.")


class RowNotFound(BatchNotFound):
    """The batch has no row with this number."""

    def __init__(self, batch_id: str, row: int) -> None:
        DomainError.__init__(self, f"Batch {batch_id} has no row {row}.")


class ImportNotFound(DomainError):
    """No import has this id."""

    def __init__(self, import_id: str) -> None:
        super().__init__(f"No import with id {import_id!r}.")


class RowRefused(DomainError):
    """New values for a row are refused by the CSV rules, or the request for them is unusable."""


class BatchConflict(DomainError):
    """The batch is in a state that does not allow what was asked."""


class IdempotencyMismatch(DomainError):
    """The idempotency key was used before with a different file."""

    def __init__(self, key: str) -> None:
        super().__init__("This Idempotency-Key was already used with a different file; "
                         "use a new key for a new upload.")
        self.key = key


class TooManyStreams(DomainError):
    """This process already serves as many event streams as it may."""


class StoreUnavailable(DomainError):
    """The job store cannot be read or written right now (down, read-only, full); `batch_id` when one is concerned."""

    def __init__(self, reason: str, batch_id: str | None = None) -> None:
        about = f"; batch {batch_id} is kept and can be read, or resumed, once it answers" if batch_id else ""
        super().__init__(f"The job store is unavailable right now{about}. Try again in a few seconds.")
        self.reason = reason
        self.batch_id = batch_id

    def about(self, batch_id: str) -> StoreUnavailable:
        """The same failure, naming the batch it concerns."""
        return StoreUnavailable(self.reason, batch_id)


class RunLost(Exception):
    """A run found another run owns its batch or import now: it stops at once and writes nothing more."""

    def __init__(self, work_id: str) -> None:
        super().__init__(f"another run owns {work_id} now")
        self.work_id = work_id


class StoreRefusedValue(DomainError):
    """The job store cannot keep a value of the request (PostgreSQL text cannot hold NUL)."""


class UpstreamUnavailable(DomainError):
    """A request could not proceed because the directory could not do its part."""


# -- the upstream's failures, sorted by what they tell us about its state ---------------------


class UpstreamError(Exception):
    """The upstream could not do what was asked; `str()` is a sentence for the row's `error`."""


class Refused(UpstreamError):
    """The upstream answered a final 4xx: nothing was done, and asking again will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"The directory refused it ({status}): {message}")
        self.status = status
        self.message = message


class GaveUp(UpstreamError):
    """Every attempt failed in a retryable way, the outage lasted too long, or the deadline passed."""


class NotSent(UpstreamError):
    """The request never reached the upstream's handler (no connection, or a 429); sending again is safe."""

    def __init__(self, reason: str, *, rate_limited: bool = False, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.rate_limited = rate_limited
        self.unreachable = unreachable


class MaybeLanded(UpstreamError):
    """The request may have taken effect upstream (no answer, a broken connection, a 5xx)."""

    def __init__(self, reason: str, *, unreachable: bool = False, answered: bool = False) -> None:
        super().__init__(reason)
        # 502/503/504 from the edge: the directory may be down, so wait out an outage.
        self.unreachable = unreachable
        # The application itself answered (a 500): its handler has finished, so whatever it did
        # is visible at once; without an answer it may still be working.
        self.answered = answered
