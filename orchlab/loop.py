"""Where provider calls run: the caller's own event loop, or orchlab's engine loop.

Async callers (``await client.arun()``, ``async for`` over a stream, the ``a*`` API) run the call
on their own loop: no thread hop. An SDK client (an httpx pool) is bound to the loop it first ran
on, so adapters keep one client per loop (`PerLoop`), closed when that loop shuts down.

The sync API (`Orchestrator.run`) must work inside a running loop too (a Jupyter kernel), where it
cannot block on that loop. So sync callers that need a loop (a strategy, an adapter without a
blocking twin, a stream from such an adapter) run the work on one daemon thread's loop, the engine
loop, and block on a future (a stream's chunks cross in batches, `iterate_sync`). An adapter that
cannot run on the caller's loop hops there too (`ProviderPool.here`). Cancelling the caller
(Ctrl-C, `Task.cancel`) cancels the work on the loop too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, Generic, ParamSpec, TypeVar

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


async def pump_async(agen: AsyncIterator[T]) -> AsyncIterator[T]:
    """Drive an async iterator that must run on the engine loop from another loop, in batches."""
    pump = _Pump(agen)
    try:
        async for batch in pump.batches_async():
            for item in batch:
                yield item
    finally:
        await run_async(pump.close())


# --- one value per event loop ------------------------------------------------------------------


class PerLoop(Generic[T]):
    """One value per event loop, for things bound to the loop they first ran on (an SDK's async
    client: its connection pool holds that loop's sockets).

    ``get()`` returns the running loop's value, built with ``build`` on first use there (outside
    any loop: one value of its own, for inspection). Each loop's value is closed with ``close`` on
    that loop when it shuts down (``asyncio.run``, ``asyncio.Runner`` and pytest-asyncio call its
    ``shutdown_asyncgens``), so nothing outlives its loop; a Jupyter kernel's loop keeps its value
    for the session. ``aclose()`` closes them all now, as far as it can (see there).
    """

    def __init__(self, build: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._build = build
        self._close = close
        self._values: dict[asyncio.AbstractEventLoop | None, T] = {}
        self._lock = threading.Lock()

    def get(self) -> T:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        value = self._values.get(loop)
        if value is None:
            with self._lock:
                value = self._values.get(loop)
                built = value is None
                if value is None:
                    value = self._values[loop] = self._build()
            if built and loop is not None and loop is not _loop:  # the engine loop never ends
                _close_at_shutdown(loop, self)  # outside our lock: it takes the watch lock
        return value

    async def aclose(self) -> None:
        """Close every value: the running loop's (and the loop-less one) here and now; a value on
        another running loop is closed there without waiting for it (that loop may be the
        blocked Jupyter kernel calling ``client.close()``); one on an idle loop is left for that
        loop's shutdown; one on a closed loop is dropped (nothing can run there any more)."""
        here = asyncio.get_running_loop()
        with self._lock:
            values, self._values = self._values, {}
        for loop, value in values.items():
            if loop is None or loop is here:
                await self._close(value)
            elif loop.is_closed():
                continue
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(_closing(self._close, value), loop)
            else:
                with self._lock:
                    self._values.setdefault(loop, value)

    async def _close_on(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            value = self._values.pop(loop, None)
        if value is not None:
            await self._close(value)

    def _forget(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._values.pop(loop, None)


async def _closing(close: Callable[[T], Awaitable[None]], value: T) -> None:
    await close(value)


_watch_lock = threading.RLock()  # `_sweep_closed` finishes closers while holding it
_watched: dict[
    asyncio.AbstractEventLoop, tuple[weakref.WeakSet[PerLoop[Any]], AsyncGenerator[None, None]]
] = {}


def _close_at_shutdown(loop: asyncio.AbstractEventLoop, owner: PerLoop[Any]) -> None:
    """Have ``owner``'s value for ``loop`` closed when ``loop`` shuts down (called on ``loop``).

    A loop closes the async generators it saw start in its ``shutdown_asyncgens``, before it
    closes (documented for `asyncio.run`). So each loop gets one generator, started here, whose
    ``finally`` closes the values of every owner on that loop (held weakly: a client dropped
    without ``close()`` is not kept alive by this)."""
    with _watch_lock:
        watched = _watched.get(loop)
        if watched is None:
            _sweep_closed()
            owners: weakref.WeakSet[PerLoop[Any]] = weakref.WeakSet()
            closer = _closer(loop, owners)
            # Run it to its ``yield`` now: its first step files it with this loop (the loop's
            # first-iteration hook), and ``aclose`` reaches its ``finally`` only from there.
            # The step does not await: it ends at once.
            with contextlib.suppress(StopIteration):
                closer.asend(None).send(None)
            watched = _watched[loop] = (owners, closer)
        watched[0].add(owner)


async def _closer(
    loop: asyncio.AbstractEventLoop, owners: weakref.WeakSet[PerLoop[Any]]
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        with _watch_lock:
            _watched.pop(loop, None)
        if not loop.is_closed():
            # all of them, even when one fails; the loop reports the first failure
            results = await asyncio.gather(*(o._close_on(loop) for o in list(owners)), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result


def _sweep_closed() -> None:
    """Forget loops closed without shutting their async generators down (``loop.close()`` by
    hand): their values cannot be closed any more, only dropped."""
    for loop in [loop for loop in _watched if loop.is_closed()]:
        owners, closer = _watched.pop(loop)
        for owner in list(owners):
            owner._forget(loop)
        # finished here, so that its finalizer does not try to reach the closed loop
        with contextlib.suppress(StopIteration):
            closer.aclose().send(None)
