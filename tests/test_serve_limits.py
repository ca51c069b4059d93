"""The gateway's per-key limits in isolation (orchlab.serve.key_budgets, orchlab.serve.rate_limits):
what the end-to-end tests in test_serve_keys.py and test_serve_workers.py cannot time."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from orchlab.serve.key_budgets import Ledger
from orchlab.store.ledger import Settlement


def done(entry: str) -> Settlement:
    return Settlement(entry, 0.01, "settled", "k1", "u1")


def test_settlements_queued_while_a_batch_is_written_are_written_too() -> None:
    """A call that ends while the previous batch is being written is settled by that same flush,
    without waiting for another call to end (it used to wait, unwritten, for the next one)."""
    writing, go_on = threading.Event(), threading.Event()
    written: list[list[str | None]] = []

    class SlowStore:
        def write(self, fn: Any, batch: list[Settlement]) -> None:
            writing.set()
            go_on.wait(10)
            written.append([s.entry_id for s in batch])

    async def scenario() -> list[list[str | None]]:
        tasks: set[asyncio.Task[Any]] = set()
        ledger = Ledger(SlowStore, tasks.add)  # type: ignore[arg-type]
        ledger.FLUSH_S = 0.001
        ledger.settle_later([done("a")])
        assert await asyncio.to_thread(writing.wait, 10)
        ledger.settle_later([done("b")])  # queued while "a" is being written
        go_on.set()
        end = time.monotonic() + 10
        while len(written) < 2 and time.monotonic() < end:
            await asyncio.sleep(0.005)
        seen = list(written)
        await ledger.aclose()
        return seen

    assert asyncio.run(scenario()) == [["a"], ["b"]]
