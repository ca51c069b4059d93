"""Engines on the store, and its migrations applied on first use.

SQLite: WAL (readers never wait for a writer), ``synchronous=NORMAL`` (a killed process loses
nothing committed; WAL recovers on the next open), a busy timeout, and every write transaction
opened with ``BEGIN IMMEDIATE``: a writer waits for the write lock *before* it reads, so SQLite's
busy handler always applies (a deferred transaction that upgrades to a write can fail at once
with "database is locked"). The switch to WAL, which SQLite refuses at once while another
connection holds a lock, waits as the busy timeout would (`orchlab.sqlite_wal`). `retry_locked`
is the last net: a write that still meets a lock after the busy timeout is retried, never
reported to the caller, until `WRITE_DEADLINE_S`.

PostgreSQL: psycopg 3 (sync and async), sessions in UTC with ``synchronous_commit=off``: the
same promise as SQLite's ``synchronous=NORMAL`` (a killed client or server process loses no
committed message; a power cut of the database host may lose the last fraction of a second of
them, never corrupt anything), without waiting for a disk flush on every message.

Migrations (alembic, ``migrations/`` in the package) run once per process and store, under a lock
that every process takes (a file lock beside a SQLite store, an advisory lock on PostgreSQL), so
two processes starting at once migrate once; each migration is one transaction.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError

from orchlab.errors import StoreError
from orchlab.sqlite_wal import says_locked, use_wal
from orchlab.store.settings import StoreSettings

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

PG_OPTIONS = "-c timezone=UTC -c synchronous_commit=off"
HEAD = "0002"
"""The newest migration in ``migrations/versions`` (a test checks it against alembic's head)."""
MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 30_000
WRITE_DEADLINE_S = 300.0
ADVISORY_LOCK = 0x6F72_6368  # "orch": the migration lock on PostgreSQL
WRITE = {"orchlab_write": True}
"""Execution options of a write transaction (``BEGIN IMMEDIATE`` on SQLite)."""

_migrated: set[str] = set()
_migrate_lock = threading.Lock()
T = TypeVar("T")


def sync_engine(settings: StoreSettings, *, reads: bool = False) -> Engine:
    """A pooled engine on the store (not yet migrated: `migrate`). ``reads``: on PostgreSQL, an
    engine of autocommit connections for single-statement reads (no BEGIN, no ROLLBACK, no
    isolation switch per checkout: one round trip per read)."""
    if settings.backend == "sqlite":
        path = settings.sqlite_path
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            settings.url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        )
        _sqlite_events(engine)
        return engine
    _need_psycopg(settings)
    # no pre-ping (a round trip per checkout): a connection found dead is invalidated and the
    # read retried once (`Store.read`), the pool replaced on the next checkout
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None} if reads else {}
    return create_engine(settings.url, pool_recycle=1800, connect_args={"options": PG_OPTIONS}, **options)


def async_engine(settings: StoreSettings) -> AsyncEngine:
    """An async engine (aiosqlite for SQLite, psycopg's async mode for PostgreSQL): for servers."""
    from sqlalchemy.ext.asyncio import create_async_engine

    if settings.backend == "sqlite":
        try:
            import aiosqlite  # noqa: F401
        except ImportError:
            raise StoreError(
                "the async store on SQLite needs aiosqlite: pip install 'orchlab[store]'"
            ) from None
        engine = create_async_engine(settings.async_url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _sqlite_events(engine.sync_engine)
        return engine
    _need_psycopg(settings)
    return create_async_engine(settings.async_url, pool_recycle=1800, connect_args={"options": PG_OPTIONS})


def _need_psycopg(settings: StoreSettings) -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise StoreError(
            f"the store {settings.safe_url} is PostgreSQL, which needs psycopg: pip install 'orchlab[store]'"
        ) from None


def _sqlite_events(engine: Engine) -> None:
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)


def _sqlite_connect(dbapi_con: Any, record: Any) -> None:
    dbapi_con.isolation_level = None  # transactions are begun by `_sqlite_begin`, not by the driver
    cur = dbapi_con.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        use_wal(cur, timeout_s=BUSY_TIMEOUT_MS / 1000)
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
    finally:
        cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("orchlab_write") else "BEGIN")


def is_locked(exc: BaseException) -> bool:
    """SQLite's "database is locked" / "busy" (PostgreSQL never says so)."""
    return isinstance(exc, OperationalError | DBAPIError) and says_locked(getattr(exc, "orig", exc))


def retry_locked(fn: Callable[[], T], *, deadline_s: float = WRITE_DEADLINE_S) -> T:
    """``fn()``, again (with a random backoff) while SQLite says the database is locked."""
    end = time.monotonic() + deadline_s
    delay = 0.005
    while True:
        try:
            return fn()
        except (OperationalError, DBAPIError) as exc:
            if not is_locked(exc) or time.monotonic() > end:
                raise
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.5)


# --- migrations ------------------------------------------------------------------------------


def migrate(engine: Engine, settings: StoreSettings) -> None:
    """Bring the store to `HEAD` (once per process and store; a no-op when it is there)."""
    if settings.url in _migrated:
        return
    with _migrate_lock:
        if settings.url in _migrated:
            return
        try:
            if current_revision(engine) != HEAD:
                retry_locked(lambda: _upgrade(engine, settings))
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(
                f"the thread store {settings.safe_url} could not be opened or migrated: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            ) from exc
        _migrated.add(settings.url)


def current_revision(engine: Engine) -> str | None:
    """The store's alembic revision (None: a new store)."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, DBAPIError) as exc:
        if is_locked(exc):
            raise
        return None


def _upgrade(engine: Engine, settings: StoreSettings) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    with _lock_migrations(engine, settings) as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        try:
            command.upgrade(config, "head")
        except CommandError as exc:
            raise StoreError(
                f"the thread store {settings.safe_url} has a schema this orchlab does not know "
                f"({exc}); a newer orchlab made it: upgrade orchlab, or point ORCH_STORE_URL / "
                "store.url at another store"
            ) from None
        conn.commit()


@contextlib.contextmanager
def _lock_migrations(engine: Engine, settings: StoreSettings) -> Iterator[Connection]:
    """A connection holding the store's migration lock (every process takes the same one)."""
    if settings.backend == "sqlite":
        path = settings.sqlite_path
        assert path is not None
        lock = path.with_name(path.name + ".migrate.lock")
        with _file_lock(lock), engine.connect().execution_options(**WRITE) as conn:
            yield conn
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK})
        conn.commit()
        try:
            yield conn
        finally:
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK})
            conn.commit()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.name == "nt":  # pragma: no cover - POSIX here
            import msvcrt

            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
                    break
                except OSError:
                    time.sleep(0.05)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
