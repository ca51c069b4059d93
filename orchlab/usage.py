"""Usage tracking: every provider call an orchestrator makes, aggregated for ``client.usage()``.

The tracker is a call observer: each finished call hands it the `Attempt` of every provider call
made for it, so the losers of a race, the rejected answers of a cascade and the failures of a
fallback chain are all counted. Updates take one lock: safe from threads and tasks alike.

For example:

    client.usage()                      # one row per (role, provider, model, strategy)
    client.usage(by="provider")         # or by=["role", "model"], by=[] for a single total row
    client.usage(by=["provider", "deployment"])   # a pool's servers ("" for other providers)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from orchlab.calls import CallRecord

KEYS: tuple[str, ...] = ("role", "provider", "model", "strategy")
"""The default grouping of `client.usage()`."""
ALL_KEYS: tuple[str, ...] = (*KEYS, "deployment")
"""Every key ``by=`` takes: ``deployment`` is the server of a pooled provider that answered."""
COLUMNS: tuple[str, ...] = (
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "unpriced_calls",
    "mean_latency_s",
)
SESSION_COLUMNS: tuple[str, ...] = (*COLUMNS, "overrun_usd", "cache_hits")
"""`client.usage()`'s columns: `COLUMNS` (which the tracking store's history shares), the
budget overrun and the response cache's hits (answers given for $0, nothing sent), which only
the session knows."""


@dataclass(slots=True)
class _Totals:
    calls: int = 0
    errors: int = 0
    cancelled: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    priced_calls: int = 0
    unpriced_calls: int = 0
    latency_s: float = 0.0
    overrun_usd: float = 0.0
    cache_hits: int = 0

    def add(self, other: _Totals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class UsageTracker:
    """Aggregates provider calls by role, provider, model and strategy (``client.usage_tracker``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str, str, str, str], _Totals] = {}

    def __repr__(self) -> str:
        with self._lock:
            calls = sum(t.calls for t in self._rows.values())
            cost = sum(t.cost_usd for t in self._rows.values())
        return f"UsageTracker(calls={calls}, cost_usd={cost:.6f})"

    def call_finished(self, record: CallRecord) -> None:
        ctx = record.context
        role = ctx.role or ""
        with self._lock:
            for attempt in ctx.attempts:
                key = (role, attempt.provider, attempt.model, ctx.strategy, attempt.deployment or "")
                totals = self._rows.get(key)
                if totals is None:
                    totals = self._rows[key] = _Totals()
                totals.calls += 1
                totals.latency_s += attempt.latency_s
                if attempt.outcome == "error":
                    totals.errors += 1
                elif attempt.outcome == "cancelled":
                    totals.cancelled += 1
                usage = attempt.usage
                totals.input_tokens += usage.input_tokens
                totals.output_tokens += usage.output_tokens
                totals.cache_read_tokens += usage.cache_read_tokens
                totals.reasoning_tokens += usage.reasoning_tokens
                if attempt.overrun_usd:
                    totals.overrun_usd += attempt.overrun_usd
                if attempt.cache == "hit":
                    totals.cache_hits += 1
                if attempt.cost_usd is not None:
                    totals.cost_usd += attempt.cost_usd
                    totals.priced_calls += 1
                elif attempt.outcome in ("ok", "rejected") or usage.total_tokens:
                    totals.unpriced_calls += 1

    def reset(self) -> None:
        with self._lock:
            self._rows.clear()

    def totals(self, by: str | Sequence[str] = KEYS) -> list[dict[str, object]]:
        """The aggregated rows as dicts (what `frame` shows), without pandas."""
        keys = _keys(by)
        with self._lock:
            snapshot = [(k, _copy(t)) for k, t in self._rows.items()]
        groups: dict[tuple[str, ...], _Totals] = {}
        for key, totals in snapshot:
            named = dict(zip(ALL_KEYS, key, strict=True))
            group = tuple(named[k] for k in keys)
            if group not in groups:
                groups[group] = _Totals()
            groups[group].add(totals)
        rows = []
        for group in sorted(groups):
            t = groups[group]
            # a group whose answered calls all lack a price has an unknown cost, not a cost of 0
            unknown = t.priced_calls == 0 and t.unpriced_calls > 0
            rows.append(
                {
                    **dict(zip(keys, group, strict=True)),
                    "calls": t.calls,
                    "errors": t.errors,
                    "input_tokens": t.input_tokens,
                    "output_tokens": t.output_tokens,
                    "cost_usd": math.nan if unknown else t.cost_usd,
                    "unpriced_calls": t.unpriced_calls,
                    "mean_latency_s": t.latency_s / t.calls if t.calls else math.nan,
                    "overrun_usd": t.overrun_usd,
                    "cache_hits": t.cache_hits,
                }
            )
        return rows

    def frame(self, by: str | Sequence[str] = KEYS) -> pd.DataFrame:
        """A pandas DataFrame: one row per group of ``by`` (any of role, provider, model, strategy,
        deployment).

        Columns: calls (provider calls, failures included), errors, input/output tokens, cost_usd
        (NaN when no call of the group had a price), unpriced_calls, mean_latency_s, overrun_usd
        (what providers charged beyond the worst case reserved under a budget; see `orchlab.pipeline.settle`),
        cache_hits (calls the response cache answered for $0; `orchlab.pipeline.cache`).
        """
        import pandas as pd

        keys = _keys(by)
        return pd.DataFrame(self.totals(keys), columns=[*keys, *SESSION_COLUMNS])


def _keys(by: str | Sequence[str]) -> list[str]:
    keys = [by] if isinstance(by, str) else list(by)
    unknown = [k for k in keys if k not in ALL_KEYS]
    if unknown:
        from orchlab.errors import InvalidRequestError

        raise InvalidRequestError(f"usage(by=...) takes any of {', '.join(ALL_KEYS)}; got {unknown}")
    return keys


def _copy(t: _Totals) -> _Totals:
    out = _Totals()
    out.add(t)
    return out
