"""The service as the command sees it: its endpoints over HTTP, with `requests` only, and its answers sorted.

`requests` is imported on first use, so `bulkproc --help` does not pay for it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

# Seconds to connect, and to wait for an answer: a rollback waits for creations that may still land.
TIMEOUT = (5.0, 600.0)
# An event stream sends a keep-alive comment every 15 s: a minute of silence means it is gone.
STREAM_TIMEOUT = (5.0, 60.0)
# What the statuses of a batch or an import are while work on it goes on.
RUNNING = frozenset({"queued", "processing", "activating"})


class Unreachable(Exception):
    """The service could not be reached (refused connection, timeout, name lookup failure)."""


class Refused(Exception):
    """The service answered an error: its status, sentence and details (the contract's error shape)."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or []


@dataclass(frozen=True)
class Work:
    """A batch or an import, as the service names it."""
    kind: str  # "batch" or "import"
    id: str

    @property
    def path(self) -> str:
        return f"/hospitals/{'bulk' if self.kind == 'batch' else 'imports'}/{self.id}"


def is_final(document: dict[str, Any]) -> bool:
    """Whether nothing more will happen to the document's batch or import unless asked."""
    return document.get("status") not in RUNNING


def work_of(document: dict[str, Any]) -> Work:
    """The batch or import a document is about."""
    if "import_id" in document:
        return Work("import", document["import_id"])
    return Work("batch", document["batch_id"])


class Service:
    """One bulkproc service at `url`, called with `token` as its bearer token when given."""

    def __init__(self, url: str, token: str | None = None) -> None:
        import requests

        self.url = url.rstrip("/")
        self._http = requests.Session()
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, *, timeout: tuple[float, float] = TIMEOUT,
             **kwargs: Any) -> requests.Response:
        """One request; raises Unreachable, or Refused for an error answer."""
        import requests

        try:
            response = self._http.request(method, self.url + path, timeout=timeout, allow_redirects=False,
                                          **kwargs)
        except requests.RequestException as exc:
            raise Unreachable(f"cannot reach the service at {self.url}: {_reason(exc)}") from None
        if response.status_code >= 400:
            raise _refusal(response)
        return response

    def document(self, work: Work) -> dict[str, Any]:
        """The batch's or import's document now."""
        return self.call("GET", work.path).json()

    def find(self, work_id: str) -> tuple[Work, dict[str, Any]]:
        """The batch or import `work_id` names, and its document; Refused (404) when it is neither."""
        for kind in ("batch", "import"):
            try:
                work = Work(kind, work_id)
                return work, self.document(work)
            except Refused as exc:
                if exc.status != 404:
                    raise
        raise Refused(404, f"No batch or import has the id {work_id}.")

    def validate(self, name: str, data: bytes, endpoint: str = "/hospitals/bulk") -> dict[str, Any]:
        """The service's reading of a file under `endpoint`'s row limit (nothing is created)."""
        return self.call("POST", endpoint + "/validate", files={"file": (name, data)}).json()

    def upload(self, name: str, data: bytes, endpoint: str, existing: str | None) -> dict[str, Any]:
        """Start a batch or an import of the file, in the background; its accepted document."""
        fields = {"async": "1"} | ({"existing": existing} if existing else {})
        # A key of our own: sent again after a dropped connection, it would start nothing new.
        headers = {"Idempotency-Key": str(uuid.uuid4()), "Prefer": "respond-async"}
        return self.call("POST", endpoint, files={"file": (name, data)}, data=fields, headers=headers).json()

    def act(self, method: str, work: Work, action: str = "") -> dict[str, Any]:
        """Resume, activate or roll back (the work goes on in the background where it can); the answer."""
        return self.call(method, work.path + action, headers={"Prefer": "respond-async"}).json()

    def download(self, work: Work, name: str) -> Iterator[bytes]:
        """A result file of the work (`results.csv` or `failed.csv`), as it streams in."""
        response = self.call("GET", f"{work.path}/{name}", stream=True)
        try:
            yield from response.iter_content(chunk_size=65536)
        finally:
            response.close()

    def events(self, work: Work) -> Iterator[dict[str, Any]]:
        """The documents the work's event stream sends, until it ends; Unreachable when it drops."""
        import requests

        response = self.call("GET", work.path + "/events", stream=True, timeout=STREAM_TIMEOUT)
        response.encoding = "utf-8"
        try:
            yield from parse_events(response.iter_lines(chunk_size=None, decode_unicode=True))
        except requests.RequestException as exc:
            raise Unreachable(f"the event stream dropped: {_reason(exc)}") from None
        finally:
            response.close()


def parse_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON `data` of each server-sent event in `lines` (comments and other fields skipped)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield json.loads("\n".join(data))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def _refusal(response: requests.Response) -> Refused:
    """The contract's error document of `response` as Refused (any other body: its status line)."""
    try:
        body = response.json()
        message, details = str(body["error"]), list(body.get("details") or [])
    except (ValueError, KeyError, TypeError):
        message, details = f"the service answered {response.status_code} {response.reason}", []
    return Refused(response.status_code, message, details)


def _reason(exc: Exception) -> str:
    """A short reason for a failed request, without urllib3's nested reprs."""
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "Failed to resolve"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__
