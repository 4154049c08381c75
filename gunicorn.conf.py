"""gunicorn settings for bulkproc; `python -m bulkproc.serve` checks the settings and the store, then runs
`gunicorn --config gunicorn.conf.py wsgi:app` with them."""

import glob
import logging
import os
import shutil
import sys
import tempfile
import threading
import time

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

from bulkproc import logs
from bulkproc.config import ConfigError, from_env

# Every variable is checked here, once, in the master: a bad value stops gunicorn with one line
# before it binds or forks, instead of a traceback from gunicorn or from each worker.
try:
    _settings = from_env()
except ConfigError as exc:
    logs.startup_logger(logs.format_from_env(os.environ)).error("%s", exc)
    sys.exit(2)

bind = f"0.0.0.0:{_settings['PORT']}"
# Threads, not processes, carry the concurrency: a synchronous upload waits ~5 s on the upstream
# and an event stream stays open for a whole batch, so each worker needs many of them.
worker_class = "gthread"
workers = _settings["WEB_CONCURRENCY"]
threads = _settings["GUNICORN_THREADS"]
# gthread workers heartbeat from their main loop, so long requests are not killed by this.
timeout = 120
graceful_timeout = 30
# gunicorn's own refusals (414, 431) are HTML: as long as nginx's 8 KiB buffers (deploy/proxy), so that
# behind it nginx refuses first, in JSON.
limit_request_line = 8190
limit_request_field_size = 8190
accesslog = "-"
# gunicorn 23+'s control socket lives at one fixed path per user; several servers on one machine
# (tests, benchmarks, make run) would fight over it, and nothing here uses it.
control_socket_disable = True
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(D)sus'  # request time in microseconds
# The X-Request-ID the service answered with, so that an access line leads to the request's own logs.
access_log_format += " request=%({x-request-id}o)s"
# JSON for every line: gunicorn's own (start, workers, tracebacks as a field) and the access lines too.
if _settings["LOG_FORMAT"] == "json":
    logconfig_dict = logs.gunicorn_logconfig("json")
# A stopping worker leaves itself this long before the master's deadline (SIGKILL, which gunicorn
# reports as "Perhaps out of memory?"): its work in flight stays resumable either way.
_STOP_MARGIN = 1.0
# gunicorn's master gives workers this long after a quick stop (SIGINT/SIGQUIT) that follows a graceful one.
_QUICK_AFTER_GRACEFUL = 2.0


def post_fork(server, worker):
    """Note when this worker is told to stop, so that it exits by itself before the master kills it."""
    worker.bulkproc_deadline = None
    for name in ("handle_exit", "handle_quit"):
        setattr(worker, name, _noting_stop(worker, getattr(worker, name), quick=name == "handle_quit"))


def _noting_stop(worker, handler, quick):
    def noted(sig, frame):
        now, grace = time.monotonic(), worker.cfg.graceful_timeout
        deadline = now + (min(grace, _QUICK_AFTER_GRACEFUL) if quick and worker.bulkproc_deadline else grace)
        if worker.bulkproc_deadline is None or deadline < worker.bulkproc_deadline:
            first = worker.bulkproc_deadline is None
            worker.bulkproc_deadline = deadline
            if first:
                threading.Thread(target=_exit_in_time, args=(worker,), daemon=True).start()
        handler(sig, frame)
    return noted


def _exit_in_time(worker):
    """Exit (status 0) shortly before the master's deadline if the worker is still winding down."""
    margin = min(_STOP_MARGIN, worker.cfg.graceful_timeout / 4)
    while (left := worker.bulkproc_deadline - margin - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))
    logging.getLogger("bulkproc.stop").warning(
        "stopping with work still in flight at gunicorn's stop deadline: it stays resumable "
        "(its lease lapses, then resume it)")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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
