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
import time
from collections import deque
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


class _Pump:
    """An async iterator drained on the engine loop into a buffer that another thread or loop reads.

    The producer task pulls items as they come and appends them; the consumer takes *whatever is
    there* per wake-up, so a burst of chunks costs one cross-thread hop instead of one per chunk.
    The consumer's wake-up (a ``threading.Event`` for sync code, a future on its own loop for async
    code) is signalled only while it waits. The producer's exception reaches the consumer after the
    items before it.

    Ctrl-C or a cancel while the producer runs only *requests* its cancellation; calling ``aclose``
    before the step has unwound raises ``RuntimeError: aclose(): asynchronous generator is already
    running`` over the user's ``KeyboardInterrupt``. So `close` first waits (bounded) for the
    producer to finish.
    """

    def __init__(self, agen: AsyncIterator[Any]) -> None:
        self.agen = agen
        self.items: deque[Any] = deque()
        self.finished = False
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self.wakeups = 0  # how many times the consumer waited and was woken (for tests)
        self._lock = threading.Lock()
        self._wake: Callable[[], None] | None = None
        self._handed = False
        asyncio.run_coroutine_threadsafe(self._produce(), engine_loop())

    async def _produce(self) -> None:
        self.task = asyncio.current_task()
        try:
            async for item in self.agen:
                self.items.append(item)
                self._signal()
        except BaseException as exc:  # handed to the consumer (cancelled by `close`: it is gone)
            self.error = exc
        finally:
            self.finished = True
            self._signal()

    def _signal(self) -> None:
        with self._lock:
            wake, self._wake = self._wake, None
        if wake is not None:
            wake()
            if not self._handed:
                self._handed = True
                # The first item: let the woken consumer take the GIL now, or it waits up to the
                # switch interval (5 ms) while this thread parses the rest of the burst.
                time.sleep(0)

    def _arm(self, wake: Callable[[], None]) -> bool:
        """Register ``wake`` unless something is ready already (then False: do not wait)."""
        with self._lock:
            if self.items or self.finished:
                return False
            self._wake = wake
            return True

    def _take(self) -> list[Any]:
        items = self.items
        return [items.popleft() for _ in range(len(items))]

    def _poll(self) -> list[Any] | None:
        """What is buffered (a non-empty batch); ``[]`` once the source is done (its error raised
        after the items before it); None: nothing yet, wait."""
        batch = self._take()
        if batch or not self.finished:
            return batch or None
        batch = self._take()  # items that arrived just before the end
        if batch:
            return batch
        if self.error is not None:
            raise self.error
        return []

    def batches_sync(self) -> Iterator[list[Any]]:
        ready = threading.Event()
        while True:
            batch = self._poll()
            if batch:
                yield batch
            elif batch is not None:
                return
            elif self._arm(ready.set):
                ready.wait()
                ready.clear()
                self.wakeups += 1

    async def batches_async(self) -> AsyncIterator[list[Any]]:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._poll()
            if batch:
                yield batch
                continue
            if batch is not None:
                return
            waiter: asyncio.Future[None] = loop.create_future()

            def wake(waiter: asyncio.Future[None] = waiter) -> None:
                loop.call_soon_threadsafe(_resolve, waiter)

            if self._arm(wake):
                await waiter
                self.wakeups += 1

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


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator that lives on the engine loop from synchronous code, taking the
    items over in batches (one thread wake-up per burst, not per item)."""
    pump = _Pump(agen)
    try:
        for batch in pump.batches_sync():
            yield from batch
    finally:
        run_sync(pump.close())


async def iterate_async(agen: AsyncIterator[T]) -> AsyncIterator[T]:
    """Drive an async iterator that lives on the engine loop from another loop, in batches."""
    pump = _Pump(agen)
    try:
        async for batch in pump.batches_async():
            for item in batch:
                yield item
    finally:
        await run_async(pump.close())
