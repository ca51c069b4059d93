"""`Store` (blocking, for the library and the notebook) and `AsyncStore` (for servers): the same
statements (`orchlab.store.queries`) on a sync or an async SQLAlchemy engine.

For example:

    store = Store.open(StoreSettings("sqlite:////tmp/threads.db"))
    t = store.create_thread(name="review")
    store.branch(t.head_id, 10)        # the last 10 messages of its current branch
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from orchlab.errors import StoreError
from orchlab.store import queries
from orchlab.store.engine import WRITE, async_engine, is_locked, migrate, retry_locked, sync_engine
from orchlab.store.settings import StoreSettings
from orchlab.store.values import StoredMessage, ThreadInfo

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

P = ParamSpec("P")
T = TypeVar("T")
Op = Callable[Concatenate["Connection", P], T]

_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def open_store(settings: StoreSettings) -> Store:
    """The process's `Store` on that URL (built and migrated once, shared by clients)."""
    store = _stores.get(settings.url)
    if store is None:
        with _stores_lock:
            store = _stores.get(settings.url)
            if store is None:
                store = _stores[settings.url] = Store.open(settings)
    return store


class Store:
    """Threads, messages, feedback and prompt versions in one database (SQLite or PostgreSQL)."""

    def __init__(self, settings: StoreSettings, engine: Engine, reader: Engine | None = None) -> None:
        self.settings = settings
        self._engine = engine
        self._reader = reader or engine
        self._writer = engine.execution_options(**WRITE)

    @classmethod
    def open(cls, settings: StoreSettings) -> Store:
        """An engine on the store, migrated to the current schema (idempotent, safe to race)."""
        engine = sync_engine(settings)
        migrate(engine, settings)
        reader = sync_engine(settings, reads=True) if settings.backend == "postgresql" else None
        return cls(settings, engine, reader)

    def __repr__(self) -> str:
        return f"Store({self.settings.safe_url!r})"

    def close(self) -> None:
        self._engine.dispose()
        if self._reader is not self._engine:
            self._reader.dispose()

    # --- running statements -------------------------------------------------------------------

    def read(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        from sqlalchemy.exc import DBAPIError

        def once() -> T:
            with self._reader.connect() as conn:
                return op(conn, *args, **kwargs)

        def again_if_dropped() -> T:
            try:
                return once()
            except DBAPIError as exc:
                if not exc.connection_invalidated:  # a server restart, an idle timeout
                    raise
            return once()

        return self._guard(again_if_dropped)

    def write(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``op`` in one write transaction (retried, never "database is locked")."""

        def once() -> T:
            with self._writer.begin() as conn:
                return op(conn, *args, **kwargs)

        return self._guard(lambda: retry_locked(once))

    def _guard(self, fn: Callable[[], T]) -> T:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return fn()
        except SQLAlchemyError as exc:
            raise StoreError(
                f"the thread store {self.settings.safe_url} failed: {type(exc).__name__}: "
                f"{str(getattr(exc, 'orig', exc)).splitlines()[0][:300]}"
                + (" (still locked after retrying)" if is_locked(exc) else "")
            ) from exc

    # --- the API --------------------------------------------------------------------------------

    def create_thread(
        self,
        *,
        name: str | None = None,
        title: str | None = None,
        user: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> ThreadInfo:
        return self.write(queries.create_thread, name=name, title=title, user=user, meta=meta)

    def thread(self, id_or_name: str) -> ThreadInfo | None:
        return self.read(queries.get_thread, id_or_name)

    def set_head(self, thread_id: str, head_id: str | None) -> None:
        self.write(queries.set_head, thread_id, head_id)

    def append(self, rows: Sequence[Mapping[str, Any]], *, head: str | None) -> None:
        """Write messages in one transaction and make ``head`` their thread's current branch."""
        self.write(queries.insert_messages, rows, head=head)

    def branch(self, head_id: str | None, depth: int) -> list[StoredMessage]:
        return self.read(queries.branch, head_id, depth)

    def current_branch(self, thread_id: str, depth: int) -> tuple[str | None, list[StoredMessage]]:
        """The thread's head and the last ``depth`` messages of its branch (one query)."""
        return self.read(queries.current_branch, thread_id, depth)

    def messages(self, thread_id: str) -> list[StoredMessage]:
        return self.read(queries.thread_messages, thread_id)

    def message(self, message_id: str) -> StoredMessage | None:
        return self.read(queries.get_message, message_id)

    def answers(self, thread_id: str) -> int:
        """How many answers (assistant messages) the thread holds, every branch."""
        return self.read(queries.count_answers, thread_id)

    def message_by_trace(self, trace_id: str) -> StoredMessage | None:
        return self.read(queries.message_by_trace, trace_id)

    def put_prompt_version(self, name: str, version: str, template: str, source: str | None = None) -> None:
        self.write(queries.put_prompt_version, name=name, version=version, template=template, source=source)

    # --- reads for people (pandas) --------------------------------------------------------------

    def threads(self, *, user: str | None = None, limit: int | None = None) -> pd.DataFrame:
        rows = self.read(queries.list_threads, user=user, limit=limit)
        return _frame(
            rows, ["id", "name", "title", "user", "messages", "created_at", "updated_at", "head_id"]
        )

    def usage(self, by: str = "thread") -> pd.DataFrame:
        """Calls, tokens, cost and mean latency of the assistant messages by thread, user or day."""
        if by not in queries.USAGE_KEYS:
            raise StoreError(f"usage(by={by!r}): by is one of {', '.join(queries.USAGE_KEYS)}")
        rows = self.read(queries.usage, by)
        keys = {"thread": ["thread_id", "thread"], "user": ["user"], "day": ["day"]}[by]
        frame = _frame(rows, [*keys, "calls", "input_tokens", "output_tokens", "cost_usd", "mean_latency_s"])
        if by == "day":
            frame["day"] = frame["day"].astype(str)
        return frame

    def thread_feedback(self, thread_id: str) -> list[dict[str, Any]]:
        """Every rating of a thread's messages (message id, answer text, user, kind, value, comment)."""
        rows = self.read(queries.thread_feedback, thread_id)
        for row in rows:
            row["answer"] = "".join(str(p.get("text", "")) for p in row.pop("content") or ())
        return rows

    def rated_messages(self, prompt: str, version: str | int | None = None) -> pd.DataFrame:
        """The rated messages made with a prompt (``version``: one version, None: all)."""
        rows = self.read(queries.rated_messages, prompt, None if version is None else str(version))
        for row in rows:
            row["answer"] = "".join(str(p.get("text", "")) for p in row.pop("content") or ())
        return _frame(
            rows,
            [
                "message_id",
                "thread_id",
                "prompt",
                "version",
                "answer",
                "user",
                "kind",
                "value",
                "comment",
                "trace_id",
                "rated_at",
            ],
        )


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


class AsyncStore:
    """`Store` for async servers: the same statements on SQLAlchemy's async engine (psycopg's
    async mode on PostgreSQL, aiosqlite on SQLite). Build it with ``await AsyncStore.open(settings)``.
    """

    def __init__(self, settings: StoreSettings, engine: AsyncEngine) -> None:
        self.settings = settings
        self._engine = engine
        self._writer = engine.execution_options(**WRITE)

    @classmethod
    async def open(cls, settings: StoreSettings) -> AsyncStore:
        def migrated() -> None:
            engine = sync_engine(settings)
            try:
                migrate(engine, settings)
            finally:
                engine.dispose()

        await asyncio.to_thread(migrated)
        return cls(settings, async_engine(settings))

    async def aclose(self) -> None:
        await self._engine.dispose()

    async def read(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        async with self._engine.connect() as conn:
            return await conn.run_sync(lambda c: op(c, *args, **kwargs))

    async def write(self, op: Op[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        delay = 0.005
        while True:
            try:
                async with self._writer.begin() as conn:
                    return await conn.run_sync(lambda c: op(c, *args, **kwargs))
            except Exception as exc:
                if not is_locked(exc):
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def create_thread(
        self, *, name: str | None = None, title: str | None = None, user: str | None = None
    ) -> ThreadInfo:
        return await self.write(queries.create_thread, name=name, title=title, user=user, meta=None)

    async def thread(self, id_or_name: str) -> ThreadInfo | None:
        return await self.read(queries.get_thread, id_or_name)

    async def append(self, rows: Sequence[Mapping[str, Any]], *, head: str | None) -> None:
        await self.write(queries.insert_messages, rows, head=head)

    async def branch(self, head_id: str | None, depth: int) -> list[StoredMessage]:
        return await self.read(queries.branch, head_id, depth)

    async def current_branch(self, thread_id: str, depth: int) -> tuple[str | None, list[StoredMessage]]:
        return await self.read(queries.current_branch, thread_id, depth)

    async def messages(self, thread_id: str) -> list[StoredMessage]:
        return await self.read(queries.thread_messages, thread_id)

    async def message(self, message_id: str) -> StoredMessage | None:
        return await self.read(queries.get_message, message_id)

    async def message_by_trace(self, trace_id: str) -> StoredMessage | None:
        return await self.read(queries.message_by_trace, trace_id)

    async def set_feedback(
        self, message_id: str, user: str, kind: str, value: int, comment: str | None = None
    ) -> None:
        await self.write(
            queries.upsert_feedback,
            message_id=message_id,
            user=user,
            kind=kind,
            value=value,
            comment=comment,
            tags=None,
        )
