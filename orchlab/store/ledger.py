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
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from orchlab.store.ids import new_ulid
from orchlab.store.keys import utcnow
from orchlab.store.schema import api_keys, usage_ledger, users

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

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
    """``settled`` (billed ``amount_usd``) or ``released`` (nothing was billed)."""
    provider: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


def spent(conn: Connection, key_id: str, since: datetime | None) -> float:
    """``SUM(amount_usd)`` of the key's rows since ``since`` (reservations at their worst case)."""
    q = select(func.coalesce(func.sum(usage_ledger.c.amount_usd), 0.0)).where(usage_ledger.c.key_id == key_id)
    if since is not None:
        q = q.where(usage_ledger.c.created_at >= since)
    return float(conn.execute(q).scalar_one())


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
        conn.execute(select(api_keys.c.id).where(api_keys.c.id == key_id).with_for_update())
    used = spent(conn, key_id, since)
    if used + amount_usd > limit_usd + EPSILON:
        return Refused(used)
    entry = new_ulid()
    conn.execute(
        usage_ledger.insert().values(
            id=entry,
            key_id=key_id,
            user_id=user_id,
            created_at=utcnow(),
            status="reserved",
            amount_usd=amount_usd,
            reserved_usd=amount_usd,
            request_id=request_id,
            endpoint=endpoint,
            provider=provider,
            model=model,
        )
    )
    return entry


def settle(
    conn: Connection,
    settlements: Sequence[Settlement],
    *,
    key_id: str,
    user_id: str,
    request_id: str | None,
    endpoint: str | None,
) -> None:
    """Settle reserved rows; record attempts that reserved nothing (no budget) as settled rows."""
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
            conn.execute(
                update(usage_ledger)
                .where(usage_ledger.c.id == s.entry_id, usage_ledger.c.status == "reserved")
                .values(**facts)
            )
        elif s.status == "settled":
            conn.execute(
                usage_ledger.insert().values(
                    id=new_ulid(),
                    key_id=key_id,
                    user_id=user_id,
                    created_at=at,
                    reserved_usd=0.0,
                    request_id=request_id,
                    endpoint=endpoint,
                    provider=s.provider,
                    model=s.model,
                    **facts,
                )
            )


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
