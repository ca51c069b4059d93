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


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator that lives on the engine loop from synchronous code."""
    try:
        while True:
            try:
                yield run_sync(_anext(agen))
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            run_sync(aclose())


async def iterate_async(agen: AsyncIterator[T]) -> AsyncIterator[T]:
    """Drive an async iterator that lives on the engine loop from another loop."""
    try:
        while True:
            try:
                yield await run_async(_anext(agen))
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            await run_async(aclose())


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()
