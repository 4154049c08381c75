"""gunicorn settings for bulkproc (Render runs `gunicorn --config gunicorn.conf.py wsgi:app`)."""

import glob
import os
import shutil
import tempfile

# Set up before bulkproc (so prometheus_client) is first imported, in this master or a worker:
# "<master pid> made|given", so that a reload (SIGHUP) keeps counting where it did.
_METRICS_SET_UP_BY = "BULKPROC_METRICS_SET_UP_BY"


def _metrics_folder():
    """Give every worker's metrics one folder, PROMETHEUS_MULTIPROC_DIR, that /metrics adds up:
    the one the variable names, emptied of an earlier run's counts, or a fresh temporary one."""
    owner, _, how = os.environ.get(_METRICS_SET_UP_BY, "").partition(" ")
    if owner == str(os.getpid()):
        return
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder and how != "made":
        os.makedirs(folder, exist_ok=True)
        for stale in glob.glob(os.path.join(folder, "*.db")):
            os.remove(stale)
        how = "given"
    else:
        folder, how = tempfile.mkdtemp(prefix="bulkproc-metrics-"), "made"
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    os.environ[_METRICS_SET_UP_BY] = f"{os.getpid()} {how}"


_metrics_folder()

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
# The X-Request-ID the service answered with, so that an access line leads to the request's own logs.
access_log_format += " request=%({x-request-id}o)s"


def worker_exit(server, worker):
    """On a graceful stop, let this worker's batches stop waiting for a rate window: their rows
    stay pending and the batch ends partially_failed, resumable, instead of being killed mid-wait."""
    # A worker stopped while it was still importing the app has none.
    jobs = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("bulkproc")
    if jobs is not None:
        jobs.close()


def child_exit(server, worker):
    """Drop a dead worker's live gauges; its counts stay in the folder and keep adding up."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics folder this master made for itself."""
    if os.environ.get(_METRICS_SET_UP_BY) == f"{os.getpid()} made":
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
