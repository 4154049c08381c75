"""The simulator's command line: `python -m bulkproc.simulator [--host H] [--port P] [options]`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from .app import Simulator
from .serving import serve

DESCRIPTION = "A local stand-in for the Hospital Directory API, with its limits, delays and scripted faults."


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bulkproc.simulator", description=DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on; 0 picks a free one")
    parser.add_argument("--delay", type=float, default=5.0, help="seconds each creation takes")
    parser.add_argument("--create-limit", type=int, default=30, help="creations per window; 0 = no limit")
    parser.add_argument("--other-limit", type=int, default=50)
    parser.add_argument("--health-limit", type=int, default=100)
    parser.add_argument("--window", type=float, default=60.0, help="rate-limit window in seconds")
    parser.add_argument("--cold-start", type=float, default=0.0, help="seconds a sleeping instance takes to wake")
    parser.add_argument("--idle-after", type=float, default=900.0, help="idle seconds before it sleeps")
    parser.add_argument("--refuse-for", type=float, default=0.0, metavar="SECONDS",
                        help="refuse connections for this long (an outage), once")
    parser.add_argument("--refuse-after", type=int, default=0, metavar="REQUESTS",
                        help="start that outage when this many requests have arrived (0 = at start-up)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _log_to_stdout() -> None:
    # The package's logger only: werkzeug's own logging keeps going to stderr as before.
    log = logging.getLogger("bulkproc.simulator")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Serve a simulator in the foreground until Ctrl-C or SIGTERM."""
    args = _parse_args(argv)
    sim = Simulator(delay=args.delay, create_limit=args.create_limit, window=args.window,
                    other_limit=args.other_limit, health_limit=args.health_limit,
                    cold_start=args.cold_start, idle_after=args.idle_after)
    # SIGINT is set explicitly because a shell's background job starts with it ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    _log_to_stdout()
    try:
        with serve(sim, args.host, args.port, args.verbose) as served:
            # Armed before the line is printed: a client that reads it and calls at once is counted.
            if args.refuse_for > 0:
                served.refuse_connections(args.refuse_for, after_requests=args.refuse_after)
            print(f"Hospital Directory simulator listening on {served.url}", flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0
