"""The usage ledger: one row per provider attempt made with a gateway key, what it cost.

A budgeted key reserves an attempt's worst case before anything is sent (`reserve`: a row
``reserved`` whose ``amount_usd`` is the worst case), and the attempt's end settles it (`settle`:
``settled`` at the real cost, or ``released`` at 0 when nothing was billed). A budget is enforced
on ``SUM(amount_usd)`` of the key's rows in the budget's window, read in the same transaction as
the insert: reserved rows count at their worst case, so concurrent calls from any number of
workers or hosts cannot overspend, and a restart forgets nothing (a worker killed mid-call leaves
its reservation standing, which only errs on the safe side).

The check and the insert are one write transaction: on SQLite ``BEGIN IMMEDIATE`` makes writers
take turns; on PostgreSQL the key's row is locked (``SELECT ... FOR UPDATE``) first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, func, select, update

from orchlab.sqlite_wal import says_locked
from orchlab.store.ids import new_ulid
from orchlab.store.keys import utcnow
from orchlab.store.schema import api_keys, usage_ledger, users

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from orchlab.store.settings import StoreSettings

EPSILON = 1e-12


@dataclass(frozen=True, slots=True)
class Refused:
    """A reservation that would overrun the budget: what was spent (and held) in the window."""

    spent_usd: float


@dataclass(frozen=True, slots=True)
class Settlement:
    """An attempt's end: its ledger row (None: nothing was reserved) and what it cost."""

    entry_id: str | None
    amount_usd: float
    status: str
    """``settled`` (billed ``amount_usd``), ``released`` (nothing was billed), ``unpriced``
    (no budget, so nothing reserved, and the cost is unknown: recorded at 0 with its tokens) or
    ``withdrawn`` (the request was refused before its attempt began: the row is deleted)."""
    key_id: str
    user_id: str
    provider: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    request_id: str | None = None
    endpoint: str | None = None


_SUM = func.coalesce(func.sum(usage_ledger.c.amount_usd), 0.0)
_SPENT = select(_SUM).where(usage_ledger.c.key_id == bindparam("key_id"))
_SPENT_SINCE = _SPENT.where(usage_ledger.c.created_at >= bindparam("since"))
_LOCK_KEY = select(api_keys.c.id).where(api_keys.c.id == bindparam("key_id")).with_for_update()
_INSERT = usage_ledger.insert()
_SETTLE = (
    update(usage_ledger)
    .where(usage_ledger.c.id == bindparam("entry_id"), usage_ledger.c.status == "reserved")
    .values(
        status=bindparam("new_status"),
        amount_usd=bindparam("new_amount_usd"),
        settled_at=bindparam("new_settled_at"),
        input_tokens=bindparam("new_input_tokens"),
        output_tokens=bindparam("new_output_tokens"),
    )
)
_WITHDRAW = delete(usage_ledger).where(
    usage_ledger.c.id == bindparam("entry_id"), usage_ledger.c.status == "reserved"
)
# statements built once: only their parameters change per call (SQLAlchemy's per-statement
# construction and cache-key work would otherwise cost more than SQLite's own)


def spent(conn: Connection, key_id: str, since: datetime | None) -> float:
    """``SUM(amount_usd)`` of the key's rows since ``since`` (reservations at their worst case)."""
    if since is None:
        return float(conn.execute(_SPENT, {"key_id": key_id}).scalar_one())
    return float(conn.execute(_SPENT_SINCE, {"key_id": key_id, "since": since}).scalar_one())


def reserve(
    conn: Connection,
    *,
    key_id: str,
    user_id: str,
    amount_usd: float,
    limit_usd: float,
    since: datetime | None,
    request_id: str | None,
    endpoint: str | None,
    provider: str,
    model: str,
) -> str | Refused:
    """Hold ``amount_usd`` if the window's sum stays within ``limit_usd``: the row's id, or `Refused`."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_KEY, {"key_id": key_id})
    used = spent(conn, key_id, since)
    if used + amount_usd > limit_usd + EPSILON:
        return Refused(used)
    entry = new_ulid()
    conn.execute(
        _INSERT,
        {
            "id": entry,
            "key_id": key_id,
            "user_id": user_id,
            "created_at": utcnow(),
            "settled_at": None,
            "status": "reserved",
            "amount_usd": amount_usd,
            "reserved_usd": amount_usd,
            "request_id": request_id,
            "endpoint": endpoint,
            "provider": provider,
            "model": model,
            "input_tokens": None,
            "output_tokens": None,
        },
    )
    return entry


def settle(conn: Connection, settlements: Sequence[Settlement]) -> None:
    """Settle reserved rows; record attempts that reserved nothing (no budget) as new rows;
    delete withdrawn reservations (each kind in one executemany)."""
    at = utcnow()
    updates: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    withdrawn: list[dict[str, Any]] = []
    for s in settlements:
        if s.status == "withdrawn":
            if s.entry_id is not None:
                withdrawn.append({"entry_id": s.entry_id})
            continue
        facts = {
            "status": s.status,
            "amount_usd": s.amount_usd,
            "settled_at": at,
            "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens,
        }
        if s.entry_id is not None:
            updates.append({"entry_id": s.entry_id, **{f"new_{k}": v for k, v in facts.items()}})
        elif s.status != "released":
            inserts.append(
                {
                    "id": new_ulid(),
                    "key_id": s.key_id,
                    "user_id": s.user_id,
                    "created_at": at,
                    "reserved_usd": 0.0,
                    "request_id": s.request_id,
                    "endpoint": s.endpoint,
                    "provider": s.provider,
                    "model": s.model,
                    **facts,
                }
            )
    if updates:
        conn.execute(_SETTLE, updates)
    if inserts:
        conn.execute(_INSERT, inserts)
    if withdrawn:
        conn.execute(_WITHDRAW, withdrawn)


class Busy:
    """`write_now` could not take SQLite's write lock at once."""


