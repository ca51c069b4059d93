"""The store's statements, each a function of a SQLAlchemy ``Connection``: `Store` runs them in a
transaction, `AsyncStore` through ``AsyncConnection.run_sync`` (the same code on both engines)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, and_, bindparam, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from orchlab.store.ids import new_ulid
from orchlab.store.schema import feedback, messages, prompt_versions, threads
from orchlab.store.values import StoredMessage, ThreadInfo

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Row


def now() -> datetime:
    return datetime.now(UTC)


def _insert(conn: Connection, table: Any) -> Any:
    """The dialect's INSERT (it has ``on_conflict_do_*`` on both SQLite and PostgreSQL)."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


# --- threads ---------------------------------------------------------------------------------


def thread_info(row: Row[Any]) -> ThreadInfo:
    m = row._mapping
    return ThreadInfo(
        m["id"],
        m["name"],
        m["title"],
        m["user"],
        m["head_id"],
        m["created_at"],
        m["updated_at"],
        dict(m["meta"] or {}),
    )


def create_thread(
    conn: Connection,
    *,
    name: str | None,
    title: str | None,
    user: str | None,
    meta: Mapping[str, Any] | None,
) -> ThreadInfo:
    """A new thread; with a ``name``, the thread of that name (made by whoever came first)."""
    at = now()
    values = {
        "id": new_ulid(),
        "name": name,
        "title": title if title is not None else name,
        "user": user,
        "head_id": None,
        "created_at": at,
        "updated_at": at,
        "meta": dict(meta or {}),
    }
    stmt = _insert(conn, threads).values(**values)
    if name is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["name"])
    conn.execute(stmt)
    found = get_thread(conn, name) if name is not None else get_thread(conn, str(values["id"]), by_name=False)
    assert found is not None
    return found


def get_thread(conn: Connection, key: str, *, by_name: bool | None = None) -> ThreadInfo | None:
    """By id, else by name (``by_name`` None tries both)."""
    if by_name is not True:
        row = conn.execute(select(threads).where(threads.c.id == key)).first()
        if row is not None or by_name is False:
            return thread_info(row) if row is not None else None
    row = conn.execute(select(threads).where(threads.c.name == key)).first()
    return thread_info(row) if row is not None else None


def set_head(conn: Connection, thread_id: str, head_id: str | None) -> None:
    conn.execute(update(threads).where(threads.c.id == thread_id).values(head_id=head_id, updated_at=now()))


def list_threads(
    conn: Connection, *, user: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    n = (
        select(
            messages.c.thread_id,
            func.count().label("messages"),
            func.max(messages.c.created_at).label("last"),
        )
        .group_by(messages.c.thread_id)
        .subquery()
    )
    stmt = (
        select(
            threads.c.id,
            threads.c.name,
            threads.c.title,
            threads.c.user,
            func.coalesce(n.c.messages, 0).label("messages"),
            threads.c.created_at,
            threads.c.updated_at,
            threads.c.head_id,
        )
        .select_from(threads.outerjoin(n, n.c.thread_id == threads.c.id))
        .order_by(threads.c.updated_at.desc(), threads.c.id.desc())
    )
    if user is not None:
        stmt = stmt.where(threads.c.user == user)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [dict(r._mapping) for r in conn.execute(stmt)]


# --- messages --------------------------------------------------------------------------------

_COLUMNS = [c.key for c in messages.columns]


def stored_message(row: Row[Any]) -> StoredMessage:
    m = row._mapping
    values = {k: m[k] for k in _COLUMNS}
    values["content"] = tuple(values["content"] or ())
    return StoredMessage(**values)


def insert_messages(conn: Connection, rows: Sequence[Mapping[str, Any]], *, head: str | None) -> None:
    """Write messages (each once: ids are new ULIDs) and move their thread's head to ``head``."""
    if not rows:
        return
    # every row with every column: an executemany takes its columns from the first row
    conn.execute(messages.insert(), [{k: r.get(k) for k in _COLUMNS} for r in rows])
    if head is not None:
        set_head(conn, rows[-1]["thread_id"], head)


def _branch_statement() -> Any:
    """The last ``:depth`` messages of the branch that ends at ``:head``, oldest first: one query, a
    recursive CTE that walks ``parent_id`` (primary-key lookups: its cost is the depth, not the
    thread's length)."""
    anchor = select(messages.c.id, messages.c.parent_id, literal(1, Integer).label("n")).where(
        messages.c.id == bindparam("head")
    )
    walk = anchor.cte("branch", recursive=True)
    parent = messages.alias("parent")
    walk = walk.union_all(
        select(parent.c.id, parent.c.parent_id, walk.c.n + 1).where(
            and_(parent.c.id == walk.c.parent_id, walk.c.n < bindparam("depth"))
        )
    )
    return select(messages).join(walk, messages.c.id == walk.c.id).order_by(walk.c.n.desc())


def _current_branch_statement() -> Any:
    """`BRANCH` from the thread's current head (``:thread``): still one query."""
    head = select(threads.c.head_id).where(threads.c.id == bindparam("thread")).scalar_subquery()
    anchor = select(messages.c.id, messages.c.parent_id, literal(1, Integer).label("n")).where(
        messages.c.id == head
    )
    walk = anchor.cte("branch", recursive=True)
    parent = messages.alias("parent")
    walk = walk.union_all(
        select(parent.c.id, parent.c.parent_id, walk.c.n + 1).where(
            and_(parent.c.id == walk.c.parent_id, walk.c.n < bindparam("depth"))
        )
    )
    return select(messages).join(walk, messages.c.id == walk.c.id).order_by(walk.c.n.desc())


BRANCH = _branch_statement()
CURRENT_BRANCH = _current_branch_statement()


def branch(conn: Connection, head_id: str | None, depth: int) -> list[StoredMessage]:
    """The last ``depth`` messages of the branch ending at ``head_id``, oldest first."""
    if head_id is None or depth <= 0:
        return []
    return [stored_message(r) for r in conn.execute(BRANCH, {"head": head_id, "depth": depth})]


def current_branch(conn: Connection, thread_id: str, depth: int) -> tuple[str | None, list[StoredMessage]]:
    """The thread's head and the last ``depth`` messages of its branch (one query when depth > 0)."""
    if depth <= 0:
        head = conn.execute(select(threads.c.head_id).where(threads.c.id == thread_id)).scalar()
        return head, []
    found = [stored_message(r) for r in conn.execute(CURRENT_BRANCH, {"thread": thread_id, "depth": depth})]
    return (found[-1].id if found else None), found


def thread_messages(conn: Connection, thread_id: str) -> list[StoredMessage]:
    stmt = select(messages).where(messages.c.thread_id == thread_id).order_by(messages.c.id)
    return [stored_message(r) for r in conn.execute(stmt)]


def count_answers(conn: Connection, thread_id: str) -> int:
    stmt = select(func.count()).where(messages.c.thread_id == thread_id, messages.c.role == "assistant")
    return int(conn.execute(stmt).scalar() or 0)


def get_message(conn: Connection, message_id: str) -> StoredMessage | None:
    row = conn.execute(select(messages).where(messages.c.id == message_id)).first()
    return stored_message(row) if row is not None else None


def message_by_trace(conn: Connection, trace_id: str) -> StoredMessage | None:
    stmt = (
        select(messages)
        .where(messages.c.trace_id == trace_id, messages.c.role == "assistant")
        .order_by(messages.c.id.desc())
        .limit(1)
    )
    row = conn.execute(stmt).first()
    return stored_message(row) if row is not None else None


# --- feedback and prompt versions ------------------------------------------------------------


def upsert_feedback(
    conn: Connection,
    *,
    message_id: str,
    user: str,
    kind: str,
    value: int,
    comment: str | None,
    tags: Mapping[str, Any] | None,
) -> None:
    at = now()
    stmt = _insert(conn, feedback).values(
        id=new_ulid(),
        message_id=message_id,
        user=user,
        kind=kind,
        value=value,
        comment=comment,
        tags=dict(tags or {}),
        created_at=at,
        updated_at=at,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["message_id", "user"],
        set_={"kind": kind, "value": value, "comment": comment, "tags": dict(tags or {}), "updated_at": at},
    )
    conn.execute(stmt)


def put_prompt_version(
    conn: Connection, *, name: str, version: str, template: str, source: str | None
) -> None:
    stmt = _insert(conn, prompt_versions).values(
        id=new_ulid(), name=name, version=version, template=template, source=source, created_at=now()
    )
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["name", "version"]))


