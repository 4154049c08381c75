"""What the command shows: a progress bar on a terminal, a summary in words, or the document as JSON."""

from __future__ import annotations

import json
from typing import Any, TextIO

from .service import Work, work_of

# Failed rows a summary lists before it points at the failed rows' file.
LISTED_FAILURES = 10


class Bar:
    """A progress bar of a batch's or an import's rows (rich, imported only when a terminal shows one)."""

    def __init__(self, work: Work, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
                                  console=Console(file=stream))
        self._task = self._progress.add_task(f"{work.kind} {work.id[:8]}", total=None, state="")
        self._progress.start()

    def show(self, document: dict[str, Any]) -> None:
        """Move the bar to the document's counts and status."""
        failed = document["failed_hospitals"]
        state = document["status"] + (f", {failed} failed" if failed else "")
        self._progress.update(self._task, total=document["total_hospitals"],
                              completed=document["processed_hospitals"] + failed, state=state)

    def close(self) -> None:
        self._progress.stop()


def as_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def summary(document: dict[str, Any]) -> str:
    """The document in a few lines of words: counts, the failed rows, and what can be done next."""
    work = work_of(document)
    status, total = document["status"], document["total_hospitals"]
    done, failed = document["processed_hospitals"], document["failed_hospitals"]
    live = ", live" if status == "completed" else ""
    lines = [(f"{work.kind.capitalize()} {work.id}: {status}, {done} of {total} hospitals in the directory"
              f"{live}, {failed} failed ({document['processing_time_seconds']:.1f} s).")]
    rows = [r for r in document.get("hospitals", []) if r["status"] == "failed"]
    lines += [f"  row {r['row']} ({r['name']}): {r['error']}" for r in rows[:LISTED_FAILURES]]
    if len(rows) > LISTED_FAILURES or (failed and not rows):
        lines.append(f"  the failed rows: bulkproc results {work.id} --failed")
    hint = next_step(status, work.id)
    return "\n".join(lines + ([hint] if hint else []))


def next_step(status: str, work_id: str) -> str | None:
    """What a person can do about work left in `status`."""
    if status == "partially_failed":
        return (f"Fix the failed rows and run `bulkproc resume {work_id}`, make the others live without them "
                f"with `bulkproc activate {work_id}`, or undo it with `bulkproc rollback {work_id}`.")
    if status in ("failed", "interrupted", "cancelled"):
        return f"Run `bulkproc resume {work_id}` to go on, or `bulkproc rollback {work_id}` to undo it."
    if status in ("queued", "processing", "activating"):
        return f"It goes on in the service: `bulkproc status {work_id}` shows how far it is."
    return None


def problem_lines(details: list[dict[str, Any]]) -> list[str]:
    """A refused file's problems, one a line: `row 3, phone: ...`."""
    lines = []
    for problem in details:
        where = ", ".join(str(part) for part in (
            f"row {problem['row']}" if problem.get("row") is not None else None, problem.get("column")) if part)
        lines.append(f"{where}: {problem.get('message', '')}" if where else str(problem.get("message", "")))
    return lines
