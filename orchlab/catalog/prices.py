"""Prices: the YAML's own, or genai-prices' bundled data (offline; it never fetches anything).

genai-prices is only asked through ``lookup``, which caches per (genai-prices provider, model):
its import and data (~0.15 s) load once, on the first cloud model priced, and never for local
models. Plain per-token prices it found are also kept on disk (`cache_file`) for the installed
genai-prices data and the day, so a later process (a one-shot script) prices a model it has
priced before without importing genai-prices at all.

Usage convention (the same as genai-prices'): ``Usage.input_tokens`` counts every prompt token,
cache reads and writes included; ``Usage.output_tokens`` counts every generated token, reasoning
included. Cached tokens are then billed at their own price where the model has one, else at
the input price.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchlab.dirs import cache_dir
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
                found = _from_disk(key)
                if found is None:
                    found = _lookup(price_provider, model)
                    _to_disk(key, found)
                _cache[key] = found
    return found


def cache_file() -> Path:
    """Where genai-prices' answers are kept between processes: ``genai-prices.json`` in
    `orchlab.dirs.cache_dir` (``$ORCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/orchlab``, else
    ``~/.cache/orchlab``)."""
    return cache_dir() / "genai-prices.json"


_disk: dict[str, Any] | None = None
"""The cache file's lookups, read once per process and stamp (guarded by ``_cache_lock``)."""
_disk_stamp: str | None = None


def _stamp() -> str | None:
    """What the cached answers hold for: the installed genai-prices data file and today's date
    (prices can change on a date). None: genai-prices is not installed, or prices come from a
    snapshot set at run time (genai-prices' auto-update), which the cache must not stand in for."""
    from datetime import UTC, datetime
    from importlib.util import find_spec

    snapshots = sys.modules.get("genai_prices.data_snapshot")
    if snapshots is not None and getattr(snapshots, "_custom_snapshot", None) is not None:
        return None
    try:
        spec = find_spec("genai_prices")
    except ValueError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data.py"
    try:
        stat = data.stat()
    except OSError:
        return None
    return f"{data}:{stat.st_size}:{stat.st_mtime_ns}:{datetime.now(tz=UTC).date()}"


def _from_disk(key: tuple[str, str]) -> PriceLookup | None:
    global _disk, _disk_stamp
    stamp = _stamp()
    if stamp is None:
        return None
    if _disk is None or _disk_stamp != stamp:  # a long session crossing midnight reads it again
        _disk, _disk_stamp = {}, stamp
        try:
            saved = json.loads(cache_file().read_text(encoding="utf-8"))
            if (
                isinstance(saved, dict)
                and saved.get("stamp") == stamp
                and isinstance(saved.get("lookups"), dict)
            ):
                _disk = saved["lookups"]
        except (OSError, ValueError):
            pass  # no cache yet, or an unreadable one: genai-prices answers (and rewrites it)
    row = _disk.get("\t".join(key))
    if not isinstance(row, dict):
        return None
    try:
        price = None
        if row["price"] is not None:
            given, taken, read, write = row["price"]
            price = Price(
                float(given),
                float(taken),
                None if read is None else float(read),
                None if write is None else float(write),
                source="genai-prices",
            )
        return PriceLookup(
            price,
            note=row["note"],
            display_name=row["display_name"],
            context_window=row["context_window"],
            matched_id=row["matched_id"],
        )
    except (KeyError, TypeError, ValueError):
        return None


def _to_disk(key: tuple[str, str], found: PriceLookup) -> None:
    """Keep a plain per-token price (or a miss) for later processes; best effort: a cache that
    cannot be written only means the next process asks genai-prices again."""
    global _disk, _disk_stamp
    stamp = _stamp()
    if stamp is None or (found.price is not None and found.price.exact is not None):
        return  # tiered prices and per-request fees need genai-prices to compute anyway
    p = found.price
    row = {
        "price": None
        if p is None
        else [p.input_per_mtok, p.output_per_mtok, p.cache_read_per_mtok, p.cache_write_per_mtok],
        "note": found.note,
        "display_name": found.display_name,
        "context_window": found.context_window,
        "matched_id": found.matched_id,
    }
    path = cache_file()
    try:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            lookups = saved["lookups"] if saved.get("stamp") == stamp else {}
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            lookups = {}
        if not isinstance(lookups, dict):
            lookups = {}
        lookups["\t".join(key)] = row
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"stamp": stamp, "lookups": lookups}), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
        _disk, _disk_stamp = lookups, stamp
    except OSError:
        pass


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
