"""Fixtures for the store tests: a real PostgreSQL server on loopback (started once per session,
from the distribution's binaries, in a temporary data folder), and ``store_url``: each test's own
empty store, on SQLite and on PostgreSQL (the same test runs on both).

Import the ``*_fixture`` functions into a test module to use them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchlab.store.ids import new_ulid

if TYPE_CHECKING:
    from orchlab.store.store import Store

PG_USER = "orchlab"


def pg_bindir() -> Path:
    """The newest PostgreSQL server binaries (``/usr/lib/postgresql/<version>/bin``)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError(
        "the store tests need PostgreSQL's server binaries (initdb, pg_ctl): "
        "apt-get install -y postgresql (.ci/run does it)"
    )


def _as_server_user() -> tuple[list[str], int | None]:
    """initdb refuses root: as root the server runs as the distribution's ``postgres`` user."""
    if os.geteuid() != 0:
        return [], None
    try:
        uid = pwd.getpwnam("postgres").pw_uid
    except KeyError:
        raise RuntimeError("running as root and there is no 'postgres' user to run PostgreSQL as") from None
    return ["runuser", "-u", "postgres", "--"], uid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """``initdb`` + ``pg_ctl start`` in a temporary folder, on 127.0.0.1 (trust auth, no fsync)."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.bin = pg_bindir()
        self.prefix, uid = _as_server_user()
        self.base = Path(tempfile.mkdtemp(prefix="orchlab-pg-"))
        if uid is not None:
            os.chown(self.base, uid, -1)
        self.data = self.base / "data"
        self.port = free_port()
        self.fsync = fsync

    def _run(self, *args: str) -> None:
        subprocess.run([*self.prefix, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            PG_USER,
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = f"-h 127.0.0.1 -p {self.port} -k {self.base}" + ("" if self.fsync else " -F")
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.base / "log"),
            "-w",
            "start",
        )
        return self

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"t_{new_ulid().lower()}"
        with psycopg.connect(f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session", name="postgres")
def postgres_fixture() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"], name="store_url")
def store_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store of this test's own: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'threads.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


def feedback_rows(store: Store) -> list[tuple[object, ...]]:
    from sqlalchemy import select

    from orchlab.store.schema import feedback

    with store._engine.connect() as conn:
        rows = conn.execute(
            select(
                feedback.c.message_id, feedback.c.user, feedback.c.kind, feedback.c.value, feedback.c.comment
            ).order_by(feedback.c.user)
        )
        return [tuple(r) for r in rows]


def opened_behind_a_lock(path: Path, open_: Callable[[], object]) -> object:
    """What ``open_()`` returns (or raises) when it opens the new SQLite file ``path`` while
    another connection holds its write lock, released 0.3 s later: SQLite refuses the switch to
    WAL at once there, without its busy handler (two processes opening a new file together)."""
    import sqlite3
    import threading
    import time

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(open_())
        except Exception as exc:  # returned to the test, with its message
            outcome.append(exc)

    opener = threading.Thread(target=run)
    opener.start()
    time.sleep(0.3)  # the opener meets the lock (no timing is asserted)
    assert outcome == [], f"opening {path.name} did not wait for the lock: {outcome}"
    holder.execute("COMMIT")
    holder.close()
    opener.join(timeout=60)
    assert len(outcome) == 1, f"opening {path.name} never ended"
    return outcome[0]
