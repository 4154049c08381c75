"""A gunicorn entry point for the clock tests: the service on a host whose clock is TEST_CLOCK_OFFSET seconds off."""

import os
import time

from bulkproc import create_app

OFFSET = float(os.environ["TEST_CLOCK_OFFSET"])

app = create_app(clock=lambda: time.time() + OFFSET)
