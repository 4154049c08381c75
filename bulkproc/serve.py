"""`python -m bulkproc.serve [GUNICORN OPTION...]`: the one way in, whichever way the service is started.

Checks every variable of the configuration table, then that the job store answers (waiting up to
BULKPROC_STORE_WAIT seconds for it, one line a try), and only then becomes gunicorn (exec, so
gunicorn's master is this process and its signals reach it). Anything wrong is one line naming
it and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from . import config, logs, runtime
from .errors import StoreUnavailable
from .store import Store

ROOT = Path(__file__).resolve().parent.parent
# Seconds between tries of a store that does not answer at start, and the most one connection may take.
RETRY_SECONDS = 2.0
CONNECT_SECONDS = 5
# Exit statuses: a setting to fix, or a store that never answered (worth a restart later).
BAD_SETTING, NO_STORE = 2, 1


class StartRefused(Exception):
    """A reason not to start, told in one line; `status` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Check the settings and the store, then exec gunicorn with `argv`; the exit status when refused."""
    environ = os.environ if environ is None else environ
    log = logs.startup_logger(logs.format_from_env(environ))
    try:
        settings = config.from_env(environ)
        check_store(settings, log)
    except config.ConfigError as exc:
        log.error("%s", exc)
        return BAD_SETTING
    except StartRefused as exc:
        log.error("%s", exc)
        return exc.status
    log.info("upstream %s", settings["HOSPITAL_API_BASE_URL"])
    logging.shutdown()
    os.chdir(ROOT)
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
                              *(argv if argv is not None else sys.argv[1:]), "wsgi:app"])
    return 0  # not reached: exec replaced this process


def check_store(settings: Mapping[str, Any], log: logging.Logger, *, sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> None:
    """Return once the job store answers; StartRefused when its folder is missing or it did not
    answer within BULKPROC_STORE_WAIT seconds (one warning a failed try)."""
    url = settings["DATABASE_URL"] or default_database()
    _check_sqlite_folder(url)
    wait = settings["STORE_WAIT"]
    deadline = clock() + wait
    while True:
        reason = _try_store(url)
        if reason is None:
            return
        left = deadline - clock()
        if left <= 0:
            raise StartRefused(f"the job store ({_shown(url)}) did not answer within {wait:g} s: {reason}",
                               NO_STORE)
        log.warning("the job store (%s) does not answer yet: %s; trying again for %.0f s more",
                    _shown(url), reason, left)
        sleep(min(RETRY_SECONDS, left))


def default_database() -> str:
    """The SQLite file the app uses without DATABASE_URL (its instance folder is made as the app would)."""
    return runtime.default_database(str(ROOT / "instance"))


def _check_sqlite_folder(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    folder = Path(parsed.database).resolve().parent
    if not folder.is_dir():
        raise StartRefused(f"DATABASE_URL={_shown(url)!r} names a file in {folder}, which does not exist: "
                           f"create the folder or point DATABASE_URL elsewhere", BAD_SETTING)


def _try_store(url: str) -> str | None:
    """None when the store answers (its tables made as the workers would), else the driver's reason."""
    try:
        Store(_with_connect_timeout(url)).close()
    except StoreUnavailable as exc:
        return exc.reason
    except Exception as exc:  # noqa: BLE001 - the start-up's boundary: one line, never a traceback
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


def _with_connect_timeout(url: str) -> str:
    """`url` with a bound on connecting, for PostgreSQL (libpq otherwise waits on a silent host)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" or "connect_timeout" in parsed.query:
        return url
    return parsed.update_query_dict({"connect_timeout": str(CONNECT_SECONDS)}).render_as_string(hide_password=False)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    raise SystemExit(main())