# --- reads for people ------------------------------------------------------------------------

USAGE_KEYS = ("thread", "user", "day")


def usage(conn: Connection, by: str) -> list[dict[str, Any]]:
    """Assistant messages per thread, user or UTC day: calls, tokens, cost, mean latency."""
    keys: list[Any]
    if by == "thread":
        keys = [threads.c.id.label("thread_id"), threads.c.name.label("thread")]
    elif by == "user":
        keys = [threads.c.user.label("user")]
    else:
        keys = [func.date(messages.c.created_at).label("day")]
    stmt = (
        select(
            *keys,
            func.count().label("calls"),
            func.coalesce(func.sum(messages.c.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(messages.c.output_tokens), 0).label("output_tokens"),
            func.sum(messages.c.cost_usd).label("cost_usd"),
            func.avg(messages.c.latency_s).label("mean_latency_s"),
        )
        .select_from(messages.join(threads, threads.c.id == messages.c.thread_id))
        .where(messages.c.role == "assistant")
        .group_by(*keys)
        .order_by(*keys)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def rated_messages(conn: Connection, prompt: str, version: str | None) -> list[dict[str, Any]]:
    """Rated assistant messages made with a prompt (one version, or all)."""
    stmt = (
        select(
            messages.c.id.label("message_id"),
            messages.c.thread_id,
            messages.c.prompt_name.label("prompt"),
            messages.c.prompt_version.label("version"),
            messages.c.content,
            feedback.c.user,
            feedback.c.kind,
            feedback.c.value,
            feedback.c.comment,
            messages.c.trace_id,
            feedback.c.updated_at.label("rated_at"),
        )
        .select_from(messages.join(feedback, feedback.c.message_id == messages.c.id))
        .where(messages.c.prompt_name == prompt)
        .order_by(messages.c.id, feedback.c.user)
    )
    if version is not None:
        stmt = stmt.where(messages.c.prompt_version == version)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def thread_feedback(conn: Connection, thread_id: str) -> list[dict[str, Any]]:
    """The ratings of a thread's messages, oldest message first (``orchlab feedback show``)."""
    stmt = (
        select(
            messages.c.id.label("message_id"),
            messages.c.content,
            messages.c.llm_role,
            feedback.c.user,
            feedback.c.kind,
            feedback.c.value,
            feedback.c.comment,
            messages.c.trace_id,
            feedback.c.updated_at.label("rated_at"),
        )
        .select_from(messages.join(feedback, feedback.c.message_id == messages.c.id))
        .where(messages.c.thread_id == thread_id)
        .order_by(messages.c.id, feedback.c.user)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]
