"""The WSGI entry point: `gunicorn wsgi:app` (started by `python -m bulkproc.serve`, which checks first)."""

import os
import sys

from bulkproc import create_app, logs
from bulkproc.config import ConfigError
from bulkproc.errors import StoreUnavailable

try:
    app = create_app()
except (ConfigError, StoreUnavailable) as exc:
    # The store may fail between the launcher's check and a worker's boot: one line, no traceback.
    reason = f"the job store does not answer: {exc.reason}" if isinstance(exc, StoreUnavailable) else str(exc)
    logs.startup_logger(logs.format_from_env(os.environ)).error("%s", reason)
    # Exit status 3 is gunicorn's "worker failed to boot": the server stops instead of respawning.
    sys.exit(3)
