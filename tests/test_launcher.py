"""`python -m bulkproc.serve`, the one way in: a bad setting or a store that does not answer is one line, no traceback.

Every case stops before gunicorn starts, so each is one short subprocess.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bulkproc import serve
from bulkproc.config import from_env
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _launch(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKPROC_") and k not in (
        "HOSPITAL_API_BASE_URL", "DATABASE_URL", "PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS")}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3", **variables})
    return subprocess.run([sys.executable, "-m", "bulkproc.serve"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# The cases, each through a real launcher process.
@pytest.mark.parametrize("variable,text", [
    ("BULKPROC_MAX_ROWS", "50"),  # the upstream caps a batch at 20
    ("BULKPROC_API_TOKEN", "   "),  # blank is never "no token"
    ("BULKPROC_MAX_STREAMS", "100"),  # not below the 16 threads
    ("WEB_CONCURRENCY", "two"),  # gunicorn itself would answer with a traceback
    ("DATABASE_URL", "postgres://"),  # no host: libpq would try a local socket
])
def test_a_bad_setting_is_one_line_naming_it(tmp_path, variable, text):
    line = _one_line(_launch(tmp_path, **{variable: text}))

    assert line.startswith(f"bulkproc: {variable}")
    assert "is not valid: expected" in line


# The rest of the table, through the same main() in this process (it stops before any exec).
@pytest.mark.parametrize("variable,text", [
    ("BULKPROC_API_TOKEN", "short-token"), ("GUNICORN_THREADS", "0"), ("PORT", "http"),
    ("BULKPROC_METRICS_TOKEN", ""), ("BULKPROC_STORE_WAIT", "soon"), ("BULKPROC_WEBHOOK_URL", "hooks.example"),
    ("BULKPROC_WEBHOOK_SECRET", "not-a-secret"), ("BULKPROC_LOG_FORMAT", "xml"), ("BULKPROC_READ_RATE", "50"),
])
def test_every_variable_is_checked_by_the_launcher(tmp_path, capfd, monkeypatch, variable, text):
    # A fresh handler, on this test's captured stderr.
    monkeypatch.setattr(logging.getLogger("bulkproc.serve"), "handlers", [])
    status = serve.main([], {"DATABASE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3", variable: text})

    out, err = capfd.readouterr()
    assert status == serve.BAD_SETTING and out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"bulkproc: {variable}") and "is not valid: expected" in line


def test_a_secret_is_never_repeated_in_the_refusal(tmp_path):
    line = _one_line(_launch(tmp_path, BULKPROC_API_TOKEN="my secret token!"))

    assert "my secret" not in line
    assert line.startswith("bulkproc: BULKPROC_API_TOKEN (16 characters)")


def test_a_webhook_url_without_its_secret_is_refused(tmp_path):
    line = _one_line(_launch(tmp_path, BULKPROC_WEBHOOK_URL="https://hooks.example/bulkproc"))

    assert line == ("bulkproc: BULKPROC_WEBHOOK_SECRET is not set: expected it with BULKPROC_WEBHOOK_URL")


def test_a_sqlite_file_in_a_missing_folder_is_one_line(tmp_path):
    line = _one_line(_launch(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/missing/jobs.sqlite3"))

    assert line.startswith("bulkproc: DATABASE_URL=")
    assert f"{tmp_path}/missing, which does not exist" in line


def test_an_unreachable_store_is_waited_for_then_one_line(tmp_path):
    closed = free_port()  # nothing listens there: PostgreSQL refuses at once
    result = _launch(tmp_path, DATABASE_URL=f"postgresql://bulkproc:pw@127.0.0.1:{closed}/bulkproc",
                     BULKPROC_STORE_WAIT="1")

    assert result.returncode == serve.NO_STORE
    assert "Traceback" not in result.stderr
    *tries, last = result.stderr.splitlines()
    assert tries and all("does not answer yet" in line and "trying again" in line for line in tries)
    assert last.startswith("bulkproc: the job store (postgresql://bulkproc:***@127.0.0.1:")
    assert "did not answer within 1 s" in last and "pw@" not in result.stderr


def test_start_up_lines_are_json_when_asked(tmp_path):
    result = _launch(tmp_path, BULKPROC_LOG_FORMAT="json", BULKPROC_STORE_WAIT="0",
                     DATABASE_URL=f"postgresql://u@127.0.0.1:{free_port()}/x")

    (entry,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert (entry["level"], entry["logger"]) == ("ERROR", "bulkproc.serve")
    assert "did not answer within 0 s" in entry["message"]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_store_is_tried_until_it_answers(tmp_path, monkeypatch):
    # In-process, with a fake clock: the store answers at the third try, within the wait.
    answers = iter(["connection refused", "connection refused", None])
    monkeypatch.setattr(serve, "_try_store", lambda url: next(answers))
    now, lines = [0.0], _Lines()
    log = logging.getLogger("tests.launcher.store_wait")
    log.propagate = False
    log.addHandler(lines)

    serve.check_store(from_env({"DATABASE_URL": f"sqlite:///{tmp_path}/j.db", "BULKPROC_STORE_WAIT": "10"}), log,
                      sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])

    assert len(lines.lines) == 2 and all("connection refused; trying again" in line for line in lines.lines)
    assert now[0] == 2 * serve.RETRY_SECONDS


def test_every_documented_start_goes_through_the_launcher():
    import yaml

    launcher = "python -m bulkproc.serve"
    dockerfile = (ROOT / "Dockerfile").read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

    assert (ROOT / "Procfile").read_text().strip() == f"web: {launcher}"
    assert yaml.safe_load((ROOT / "render.yaml").read_text())["services"][0]["startCommand"] == launcher
    assert 'CMD ["python", "-m", "bulkproc.serve"]' in dockerfile
    assert f"exec {launcher}" in compose["services"]["web"]["command"][-1]
    assert '"bulkproc.serve"' in (ROOT / "scripts" / "run.py").read_text()


def test_a_store_lost_after_the_check_stops_gunicorn_with_one_line_a_worker(tmp_path):
    # gunicorn without the launcher, as if the database went away between its check and the boot.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKPROC_") and k not in (
        "HOSPITAL_API_BASE_URL", "PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS")}
    env.update({"DATABASE_URL": f"postgresql://u:pw@127.0.0.1:{free_port()}/x", "WEB_CONCURRENCY": "1",
                "BULKPROC_LOG_FORMAT": "json"})
    result = subprocess.run([sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "--bind",
                             f"127.0.0.1:{free_port()}", "wsgi:app"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60, check=False)

    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]  # every line JSON, gunicorn's too
    (refusal,) = [e for e in entries if e["logger"] == "bulkproc.serve"]
    assert refusal["message"].startswith("the job store does not answer: connection failed")
    assert any(e["message"] == "Reason: Worker failed to boot." for e in entries)
