"""What orchlab knows about one model: capabilities, context, prices, tier, where it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

CAPABILITIES: frozenset[str] = frozenset({"chat", "code", "reasoning", "vision", "tools", "embedding"})


class Tier(StrEnum):
    """A coarse quality/price class: FAST (small, cheap), STANDARD, ADVANCED (frontier)."""

    FAST = "fast"
    STANDARD = "standard"
    ADVANCED = "advanced"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model of one configured provider entry (``target`` is ``'provider:model'``).

    Prices are USD per million tokens. ``None`` means unknown, and ``price_note`` says why
    (a known price of 0, e.g. a local model, is ``0.0``). ``price_source`` is ``"config"``
    (the YAML ``models:``), ``"genai-prices"``, ``"local"`` or ``"unknown"``.
    """

    provider: str
    model: str
    display_name: str
    capabilities: frozenset[str] = frozenset({"chat"})
    context_window: int | None = None
    max_output_tokens: int | None = None
    input_price_per_mtok: float | None = None
    output_price_per_mtok: float | None = None
    cache_read_price_per_mtok: float | None = None
    cache_write_price_per_mtok: float | None = None
    tier: Tier = Tier.STANDARD
    local: bool = False
    price_source: str = "unknown"
    price_note: str | None = None
    kind: str | None = None
    """The adapter kind of the provider entry (``openai``, ``llamacpp``, ...)."""
    sources: tuple[str, ...] = field(default=(), compare=False)
    """Where the facts came from, most authoritative first (``config``, ``provider``, ``metadata``, ...)."""

    @property
    def target(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def priced(self) -> bool:
        return self.input_price_per_mtok is not None and self.output_price_per_mtok is not None

    def estimate_cost(self, prompt_tokens: int, output_tokens: int) -> float | None:
        """USD for ``prompt_tokens`` in and ``output_tokens`` out at the headline prices (None: unpriced)."""
        if self.input_price_per_mtok is None or self.output_price_per_mtok is None:
            return None
        return (prompt_tokens * self.input_price_per_mtok + output_tokens * self.output_price_per_mtok) / 1e6

    def as_row(self) -> dict[str, object]:
        """A flat dict for a table (``Catalog.frame``)."""
        return {
            "target": self.target,
            "display_name": self.display_name,
            "tier": self.tier.value,
            "local": self.local,
            "capabilities": ", ".join(sorted(self.capabilities)),
            "context_window": self.context_window,
            "max_output_tokens": self.max_output_tokens,
            "input_per_mtok": self.input_price_per_mtok,
            "output_per_mtok": self.output_price_per_mtok,
            "price_source": self.price_source,
        }