BUSY = Busy()


class NoWait:
    """Reservations that never wait for a lock: SQLite only, on one plain ``sqlite3`` connection
    whose busy timeout is 0, used from one thread (a server's event loop, where waiting would
    stall every request: when another process holds the lock it gets `BUSY` and reserves from a
    thread instead). The same statements as `reserve`, in SQLite's own SQL: on the request's path
    SQLAlchemy's execution layer would cost more than SQLite itself.

    The window's sum is read again only when another connection committed something since this
    one last read or wrote it (SQLite's ``PRAGMA data_version``, read under the write lock: any
    other worker's reservation, any settlement); else it is the sum this connection last read
    plus what it reserved since, exactly what a ``SUM`` would find, without scanning the
    window's rows."""

    _SUM = "SELECT COALESCE(SUM(amount_usd), 0.0) FROM usage_ledger WHERE key_id = ?"
    _INSERT = (
        "INSERT INTO usage_ledger (id, key_id, user_id, created_at, status, amount_usd, reserved_usd,"
        " request_id, endpoint, provider, model) VALUES (?, ?, ?, ?, 'reserved', ?, ?, ?, ?, ?, ?)"
    )

    def __init__(self, settings: StoreSettings) -> None:
        import sqlite3

        assert settings.sqlite_path is not None
        self._db = sqlite3.connect(
            settings.sqlite_path, timeout=0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA busy_timeout = 0")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._version = -1
        self._sums: dict[tuple[str, datetime | None], float] = {}
        """What each (key, window start) held after this connection's last read or write."""

    def reserve(
        self,
        *,
        key_id: str,
        user_id: str,
        amount_usd: float,
        limit_usd: float,
        since: datetime | None,
        request_id: str | None,
        endpoint: str | None,
        provider: str,
        model: str,
    ) -> str | Refused | Busy:
        """`reserve`, or `BUSY` when another connection holds the write lock."""
        import sqlite3

        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if says_locked(exc):
                return BUSY
            raise
        try:
            version = db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:  # another connection wrote: what was read is stale
                self._sums.clear()
                self._version = version
            used = self._sums.get((key_id, since))
            if used is None:
                if since is None:
                    used = db.execute(self._SUM, (key_id,)).fetchone()[0]
                else:
                    used = db.execute(
                        self._SUM + " AND created_at >= ?", (key_id, _sqlite_time(since))
                    ).fetchone()[0]
                self._sums[(key_id, since)] = used = float(used)
            if used + amount_usd > limit_usd + EPSILON:
                db.execute("ROLLBACK")
                return Refused(used)
            entry = new_ulid()
            row = (entry, key_id, user_id, _sqlite_time(utcnow()), amount_usd, amount_usd)
            db.execute(self._INSERT, (*row, request_id, endpoint, provider, model))
            db.execute("COMMIT")
            self._sums[(key_id, since)] = used + amount_usd
            return entry
        except BaseException:
            self._sums.clear()
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()


def _sqlite_time(at: datetime) -> str:
    """A UTC time as `orchlab.store.schema.UTCDateTime` stores it on SQLite (naive UTC text)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")  # (strftime: 5x slower)


def usage(conn: Connection, since: datetime | None) -> list[dict[str, Any]]:
    """Per user and key: attempts, tokens, and cost (reservations still open at their worst case)."""
    q = (
        select(
            users.c.name.label("user"),
            api_keys.c.prefix,
            func.count().label("attempts"),
            func.coalesce(func.sum(usage_ledger.c.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(usage_ledger.c.output_tokens), 0).label("output_tokens"),
            func.coalesce(func.sum(usage_ledger.c.amount_usd), 0.0).label("cost_usd"),
        )
        .join_from(usage_ledger, api_keys, usage_ledger.c.key_id == api_keys.c.id)
        .join(users, usage_ledger.c.user_id == users.c.id)
        .group_by(users.c.name, api_keys.c.prefix)
        .order_by(users.c.name, api_keys.c.prefix)
    )
    if since is not None:
        q = q.where(usage_ledger.c.created_at >= since)
    return [dict(r._mapping) for r in conn.execute(q)]
