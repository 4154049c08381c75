"""Every log line of a batch's work carries its batch id, from every thread."""

from __future__ import annotations

import io
import logging

from bulkproc import logs
from tests.support import hospitals_csv


def test_log_lines_of_a_batch_name_it_even_from_row_threads(service, upstream):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.BatchIdFilter())
    handler.setFormatter(logging.Formatter(logs.FORMAT))
    logger = logging.getLogger("bulkproc")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    upstream.sim.add_fault("create", "store_then_500", times=2)  # warnings from the row threads
    try:
        batch_id = service.upload(hospitals_csv(3)).json()["batch_id"]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    lines = stream.getvalue().splitlines()
    assert any("directory_client" in line for line in lines)
    assert lines and all(f"[batch {batch_id}]" in line for line in lines), lines
