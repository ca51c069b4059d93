"""Streams cross from the engine loop to the caller in batches (`orchlab.loop._Pump`: a sync
consumer, or an adapter that does not run on any loop): one wake-up per burst rather than per
chunk, order kept, an early stop closes the source at once, and the source's exception reaches
the consumer after the items before it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from orchlab.loop import _Pump, iterate_sync, pump_async


class Source:
    """An async generator on the engine loop: ``n`` items, released all at once by ``go``."""

    def __init__(self, n: int, fail_after: int | None = None, every_s: float = 0.0) -> None:
        self.n = n
        self.every_s = every_s
        self.fail_after = fail_after
        self.go = threading.Event()
        self.closed = threading.Event()
        self.produced = 0

    async def items(self) -> AsyncIterator[int]:
        try:
            while not self.go.is_set():
                await asyncio.sleep(0.001)
            for i in range(self.n):
                if self.fail_after is not None and i == self.fail_after:
                    raise ValueError(f"upstream broke after {i} chunks")
                self.produced += 1
                yield i  # by default parsed from an already received buffer: no await between
                if self.every_s:
                    await asyncio.sleep(self.every_s)
        finally:
            self.closed.set()


def test_a_burst_already_buffered_crosses_in_one_batch_in_order() -> None:
    """The consumer takes whatever is there per wake-up (one hop per chunk would be 50 batches).
    The burst is buffered before the consumer looks: how many wake-ups a burst *being* produced
    costs depends on the scheduler, and is measured in benchmarks/, not asserted here."""
    source = Source(50)
    pump = _Pump(source.items())
    source.go.set()
    assert source.closed.wait(30)
    batches = list(pump.batches_sync())
    assert [item for batch in batches for item in batch] == list(range(50))
    assert len(batches) == 1


def test_a_consumer_that_stops_early_closes_the_source_at_once() -> None:
    source = Source(1000, every_s=0.01)
    it = iterate_sync(source.items())
    source.go.set()
    assert next(it) == 0
    it.close()  # what a ``break`` out of a ``for`` loop does
    assert source.closed.is_set()
    assert source.produced < 1000


def test_the_sources_exception_reaches_the_sync_consumer_after_the_items_before_it() -> None:
    source = Source(50, fail_after=7)
    source.go.set()
    got: list[int] = []
    with pytest.raises(ValueError, match="upstream broke after 7 chunks"):
        for item in iterate_sync(source.items()):
            got.append(item)
    assert got == list(range(7))


async def test_the_async_consumer_gets_batches_in_order_and_the_exception() -> None:
    source = Source(50)
    pump = _Pump(source.items())
    source.go.set()
    assert await asyncio.to_thread(source.closed.wait, 30)  # the burst is buffered (see above)
    batches = [batch async for batch in pump.batches_async()]
    assert [item for batch in batches for item in batch] == list(range(50))
    assert len(batches) == 1

    failing = Source(50, fail_after=3)
    failing.go.set()
    seen: list[int] = []
    with pytest.raises(ValueError, match="upstream broke after 3 chunks"):
        async for item in pump_async(failing.items()):
            seen.append(item)
    assert seen == [0, 1, 2]


async def test_an_async_consumer_that_stops_early_closes_the_source() -> None:
    source = Source(1000, every_s=0.01)
    source.go.set()
    stream = pump_async(source.items())
    async for item in stream:
        assert item == 0
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert source.closed.is_set()
    assert source.produced < 1000
