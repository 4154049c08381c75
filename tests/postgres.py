"""A throwaway PostgreSQL server for the test session, and a store URL per test on either backend.

Each xdist worker is a session of its own, so it starts its own server (about 0.6 s) in a fresh
temporary directory on a free_port(): workers share no data directory, port or connection limit.

Consumers register the fixtures by importing them:

    from tests.postgres import postgres_url, store_url  # noqa: F401
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port

# A few stores per test, each pooling up to 40 connections under load; the default 100 is tight.
MAX_CONNECTIONS = 300


def _pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian layout), or None."""
    versions = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    versions.sort(key=lambda bin_dir: int(bin_dir.parent.name) if bin_dir.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


class _Server:
    """One PostgreSQL cluster in a temporary directory, run as `postgres` when we are root."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="bulkproc-pg-"))
        self.data, self.sockets, self.log = self.root / "data", self.root / "sockets", self.root / "server.log"
        self.sockets.mkdir()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            # initdb refuses to run as root; the cluster must belong to the user that runs it.
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self.port = 0

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}{log}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        # A port found free can be taken before the server binds it; try a few.
        for attempt in range(5):
            self.port = free_port()
            options = (f"-F -p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                       f"-c max_connections={MAX_CONNECTIONS} -c full_page_writes=off "
                       "-c synchronous_commit=off")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                          "-o", options, "start")
                return
            except RuntimeError:
                if attempt == 4:
                    raise

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


# Every module that imports the fixture gets its own copy of it; they share one server.
_shared: dict[str, object] = {"server": None, "users": 0}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of the `postgres` database on a server that lives for the test session."""
    if _shared["server"] is None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            pytest.skip("PostgreSQL is not installed")
        server = _Server(bin_dir)
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        _shared["server"] = server
    server = _shared["server"]
    _shared["users"] += 1
    try:
        yield server.url()
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared["server"] = None
            server.stop()


def _admin(postgres_url: str, statement: str) -> None:
    import psycopg  # only needed when PostgreSQL runs

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database for this test alone: a SQLite file, or a fresh PostgreSQL schema.

    A schema (made first on the URL's search_path) takes a millisecond where CREATE DATABASE takes
    a third of a second; the store names its tables without a schema, so it cannot tell.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.sqlite3"
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex}"
    _admin(base, f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        _admin(base, f"DROP SCHEMA {schema} CASCADE")
