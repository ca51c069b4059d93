"""Prices: the YAML's own, or genai-prices' bundled data (offline; it never fetches anything).

genai-prices is only asked through ``lookup``, which caches per (genai-prices provider, model):
its import (~0.3 s) happens once, on the first cloud model priced, and never for local models.

Usage convention (the same as genai-prices'): ``Usage.input_tokens`` counts every prompt token,
cache reads and writes included; ``Usage.output_tokens`` counts every generated token, reasoning
included. Cached tokens are then billed at their own price where the model has one, else at
the input price.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from orchlab.types import Usage

# Price keys that a plain per-token computation covers exactly. Any other key that genai-prices
# prices is either a usage orchlab never reports (audio, images, web searches: count 0) or, for
# per-request fees and tiered prices, computed by genai-prices itself.
_TOKEN_KEYS = frozenset({"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"})


@dataclass(frozen=True, slots=True)
class Price:
    """Per-million-token prices of one model, and how to turn a `Usage` into USD."""

    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None
    source: str = "config"
    exact: Any = None
    """genai-prices' ``ModelPrice`` when its shape (tiers, per-request fees) needs genai-prices to compute."""

    def cost(self, usage: Usage) -> float:
        """USD for ``usage``."""
        if self.exact is not None:
            return _genai_cost(self.exact, usage)
        cache_read = usage.cache_read_tokens if self.cache_read_per_mtok is not None else 0
        cache_write = usage.cache_write_tokens if self.cache_write_per_mtok is not None else 0
        fresh = max(usage.input_tokens - cache_read - cache_write, 0)
        total = fresh * self.input_per_mtok + usage.output_tokens * self.output_per_mtok
        if cache_read:
            total += cache_read * (self.cache_read_per_mtok or 0.0)
        if cache_write:
            total += cache_write * (self.cache_write_per_mtok or 0.0)
        return total / 1e6

    @property
    def free(self) -> bool:
        return self.exact is None and self.input_per_mtok == 0 and self.output_per_mtok == 0


@dataclass(frozen=True, slots=True)
class PriceLookup:
    """What genai-prices knows about a model: its price (None: unknown, ``note`` says why)."""

    price: Price | None
    note: str | None = None
    display_name: str | None = None
    context_window: int | None = None
    matched_id: str | None = None


_cache: dict[tuple[str, str], PriceLookup] = {}
_cache_lock = threading.Lock()


def lookup(price_provider: str, model: str) -> PriceLookup:
    """genai-prices' price for ``model`` at ``price_provider`` (a genai-prices provider id), cached."""
    key = (price_provider, model)
    found = _cache.get(key)
    if found is None:
        with _cache_lock:
            found = _cache.get(key)
            if found is None:
                found = _lookup(price_provider, model)
                _cache[key] = found
    return found


def _lookup(price_provider: str, model: str) -> PriceLookup:
    from datetime import UTC, datetime

    from genai_prices import data_snapshot
    from genai_prices.types import TieredPrices

    snapshot = data_snapshot.get_snapshot()
    try:
        _provider, info = snapshot.find_provider_model(model, None, price_provider, None)
    except LookupError:
        return PriceLookup(None, note=f"genai-prices has no price for {model!r} at {price_provider!r}")
    model_price = info.get_prices(datetime.now(tz=UTC))
    values = {k: v for k, v in model_price.__dict__.items() if not k.startswith("_") and v is not None}
    needs_genai = any(isinstance(v, TieredPrices) for v in values.values()) or any(
        k not in _TOKEN_KEYS and _is_per_request(k) for k in values
    )

    def headline(key: str) -> float | None:
        value = values.get(key)
        if value is None:
            return None
        return float(value.base if isinstance(value, TieredPrices) else value)

    input_price, output_price = headline("input_mtok"), headline("output_mtok")
    if input_price is None and output_price is None:
        return PriceLookup(
            None,
            note=f"genai-prices lists {info.id!r} at {price_provider!r} without token prices",
            display_name=info.name,
            context_window=info.context_window,
            matched_id=info.id,
        )
    price = Price(
        input_per_mtok=input_price or 0.0,
        output_per_mtok=output_price or 0.0,
        cache_read_per_mtok=headline("cache_read_mtok"),
        cache_write_per_mtok=headline("cache_write_mtok"),
        source="genai-prices",
        exact=model_price if needs_genai else None,
    )
    return PriceLookup(price, display_name=info.name, context_window=info.context_window, matched_id=info.id)


def _is_per_request(price_key: str) -> bool:
    from genai_prices.units import _get_registry

    try:
        unit = _get_registry().unit_for_price_key(price_key)
    except KeyError:
        return True  # unknown to the registry: let genai-prices decide
    return bool(unit.usage_key == "requests")


def _genai_cost(model_price: Any, usage: Usage) -> float:
    from genai_prices import Usage as GenaiUsage

    priced = model_price.calc_price(
        GenaiUsage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        )
    )
    return float(priced["total_price"])
