"""Provider health: a short cooldown for a provider that keeps failing, on an injectable clock.

Each orchestrator has one `ProviderHealth` (``client.health``). A provider that fails with
retryable errors (rate limits, timeouts, 5xx, dropped connections) ``cooldown_after`` times in a
row is skipped by the fallback strategies for ``cooldown_s`` seconds; one success clears it.
The retry sleeps use the same clock, so tests can swap in `orchlab.testing.ManualClock` and run
through backoffs and cooldowns without waiting.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Monotonic time and real ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(slots=True)
class _State:
    failures: int = 0
    cooling_until: float = 0.0
    last_error: str | None = None


class ProviderHealth:
    """Consecutive retryable failures per provider, and the cooldowns they trigger."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._state: dict[str, _State] = {}

    def failure(self, provider: str, error: str, *, after: int, cooldown_s: float) -> bool:
        """Record a retryable failure; True when it starts a cooldown."""
        state = self._state.setdefault(provider, _State())
        state.failures += 1
        state.last_error = error
        if state.failures >= after and cooldown_s > 0:
            state.failures = 0
            state.cooling_until = self.clock.now() + cooldown_s
            return True
        return False

    def success(self, provider: str) -> None:
        self._state.pop(provider, None)

    def cooling(self, provider: str) -> float | None:
        """Seconds of cooldown left for ``provider``, or None when it may be called."""
        state = self._state.get(provider)
        if state is None:
            return None
        left = state.cooling_until - self.clock.now()
        return left if left > 0 else None

    def reset(self, provider: str | None = None) -> None:
        if provider is None:
            self._state.clear()
        else:
            self._state.pop(provider, None)

    def __repr__(self) -> str:
        cooling = {p: round(s, 3) for p in self._state if (s := self.cooling(p) or 0) > 0}
        return f"ProviderHealth(cooling={cooling!r})"
