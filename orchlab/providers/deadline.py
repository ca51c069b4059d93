"""Time limits that hold, whatever the SDK does with its own timeouts.

An SDK's ``timeout`` is an HTTP library timeout: it bounds each socket read, so a server that
trickles one byte a second keeps a call alive for as long as it likes. orchlab enforces its limits
around the SDK instead:

- ``timeout_s`` (the role's, else the provider's) is a **deadline for the whole attempt** of a
  non-streamed call: connecting, waiting, reading the body, the SDK's own retries and their waits.
  On the engine loop it is an `asyncio.timeout` around the adapter's coroutine (`Provider`'s
  boundary sets it for every adapter). In the blocking fast path of ``run()`` (`SyncDeadline`), a
  watchdog thread shuts the connection's socket down when the deadline passes, which ends the
  blocked read at once.
- A **stream** is open-ended, so ``timeout_s`` bounds the wait for its first event (the response
  headers and the first event, together) and ``stream_idle_timeout_s`` (the provider's, else
  ``timeout_s``) the silence between two events (`paced`). Events are what the SDK yields (some
  SDKs swallow pings and SSE comments); a consumer that takes its time between chunks is not
  counted. The SDK's own timeouts are set no lower than these limits, so they only back them up.

A limit that is hit is a `ProviderTimeoutError` (retryable) naming the provider, the model and the
limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import itertools
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any


class DeadlineExceeded(TimeoutError):
    """Raised inside the HTTP client when a request starts after its attempt's deadline."""


# --- the blocking fast path: a watchdog that shuts sockets down -------------------------------


