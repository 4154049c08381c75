"""The WSGI entry point: `gunicorn wsgi:app`."""

import sys

from bulkproc import create_app
from bulkproc.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    print(f"bulkproc: {exc}", file=sys.stderr)
    # Exit status 3 is gunicorn's "worker failed to boot": the server stops instead of respawning.
    sys.exit(3)
