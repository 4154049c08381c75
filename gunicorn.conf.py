"""gunicorn settings for bulkproc (Render runs `gunicorn --config gunicorn.conf.py wsgi:app`)."""

import os
import sys

from bulkproc.config import ConfigError, from_env

# Every variable is checked here, once, in the master: a bad value stops gunicorn with one line
# before it binds or forks, instead of a traceback from gunicorn or from each worker.
try:
    _settings = from_env()
except ConfigError as exc:
    print(f"bulkproc: {exc}", file=sys.stderr)
    sys.exit(1)

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Threads, not processes, carry the concurrency: a synchronous upload waits ~5 s on the upstream
# and an event stream stays open for a whole batch, so each worker needs many of them.
worker_class = "gthread"
workers = _settings["WEB_CONCURRENCY"]
threads = _settings["GUNICORN_THREADS"]
# gthread workers heartbeat from their main loop, so long requests are not killed by this.
timeout = 120
graceful_timeout = 30
accesslog = "-"
# gunicorn 23+'s control socket lives at one fixed path per user; several servers on one machine
# (tests, benchmarks, make run) would fight over it, and nothing here uses it.
control_socket_disable = True
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(D)sus'  # request time in microseconds


def worker_exit(server, worker):
    """On a graceful stop, let this worker's batches stop waiting for a rate window: their rows
    stay pending and the batch ends partially_failed, resumable, instead of being killed mid-wait."""
    # A worker stopped while it was still importing the app has none.
    jobs = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("bulkproc")
    if jobs is not None:
        jobs.close()
