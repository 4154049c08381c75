"""The `bulkproc` command line: upload, follow, and act on batches and imports of a bulkproc service."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from . import display
from .follow import follow
from .service import Refused, Service, Unreachable, Work, work_of

DEFAULT_URL = "http://127.0.0.1:8000"

# Exit statuses (the contract's): every row live, some rows left out, the file refused, no answer.
LIVE, LEFT_OUT, REFUSED, NO_SERVICE = 0, 1, 2, 3
STOPPED = 130  # Ctrl-C: the shell's own status for an interrupt


@dataclass
class Options:
    url: str
    token: str | None
    json: bool = False
    url_given: bool = False  # on the command line (not BULKPROC_URL, not the default)

    def service(self) -> Service:
        return Service(self.url, self.token)

    def follow_hint(self, work_id: str) -> str:
        url = f" --url {self.url}" if self.url_given else ""
        return f"bulkproc{url} status {work_id}"


def _reporting(command: Callable[..., int]) -> Callable[..., None]:
    """Run a command, turning the service's silence or errors into exit status 3 with one line on stderr."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            status = command(*args, **kwargs)
        except Unreachable as exc:
            _fail(str(exc))
            status = NO_SERVICE
        except Refused as exc:
            _fail(exc.message, display.problem_lines(exc.details))
            status = NO_SERVICE
        sys.exit(status)
    return run


def _fail(message: str, lines: list[str] = ()) -> None:
    click.echo(f"bulkproc: {message}", err=True)
    for line in lines:
        click.echo(line, err=True)


def _options(json_flag: bool) -> Options:
    options: Options = click.get_current_context().find_object(Options)
    options.json = json_flag or not sys.stdout.isatty()
    return options


json_option = click.option("--json", "json_flag", is_flag=True, help="Print the document as JSON (the default "
                                                                       "when stdout is not a terminal).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="BULKPROC_URL", default=DEFAULT_URL, show_default=True,
              help="The service's address (BULKPROC_URL).")
@click.option("--token", envvar="BULKPROC_TOKEN", help="Its API token, sent as a bearer token (BULKPROC_TOKEN).")
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None) -> None:
    """Upload hospital files to a bulkproc service, follow them, and resume, activate or roll them back."""
    given = ctx.get_parameter_source("url") == click.core.ParameterSource.COMMANDLINE
    ctx.obj = Options(url, token or None, url_given=given)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--existing", type=click.Choice(["create", "skip"]), help="skip: leave rows already in the "
              "directory alone.")
@click.option("--async", "no_wait", is_flag=True, help="Print the accepted document and return at once.")
@click.option("--failed-out", type=click.Path(dir_okay=False, writable=True),
              help="Write the rows not created (failed.csv) to this file.")
@json_option
@_reporting
def upload(file: str, existing: str | None, no_wait: bool, failed_out: str | None, json_flag: bool) -> int:
    """Create the hospitals of FILE: one batch, or an import when it holds more rows than a batch may."""
    options = _options(json_flag)
    name, data = os.path.basename(file), _read(file)
    service = options.service()
    # A file valid as one batch goes as one; any other is sent as an import (refused there if bad).
    endpoint = "/hospitals/bulk" if service.validate(name, data)["valid"] else "/hospitals/imports"
    try:
        document = service.upload(name, data, endpoint, existing)
    except Refused as exc:
        if exc.status != 422:
            raise
        _fail(exc.message, display.problem_lines(exc.details))
        return REFUSED
    if no_wait:
        _print(options, document)
        return LIVE
    document = _follow(options, service, document)
    if failed_out:
        _write(failed_out, service.download(work_of(document), "failed.csv"))
    return _print(options, document)


@main.command()
@click.argument("work_id", metavar="ID")
@json_option
@_reporting
def status(work_id: str, json_flag: bool) -> int:
    """Show a batch or an import (exit 0 only once every row is live)."""
    options = _options(json_flag)
    return _print(options, options.service().find(work_id)[1])


@main.command()
@click.argument("work_id", metavar="ID")
@json_option
@_reporting
def resume(work_id: str, json_flag: bool) -> int:
    """Create what is missing of a batch or an import, then activate it; follow it to the end."""
    return _act(_options(json_flag), work_id, "POST", "/resume")


@main.command()
@click.argument("work_id", metavar="ID")
@json_option
@_reporting
def activate(work_id: str, json_flag: bool) -> int:
    """Make a partially failed batch or import live without its failed rows; follow it to the end."""
    return _act(_options(json_flag), work_id, "POST", "/activate")


@main.command()
@click.argument("work_id", metavar="ID")
@json_option
@_reporting
def rollback(work_id: str, json_flag: bool) -> int:
    """Delete a batch's or an import's hospitals from the directory (exit 0 once rolled back)."""
    options = _options(json_flag)
    service = options.service()
    work, _ = service.find(work_id)
    document = service.act("DELETE", work)
    _print(options, document)
    return LIVE if document["status"] == "rolled_back" else LEFT_OUT


@main.command()
@click.argument("work_id", metavar="ID")
@click.option("--failed", is_flag=True, help="Only the rows not created (failed.csv), ready to fix and upload.")
@_reporting
def results(work_id: str, failed: bool) -> int:
    """Print a batch's or an import's results.csv (or failed.csv) to stdout."""
    service = _options(False).service()
    work, _ = service.find(work_id)
    out = sys.stdout.buffer
    for chunk in service.download(work, "failed.csv" if failed else "results.csv"):
        out.write(chunk)
    out.flush()
    return LIVE


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@json_option
@_reporting
def validate(file: str, json_flag: bool) -> int:
    """Check FILE as the service reads it, creating nothing (exit 2 with its problems when refused)."""
    options = _options(json_flag)
    name, data = os.path.basename(file), _read(file)
    service = options.service()
    answer = service.validate(name, data)
    if not answer["valid"]:  # too many rows for one batch, perhaps: then it would go as an import
        answer = service.validate(name, data, "/hospitals/imports")
    if options.json:
        click.echo(display.as_json(answer))
    if not answer["valid"]:
        _fail(f"{file} is refused: {len(answer['errors'])} problem(s).", display.problem_lines(answer["errors"]))
        return REFUSED
    if not options.json:
        click.echo(f"{file}: {answer['total_hospitals']} hospitals, ready to upload.")
    return LIVE


# -- the steps the commands share -------------------------------------------------------


def _act(options: Options, work_id: str, method: str, action: str) -> int:
    service = options.service()
    work, _ = service.find(work_id)
    document = _follow(options, service, service.act(method, work, action))
    return _print(options, document)


def _follow(options: Options, service: Service, document: dict[str, Any]) -> dict[str, Any]:
    """Follow the document's work to its end, with a bar on a terminal; Ctrl-C stops only the following."""
    work: Work = work_of(document)
    bar = None
    try:
        bar = None if options.json else display.Bar(work, sys.stdout)
        return follow(service, work, document, bar.show if bar else lambda _document: None)
    except KeyboardInterrupt:
        if bar:
            bar.close()
            bar = None
        _fail(f"stopped following; the {work.kind} {work.id} goes on in the service. "
              f"Follow it with: {options.follow_hint(work.id)}")
        sys.exit(STOPPED)
    finally:
        if bar:
            bar.close()


def _print(options: Options, document: dict[str, Any]) -> int:
    """Print the document (JSON or words); the exit status it means."""
    click.echo(display.as_json(document) if options.json else display.summary(document))
    return LIVE if document["status"] == "completed" else LEFT_OUT


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _write(path: str, chunks: Any) -> None:
    with open(path, "wb") as file:
        file.writelines(chunks)