class _Ticket:
    """One armed deadline: the socket of the request in flight, and whether the deadline fired.

    A stream's ticket (`paced_sync`) moves its ``deadline`` forward after each event and is
    ``paused`` while the consumer holds an event: the watchdog then looks again later instead of
    firing, so the stream pays two attribute stores per event, not a heap operation."""

    __slots__ = ("deadline", "done", "due", "fired", "idle_s", "lock", "paused", "sock")

    def __init__(self, deadline: float, idle_s: float = 0.0) -> None:
        self.deadline = deadline
        self.due = deadline
        """When the watchdog looks at it next: its one live heap entry (older ones are dropped)."""
        self.idle_s = idle_s
        self.paused = False
        self.done = False
        self.fired = False
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()

    def attach(self, sock: Any) -> None:
        if not isinstance(sock, socket.socket):
            return
        with self.lock:
            if self.done:
                return
            self.sock = sock
            fired = self.fired
        if fired:
            _shut(sock)

    def detach(self) -> None:
        with self.lock:
            self.sock = None

    def fire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.fired = True
            sock = self.sock
        if sock is not None:
            _shut(sock)

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's ``trace`` request extension: the socket of a new connection as soon as it is
        connected, and the moment the response is closed (the connection may serve someone else
        after that)."""
        if event.endswith(("connect_tcp.complete", "start_tls.complete")):
            stream = info.get("return_value")
            if stream is not None:
                self.attach(stream.get_extra_info("socket"))
        elif event.endswith("response_closed.started"):
            self.detach()


def _shut(sock: socket.socket) -> None:
    # socket.socket's own shutdown, also for an SSLSocket: it wakes a read blocked in another
    # thread (close() would not), and leaves the TLS object to the thread that is using it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that fires armed tickets when their deadline passes."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Ticket]] = []
        self._cond = threading.Condition()
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._sleeping_until = math.inf
        """When the watchdog wakes up next on its own: a ticket due later needs no wake-up call
        (waking it costs the caller a GIL hand-over, more than the rest of arming a deadline)."""

    def arm(self, deadline: float, idle_s: float = 0.0) -> _Ticket:
        ticket = _Ticket(deadline, idle_s)
        with self._cond:
            while self._heap and self._heap[0][2].done:  # keeps the heap to the calls in flight
                heapq.heappop(self._heap)
            heapq.heappush(self._heap, (deadline, next(self._order), ticket))
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="orchlab-deadlines", daemon=True)
                self._thread.start()
            elif deadline < self._sleeping_until:
                self._cond.notify()
        return ticket

    def advance(self, ticket: _Ticket) -> None:
        """Have the watchdog look at ``ticket`` at its ``deadline``, which moved earlier than when
        it looks next (a stream's idle limit, shorter than its first-event limit)."""
        with self._cond:
            ticket.due = ticket.deadline
            heapq.heappush(self._heap, (ticket.due, next(self._order), ticket))
            if ticket.due < self._sleeping_until:
                self._cond.notify()

    def _serve(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._sleeping_until = math.inf
                    self._cond.wait()
                    continue
                deadline, _, ticket = self._heap[0]
                now = time.monotonic()
                wait = deadline - now
                if wait > 0:
                    self._sleeping_until = deadline
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if deadline != ticket.due:  # an entry left behind by `advance`
                    continue
                if ticket.paused:  # a stream's consumer holds an event: its silence is not counted
                    ticket.due = now + ticket.idle_s
                elif ticket.deadline > deadline:  # a stream moved on since this entry was pushed
                    ticket.due = ticket.deadline
                else:
                    ticket.fire()
                    continue
                heapq.heappush(self._heap, (ticket.due, next(self._order), ticket))


_watchdog = _Watchdog()
_current = threading.local()


class SyncDeadline:
    """A deadline for a blocking SDK call in this thread::

        with SyncDeadline(2.0) as deadline:
            sdk_client.chat.completions.create(...)   # its HTTP client has `EVENT_HOOKS`
        deadline.fired                                # True when the watchdog cut the call

    Only HTTP clients built with `EVENT_HOOKS` are cut; a call through any other client runs to
    its own timeouts (``fired`` still tells whether the deadline passed).
    """

    __slots__ = ("_previous", "_ticket", "limit_s")

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._ticket: _Ticket | None = None
        self._previous: _Ticket | None = None

    def __enter__(self) -> SyncDeadline:
        self._previous = getattr(_current, "ticket", None)
        self._ticket = _watchdog.arm(time.monotonic() + self.limit_s)
        _current.ticket = self._ticket
        return self

    def __exit__(self, *exc: object) -> None:
        ticket = self._ticket
        if ticket is not None:
            with ticket.lock:
                ticket.done = True
                ticket.sock = None
        _current.ticket = self._previous

    @property
    def fired(self) -> bool:
        """The watchdog fired: the call was cut (or would have been) at the deadline."""
        return self._ticket is not None and self._ticket.fired


def _on_request(request: Any) -> None:
    ticket: _Ticket | None = getattr(_current, "ticket", None)
    if ticket is None:
        return
    if time.monotonic() >= ticket.deadline:
        raise DeadlineExceeded("the attempt's deadline passed before this request was sent")
    request.extensions["trace"] = ticket.trace


def _on_response(response: Any) -> None:
    ticket: _Ticket | None = getattr(_current, "ticket", None)
    if ticket is None:
        return
    stream = response.extensions.get("network_stream")
    if stream is not None:
        ticket.attach(stream.get_extra_info("socket"))


EVENT_HOOKS: dict[str, list[Callable[[Any], None]]] = {"request": [_on_request], "response": [_on_response]}
"""``event_hooks`` for a blocking httpx (or httpx2) client whose calls `SyncDeadline` can cut."""


# --- streams: the first event, then the silence between events --------------------------------


class _Pace:
    """The limits of one async stream on one loop timer: the timer is moved by storing a new
    ``deadline`` after each event (no timer handle per event, as ``asyncio.timeout`` would
    make); when it goes off early it sets itself again for the moved deadline, and it counts
    only while the stream is ``waiting`` for an event (not while the consumer holds one).
    At the deadline it cancels the waiting task; `paced` turns that cancel into ``stalled``."""

    __slots__ = ("cancelling", "deadline", "expired", "handle", "loop", "task", "waiting", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self.loop = loop
        self.deadline = deadline
        self.waiting = True
        self.expired = False
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        self.cancelling = 0
        self.when = deadline
        self.handle: asyncio.TimerHandle | None = loop.call_at(deadline, self._check)

    def _check(self) -> None:
        self.handle = None
        if not self.waiting:
            return  # set again when the stream waits for its next event
        if self.loop.time() < self.deadline:
            self.arm()
            return
        task = self.task
        if task is not None and not task.done():
            self.expired = True
            self.cancelling = task.cancelling()
            task.cancel()

    def arm(self) -> None:
        self.when = self.deadline
        self.handle = self.loop.call_at(self.deadline, self._check)

    def wait(self, limit_s: float) -> None:
        """The stream asks for its next event: the silence is counted from now."""
        self.deadline = self.loop.time() + limit_s
        self.waiting = True
        self.task = asyncio.current_task()
        handle = self.handle
        if handle is None:
            self.arm()
        elif self.deadline < self.when:  # the idle limit is shorter than the first one
            handle.cancel()
            self.arm()

    def stalled(self, exc: BaseException) -> bool:
        """``exc`` (out of the wait) is this timer's cancel, and no one else's."""
        task = self.task
        return (
            self.expired
            and isinstance(exc, asyncio.CancelledError)
            and task is not None
            and task.uncancel() <= self.cancelling
        )

    def stop(self) -> None:
        self.waiting = False
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


async def paced(
    opening: Awaitable[Any],
    *,
    first_s: float,
    idle_s: float,
    stalled: Callable[[str, float], Exception],
) -> AsyncIterator[Any]:
    """The events of the SDK stream ``opening`` resolves to, each waited for no longer than its
    limit: ``first_s`` for the stream and its first event together, ``idle_s`` after that (the
    time the consumer holds an event is not counted). A limit hit raises ``stalled("first",
    first_s)`` or ``stalled("idle", idle_s)``. The SDK stream is closed however the iteration
    ends. One timer serves the whole stream (`_Pace`): an event costs a few attribute stores."""
    loop = asyncio.get_running_loop()
    pace = _Pace(loop, loop.time() + first_s)
    phase, limit = "first", first_s
    stream = None
    try:
        try:
            stream = await opening
            events = aiter(stream)
            event = await anext(events)
        except StopAsyncIteration:
            return
        except asyncio.CancelledError as exc:
            if pace.stalled(exc):
                raise stalled(phase, limit) from None
            raise
        phase, limit = "idle", idle_s
        while True:
            pace.waiting = False
            yield event
            pace.wait(idle_s)
            try:
                event = await anext(events)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError as exc:
                if pace.stalled(exc):
                    raise stalled(phase, limit) from None
                raise
    finally:
        pace.stop()
        if stream is not None:
            await _close(stream)


async def _close(stream: Any) -> None:
    close = getattr(stream, "aclose", None) or getattr(stream, "close", None)
    if close is not None:
        result = close()
        if inspect.isawaitable(result):
            await result


def paced_sync(
    opening: Callable[[], Any],
    *,
    first_s: float,
    idle_s: float,
    stalled: Callable[[str, float], Exception],
) -> Iterator[Any]:
    """`paced` for a blocking SDK stream, in the caller's thread: the events of the stream that
    ``opening()`` returns, the stream and its first event within ``first_s``, then no silence
    longer than ``idle_s`` (the time the consumer holds an event is not counted). The watchdog
    shuts the socket down when a limit passes (the HTTP client needs `EVENT_HOOKS`); whatever
    the SDK makes of that becomes ``stalled(phase, limit)``. The SDK stream is closed however the
    iteration ends.

    A connection reused from the pool is attached when its response headers arrive: until then
    only the SDK's own read timeout bounds a server that never answers (as for `SyncDeadline`).
    """
    ticket = _watchdog.arm(time.monotonic() + first_s, idle_s)
    phase, limit = "first", first_s
    stream = None
    try:
        previous = getattr(_current, "ticket", None)
        _current.ticket = ticket  # the HTTP client's hooks attach the socket while it opens
        try:
            stream = opening()
        except Exception:
            if ticket.fired:
                raise stalled(phase, limit) from None
            raise
        finally:
            _current.ticket = previous
        events = iter(stream)
        monotonic = time.monotonic
        while True:
            try:
                event = next(events)
            except StopIteration:
                if ticket.fired:  # the socket was shut down: the stream only looks ended
                    raise stalled(phase, limit) from None
                return
            except Exception:
                if ticket.fired:
                    raise stalled(phase, limit) from None
                raise
            ticket.paused = True
            yield event
            ticket.deadline = monotonic() + idle_s
            ticket.paused = False
            if phase == "first":
                phase, limit = "idle", idle_s
                if ticket.deadline < ticket.due:
                    _watchdog.advance(ticket)
    finally:
        with ticket.lock:
            ticket.done = True
            ticket.sock = None
        if stream is not None:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
