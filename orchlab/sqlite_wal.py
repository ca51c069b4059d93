"""Switching a SQLite database to WAL when several processes may open it at once.

SQLite answers "database is locked" *at once*, without calling its busy handler, when a
connection asks for WAL while another connection holds a lock on the file (two processes
opening a new database together meet this). `use_wal` waits and asks again, as the busy
timeout would, up to ``timeout_s``; the mode, once set, stays with the file. `says_locked`
tells SQLite's lock errors from the others, whichever driver raised them.
"""

from __future__ import annotations

import random
import time
from typing import Any


def use_wal(cursor: Any, *, timeout_s: float) -> None:
    """Put the database of ``cursor`` (sqlite3's or a driver's adapted cursor) in WAL mode."""
    end = time.monotonic() + timeout_s
    delay = 0.002
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:  # the driver's own OperationalError (sqlite3, aiosqlite)
            if not says_locked(exc) or time.monotonic() > end:
                raise
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.1)


def says_locked(exc: BaseException) -> bool:
    """SQLite's "database is locked" / "database table is locked" / "busy"."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text
