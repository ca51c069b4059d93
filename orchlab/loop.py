"""One background event loop that runs every provider call.

The sync API (`Orchestrator.run`) must work inside a running loop (a Jupyter kernel), and SDK
clients (httpx pools) must stay on the loop that created them. So all provider I/O runs on one
daemon thread's loop; sync callers block on a future, async callers await a wrapped future.
Cancelling the caller (Ctrl-C, `Task.cancel`) cancels the work on the loop too.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def engine_loop() -> asyncio.AbstractEventLoop:
    """The shared loop, started on first use."""
    global _loop
    if _loop is not None:
        return _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=serve, name="orchlab-engine", daemon=True).start()
            ready.wait()
            _loop = loop
    return _loop


def on_engine_loop() -> bool:
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the engine loop and wait for it from synchronous code."""
    if on_engine_loop():
        coro.close()
        raise RuntimeError("orchlab's sync API was called from its own engine loop; use the a* API")
    future = asyncio.run_coroutine_threadsafe(coro, engine_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the engine loop from any other loop (or directly when already on it)."""
    if on_engine_loop():
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, engine_loop()))


def sync_twin(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The blocking twin of the coroutine function ``fn``, run with `run_sync`: same signature
    and docstring, named without ``fn``'s leading ``a`` (``acomplete`` -> ``complete``)."""

    @functools.wraps(fn)
    def twin(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(fn(*args, **kwargs))

    owner = fn.__qualname__.rpartition(".")[0]
    twin.__name__ = fn.__name__.removeprefix("a")
    twin.__qualname__ = f"{owner}.{twin.__name__}" if owner else twin.__name__
    return twin


CLOSE_WAIT_S = 5.0
"""How long closing a stream waits for its interrupted step to unwind (the adapter closing its
connection, the attempt being recorded) before giving up on ``aclose``."""


class _Steps:
    """The steps (``__anext__`` calls) of an async iterator driven from another thread or loop.

    Ctrl-C or a cancel while a step runs on the engine loop only *requests* the step's
    cancellation; calling ``aclose`` before the step has unwound raises ``RuntimeError:
    aclose(): asynchronous generator is already running`` over the user's ``KeyboardInterrupt``.
    So `close` first waits (bounded) for the interrupted step to finish.
    """

    __slots__ = ("agen", "task")

    def __init__(self, agen: AsyncIterator[Any]) -> None:
        self.agen = agen
        self.task: asyncio.Task[Any] | None = None

    async def next(self) -> Any:
        self.task = asyncio.current_task()
        return await self.agen.__anext__()

    async def close(self) -> None:
        task = self.task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=CLOSE_WAIT_S)
            if not task.done():
                return  # still unwinding: it finishes on its own; aclose now would only raise
        aclose = getattr(self.agen, "aclose", None)
        if aclose is not None:
            await aclose()


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator that lives on the engine loop from synchronous code."""
    steps = _Steps(agen)
    try:
        while True:
            try:
                item: T = run_sync(steps.next())
            except StopAsyncIteration:
                return
            yield item
    finally:
        run_sync(steps.close())


async def iterate_async(agen: AsyncIterator[T]) -> AsyncIterator[T]:
    """Drive an async iterator that lives on the engine loop from another loop."""
    steps = _Steps(agen)
    try:
        while True:
            try:
                item: T = await run_async(steps.next())
            except StopAsyncIteration:
                return
            yield item
    finally:
        await run_async(steps.close())
