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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import bindparam, func, select, update

from orchlab.store.ids import new_ulid
from orchlab.store.keys import utcnow
from orchlab.store.schema import api_keys, usage_ledger, users

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from orchlab.store.settings import StoreSettings

EPSILON = 1e-12
T = TypeVar("T")


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
    """``settled`` (billed ``amount_usd``), ``released`` (nothing was billed) or ``unpriced``
    (no budget, so nothing reserved, and the cost is unknown: recorded at 0 with its tokens)."""
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
    """Settle reserved rows; record attempts that reserved nothing (no budget) as new rows."""
    at = utcnow()
    for s in settlements:
        facts = {
            "status": s.status,
            "amount_usd": s.amount_usd,
            "settled_at": at,
            "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens,
        }
        if s.entry_id is not None:
            conn.execute(_SETTLE, {"entry_id": s.entry_id, **{f"new_{k}": v for k, v in facts.items()}})
        elif s.status != "released":
            row = {
                "id": new_ulid(),
                "key_id": s.key_id,
                "user_id": s.user_id,
                "created_at": at,
                "reserved_usd": 0.0,
                "request_id": s.request_id,
                "endpoint": s.endpoint,
                "provider": s.provider,
                "model": s.model,
            }
            conn.execute(_INSERT, {**row, **facts})


class Busy:
    """`write_now` could not take SQLite's write lock at once."""


BUSY = Busy()


class NoWait:
    """Ledger writes that never wait for a lock: SQLite only, on a connection whose busy timeout
    is 0 (a server runs them on its event loop, where waiting would stall every request; when
    another process holds the lock, it gets `BUSY` and writes from a thread instead)."""

    def __init__(self, settings: StoreSettings) -> None:
        from orchlab.store.engine import WRITE, sync_engine

        assert settings.backend == "sqlite"
        self._writer = sync_engine(settings, wait=False).execution_options(**WRITE)

    def write(self, op: Callable[..., T], *args: Any, **kwargs: Any) -> T | Busy:
        from sqlalchemy.exc import DBAPIError

        from orchlab.store.engine import is_locked

        try:
            with self._writer.begin() as conn:
                return op(conn, *args, **kwargs)
        except DBAPIError as exc:
            if is_locked(exc):
                return BUSY
            raise

    def close(self) -> None:
        self._writer.engine.dispose()


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
