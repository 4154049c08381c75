"""An import's estimate of the seconds left: every window the rows still need is counted, the first too."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from bulkproc.states import RowStatus
from bulkproc.work.imports import Imports, last_slot_in
from bulkproc.work.rate_limit import EDGE_SECONDS, WINDOW_MARGIN
from tests.support import hospitals_csv

LIMIT, WINDOW, CREATION = 30, 60.0, 5.0
SPAN = WINDOW * WINDOW_MARGIN + EDGE_SECONDS  # 61.25 s: the service's own window


@pytest.mark.parametrize("waiting, used, oldest, start, expected", [
    (200, 0, None, 0.0, 6 * SPAN),         # no slot taken yet: 30 now, then 6 more windows (issue 13: said 5)
    (170, 30, 0.0, 0.0, 6 * SPAN),         # the same a moment later, the first 30 taken just now
    (170, 30, -20.0, 0.0, 6 * SPAN - 20),  # ... and 20 s later
    (30, 0, None, 0.0, 0.0),               # all fit in the free slots
    (31, 0, None, 0.0, SPAN),              # one over: a window later
    (20, 10, -50.0, 0.0, 0.0),             # 20 free slots for 20 rows
    (25, 10, -50.0, 0.0, SPAN - 50),       # 5 more go when the 10 old ones free
    (35, 10, -50.0, 0.0, SPAN),            # past those 10, the slots taken now free a span later
    (10, 0, None, 3.0, 3.0),               # a back-off in force holds the first slots
    (30, 30, -60.0, 4.0, 4.0),             # ... and slots that free meanwhile wait for it too
])
def test_the_last_row_takes_its_slot_after_every_window_it_needs(waiting, used, oldest, start, expected):
    assert last_slot_in(waiting, LIMIT, SPAN, used, oldest, start) == pytest.approx(expected)


class _Slots:
    """The store's slot reading, with slots taken at fixed times on a fake clock."""

    def __init__(self, taken: list[float]) -> None:
        self.taken = taken

    def create_slots_in_use(self, _window: float) -> tuple[int, float | None, float]:
        return len(self.taken), min(self.taken, default=None), 0.0


@pytest.fixture
def estimating():
    """Imports on a fake store and clock: only the estimate is used."""
    made = []

    def build(taken: list[float], now: float) -> Imports:
        jobs = SimpleNamespace(store=_Slots(taken), close_with=lambda _close: None, heartbeat=None)
        made.append(Imports(jobs, batch_rows=20, rate=(LIMIT, WINDOW), concurrency=LIMIT,
                            creation_seconds=CREATION, clock=lambda: now))
        return made[-1]

    yield build
    for imports in made:
        imports.close()


def test_the_estimate_counts_the_first_window_on_a_fake_clock(estimating):
    now = 1_000.0
    fresh = estimating([], now)
    assert fresh.estimate(Counter({RowStatus.PENDING: 200}), now) == round(6 * SPAN + CREATION, 1)  # 372.5

    later = estimating([now - 20.0] * 30, now)
    counts = Counter({RowStatus.PENDING: 170, RowStatus.IN_PROGRESS: 30})
    assert later.estimate(counts, now) == round(6 * SPAN - 20 + CREATION, 1)
    assert later.estimate(Counter({RowStatus.IN_PROGRESS: 30}), now) == CREATION


def test_the_first_202_of_a_200_row_import_says_373_seconds(make_app, serve_app):
    service = serve_app(make_app(CREATE_RATE=(LIMIT, WINDOW)))

    response = service.upload(hospitals_csv(200), path="/hospitals/imports")

    assert response.status_code == 202
    # Whether or not the runner has taken the first 30 slots yet, 6 windows and a creation remain.
    assert 372.0 <= response.json()["estimated_seconds_remaining"] <= 372.5
