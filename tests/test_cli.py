"""The `bulkproc` command against a real service and simulator on loopback: every command, its
exit statuses, JSON output, the progress bar under a pseudo-terminal, Ctrl-C, a token."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bulkproc.cli.follow import follow
from bulkproc.cli.main import main
from bulkproc.cli.service import Refused, Unreachable, Work, parse_events
from tests.support import free_port, hospitals_csv, wait_until

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run(service_url: str, *args: str, env: dict | None = None):
    """The command in this process (stdout is not a terminal: JSON), as a script would run it."""
    result = CliRunner(env=env).invoke(main, ["--url", service_url, *args], catch_exceptions=False)
    return result


def document(result) -> dict:
    return json.loads(result.stdout)


@pytest.fixture
def csv_file(tmp_path):
    def write(text: str, name: str = "hospitals.csv") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write


def test_upload_follows_a_batch_to_the_end_and_every_command_reads_it(service, csv_file):
    done = run(service.url, "upload", csv_file(hospitals_csv(3)))
    assert done.exit_code == 0, done.stderr
    batch = document(done)
    assert (batch["status"], batch["batch_activated"], batch["processed_hospitals"]) == ("completed", True, 3)
    batch_id = batch["batch_id"]

    status = run(service.url, "status", batch_id)
    assert status.exit_code == 0 and document(status)["status"] == "completed"
    lines = run(service.url, "results", batch_id).stdout.splitlines()
    assert lines[0] == "row,name,address,phone,status,hospital_id,batch_id,error" and len(lines) == 4
    assert run(service.url, "results", batch_id, "--failed").stdout.splitlines() == ["name,address,phone,error"]
    again = run(service.url, "resume", batch_id)  # completed: nothing to do
    assert again.exit_code == 0 and document(again)["status"] == "completed"

    rolled = run(service.url, "rollback", batch_id)
    assert rolled.exit_code == 0 and document(rolled)["status"] == "rolled_back"
    assert run(service.url, "status", batch_id).exit_code == 1
    refused = run(service.url, "resume", batch_id)
    assert refused.exit_code == 3 and "rolled_back" in refused.stderr


def test_activate_of_a_completed_batch_exits_0_and_of_a_rolled_back_one_exits_3(service, csv_file):
    batch_id = document(run(service.url, "upload", csv_file(hospitals_csv(2))))["batch_id"]
    done = run(service.url, "activate", batch_id)
    assert done.exit_code == 0 and document(done)["status"] == "completed"

    assert run(service.url, "rollback", batch_id).exit_code == 0  # the rollback did what it was asked
    refused = run(service.url, "activate", batch_id)
    assert refused.exit_code == 3 and refused.stdout == ""
    assert refused.stderr.startswith("bulkproc: ") and "rolled_back" in refused.stderr


def test_activate_finishes_a_partly_failed_batch_without_its_failed_row_and_exits_1(service, upstream, csv_file):
    upstream.sim.add_fault("create", "reject_422", after=1)
    batch_id = document(run(service.url, "upload", csv_file(hospitals_csv(3))))["batch_id"]
    result = run(service.url, "activate", batch_id)
    assert result.exit_code == 1 and document(result)["status"] == "partially_activated"


def test_some_rows_failed_exits_1_and_writes_the_failed_rows(service, upstream, csv_file, tmp_path):
    upstream.sim.add_fault("create", "reject_422", after=1)
    failed_out = tmp_path / "failed.csv"
    result = run(service.url, "upload", csv_file(hospitals_csv(3)), "--failed-out", str(failed_out))
    assert result.exit_code == 1
    assert document(result)["status"] == "partially_failed"
    lines = failed_out.read_text().splitlines()
    assert lines[0] == "name,address,phone,error" and len(lines) == 2 and "refused" in lines[1]


def test_a_file_over_one_batch_goes_as_an_import(make_app, serve_app, csv_file):
    service = serve_app(make_app(MAX_ROWS=2))
    result = run(service.url, "upload", csv_file(hospitals_csv(5)))
    assert result.exit_code == 0, result.stderr
    imported = document(result)
    assert imported["status"] == "completed" and len(imported["batches"]) == 3
    assert document(run(service.url, "status", imported["import_id"]))["import_id"] == imported["import_id"]
    assert len(run(service.url, "results", imported["import_id"]).stdout.splitlines()) == 6


def test_a_refused_file_exits_2_with_one_problem_a_line(service, csv_file, upstream):
    bad = csv_file("name,address,phone\nA,1 Main St,abc\n,2 Main St,\n", "bad.csv")
    for command in ("upload", "validate"):
        result = run(service.url, command, bad)
        assert result.exit_code == 2, result.stderr
        problems = result.stderr.splitlines()[1:]
        assert problems[0].startswith("row 1, phone: ") and problems[1].startswith("row 2, name: ")
    assert upstream.sim.hospitals() == []  # refused before any upstream call
    good = run(service.url, "validate", csv_file(hospitals_csv(2)))
    assert good.exit_code == 0 and document(good)["total_hospitals"] == 2


def test_async_upload_answers_at_once(service, csv_file):
    result = run(service.url, "upload", "--async", csv_file(hospitals_csv(2)))
    assert result.exit_code == 0
    accepted = document(result)
    assert accepted["status"] in ("queued", "processing", "activating", "completed")
    assert run(service.url, "status", accepted["batch_id"], "--json").exit_code in (0, 1)


def test_an_unreachable_service_or_an_unknown_id_exits_3():
    result = run(f"http://127.0.0.1:{free_port()}", "status", "0f9b1c1e-0000-4000-8000-000000000000")
    assert result.exit_code == 3 and "cannot reach the service" in result.stderr


def test_an_unknown_id_exits_3(service):
    result = run(service.url, "status", "0f9b1c1e-0000-4000-8000-000000000000")
    assert result.exit_code == 3 and "No batch or import has the id" in result.stderr


def test_the_token_is_sent_from_the_option_or_the_environment(make_app, serve_app, csv_file):
    token = "a-token-of-sixteen-chars"
    service = serve_app(make_app(API_TOKEN=token))
    path = csv_file(hospitals_csv(1))
    refused = run(service.url, "validate", path)
    assert refused.exit_code == 3 and "token" in refused.stderr.lower()
    assert run(service.url, "--token", token, "validate", path).exit_code == 0
    assert run(service.url, "validate", path, env={"BULKPROC_TOKEN": token}).exit_code == 0


# -- as a process: the console script's module, a terminal, Ctrl-C -------------------------


def spawn_on_terminal(*args: str, env: dict) -> tuple[subprocess.Popen, int]:
    """The command as a process whose stdout and stderr are a pseudo-terminal; (process, its master fd)."""
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "bulkproc.cli", *args], stdin=subprocess.DEVNULL,
                               stdout=slave, stderr=slave, cwd=REPO, env=env)
    os.close(slave)
    return process, master


def read_until(master: int, seen: list[str], pattern: str, timeout: float = 30) -> str:
    """Read the terminal until its text (escapes removed) matches `pattern`; all of it so far."""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, ANSI.sub("", "".join(seen))):
        assert time.monotonic() < deadline, f"no {pattern!r} in {''.join(seen)!r}"
        if select.select([master], [], [], 0.5)[0]:
            try:
                seen.append(os.read(master, 4096).decode(errors="replace"))
            except OSError:  # the process ended and closed the terminal
                raise AssertionError(f"no {pattern!r} in {ANSI.sub('', ''.join(seen))!r}") from None
    return ANSI.sub("", "".join(seen))


def end(process: subprocess.Popen, master: int) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    os.close(master)


def terminal_env(url: str) -> dict:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("BULKPROC_")},
            "BULKPROC_URL": url, "TERM": "xterm", "COLUMNS": "100"}


def test_a_terminal_shows_a_progress_bar_and_a_summary(service, csv_file):
    process, master = spawn_on_terminal("upload", csv_file(hospitals_csv(3)), env=terminal_env(service.url))
    try:
        text = read_until(master, [], r"live, 0 failed")
        assert process.wait(timeout=30) == 0
    finally:
        end(process, master)
    assert re.search(r"batch [0-9a-f]{8} .*3/3", text)  # the bar, at its end
    assert re.search(r"Batch [0-9a-f-]{36}: completed, 3 of 3 hospitals in the directory, live", text)


def test_ctrl_c_leaves_the_batch_running_and_says_how_to_follow_it(make_app, serve_app, upstream, csv_file):
    service = serve_app(make_app(READ_TIMEOUT=30.0))  # a held creation is waited for, not timed out
    upstream.sim.add_fault("create", "store_then_hang", seconds=30)
    process, master = spawn_on_terminal("upload", csv_file(hospitals_csv(2)), env=terminal_env(service.url))
    seen: list[str] = []
    try:
        read_until(master, seen, r"batch [0-9a-f]{8} .*/2")  # following, the first creation held
        process.send_signal(signal.SIGINT)
        text = read_until(master, seen, r"Follow it with: bulkproc status \S+")
        assert process.wait(timeout=30) == 130
    finally:
        end(process, master)
    batch_id = re.search(r"bulkproc status (\S+)", text).group(1)
    upstream.sim.release_hangs()
    wait_until(lambda: service.get(f"/hospitals/bulk/{batch_id}").json()["status"] == "completed",
               timeout=30, what="the batch to finish without the command")


# -- following: the event stream, and the document when it drops ----------------------------


class FakeService:
    """Event streams and document reads scripted in order."""

    def __init__(self, streams: list, documents: list) -> None:
        self.streams, self.documents = streams, documents

    def events(self, work):
        outcome = self.streams.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        yield from outcome

    def document(self, work):
        outcome = self.documents.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def doc(status: str) -> dict:
    return {"batch_id": "b", "status": status, "total_hospitals": 1, "processed_hospitals": 0, "failed_hospitals": 0}


def test_a_dropped_stream_is_read_again_and_followed_to_the_end():
    shown = []
    fake = FakeService([[doc("processing")], Unreachable("dropped"), [doc("processing"), doc("completed")]],
                       [doc("processing")])
    final = follow(fake, Work("batch", "b"), doc("queued"), shown.append, pause=lambda _s: None)
    assert final["status"] == "completed"
    assert [d["status"] for d in shown] == ["queued", "processing", "processing", "processing", "completed"]


def test_too_many_streams_reads_the_document_instead():
    fake = FakeService([Refused(503, "busy")], [doc("completed")])
    assert follow(fake, Work("batch", "b"), doc("processing"), lambda _d: None,
                  pause=lambda _s: None)["status"] == "completed"


def test_a_service_gone_for_good_ends_the_following():
    fake = FakeService([Unreachable("gone")] * 3, [])
    with pytest.raises(Unreachable):
        follow(fake, Work("batch", "b"), doc("processing"), lambda _d: None, give_up_after=0.0,
               pause=lambda _s: None)


def test_server_sent_events_are_parsed_skipping_comments():
    lines = ["retry: 2000", "", ": keep-alive", "", 'data: {"a": 1}', "", "data: [1,", "data: 2]", ""]
    assert list(parse_events(lines)) == [{"a": 1}, [1, 2]]


def test_the_console_script_is_the_command_and_loads_none_of_the_service():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"bulkproc": "bulkproc.cli.main:main"}
    loaded = subprocess.run([sys.executable, "-c", "import sys, bulkproc.cli.main; print(sorted(sys.modules))"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert not {"flask", "sqlalchemy", "rich", "requests", "bulkproc.store", "pydantic",
                "bulkproc.contract"} & set(eval(loaded))


def test_the_command_reads_the_contract_s_documents_by_its_names():
    """The command reads documents as JSON, without the models (they would cost its start): the
    names it goes by are the contract's."""
    from bulkproc import contract, states
    from bulkproc.cli import service

    assert service.RUNNING == {str(s) for s in states.RUNNING}
    counts = {"status", "total_hospitals", "processed_hospitals", "failed_hospitals", "processing_time_seconds"}
    assert counts | {"batch_id", "hospitals"} <= set(contract.BatchDocument.model_fields)
    assert counts | {"import_id"} <= set(contract.ImportDocument.model_fields)
    assert {"row", "status"} <= set(contract.RowDocument.model_fields)
    assert {"error", "details"} == set(contract.Error.model_fields)
    assert {"row", "column", "message"} <= set(contract.ErrorDetail.model_fields)
