"""The catalog of one orchestrator: every model its config can reach, with facts and prices.

What it covers: the models bound in roles, fallbacks and strategy candidates (and session
rebinds), the YAML's
``models:`` entries, the packaged metadata's models for each configured cloud provider kind, and,
when asked (``discover=True`` / ``await catalog.adiscover()``, a network call), the models local
servers such as Ollama report.

Where each fact comes from, first found wins:

- prices: the YAML ``models:`` entry; $0 for a local provider; genai-prices' bundled data; else
  unknown (``None`` with a ``price_note`` saying why, never a silent 0);
- context window: ``models:``; the local adapter itself (llama.cpp's ``n_ctx``, Ollama's
  ``options.num_ctx``); discovery; the packaged metadata; genai-prices;
- capabilities, tier, max output tokens, display name: ``models:``; the packaged metadata;
  defaults (``{"chat"}``, STANDARD, unknown, the model id).

For example:

    client.catalog.get_model_info("openai:gpt-4.1-mini").input_price_per_mtok   # 0.4
    client.catalog.list_models(capability="code", max_cost=0.002)
    client.catalog.choose_model(capability="code", tier="fast").target
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchlab.catalog.metadata import ModelFacts, metadata
from orchlab.catalog.model_info import CAPABILITIES, ModelInfo, Tier
from orchlab.catalog.prices import Price, PriceLookup, lookup
from orchlab.config.schema import LogicCandidateConfig
from orchlab.errors import InvalidRequestError, OrchlabWarning, UnknownProviderError
from orchlab.providers.registry import kind_of, provider_class
from orchlab.types import Usage

if TYPE_CHECKING:
    import pandas as pd

    from orchlab.config.schema import OrchestratorConfig, ProviderConfig
    from orchlab.providers.base import DiscoveredModel, Provider

LOCAL_NOTE = "local model: $0 unless priced in the YAML (models:)"
DEFAULT_PROMPT_TOKENS = 1000
DEFAULT_OUTPUT_TOKENS = 500
_TIER_RANK = {Tier.FAST: 0, Tier.STANDARD: 1, Tier.ADVANCED: 2}


@dataclass(frozen=True, slots=True)
class Entry:
    """A catalogued model and the `Price` its costs are computed with (None: unpriced)."""

    info: ModelInfo
    price: Price | None


@dataclass(frozen=True, slots=True)
class Choice:
    """What `Catalog.choose_model` picked, what it should cost, and why."""

    model_info: ModelInfo
    estimated_cost_usd: float
    rationale: str

    @property
    def target(self) -> str:
        return self.model_info.target

    def __str__(self) -> str:
        return f"{self.target} (~${self.estimated_cost_usd:.6f}): {self.rationale}"


class Catalog:
    """Models reachable through one orchestrator's config (``client.catalog``)."""

    def __init__(
        self,
        config: OrchestratorConfig,
        *,
        provider_config: Callable[[str], ProviderConfig],
        providers: Callable[[str], Provider],
        rebound: Callable[[], Iterable[tuple[str, str]]] = tuple,
    ) -> None:
        """``provider_config(name)``: a provider entry (unknown: `UnknownProviderError`);
        ``providers(name)``: its adapter; ``rebound()``: the session's rebound targets."""
        self._config = config
        self._provider_config = provider_config
        self._providers = providers
        self._rebound = rebound
        self._entries: dict[tuple[str, str], Entry] = {}
        self._discovered: dict[tuple[str, str], DiscoveredModel] = {}
        self._lock = threading.Lock()
        self.discovery_errors: dict[str, BaseException] = {}
        """Providers whose discovery failed last time, with the error."""
        self.discovered_at: dict[str, float] = {}
        """When each provider was last asked for its models (``time.monotonic()``)."""
        self.version = 0
        """Bumped whenever discovery changes what the catalog knows (selectors re-resolve)."""

    def __repr__(self) -> str:
        return f"Catalog({len(self._targets())} models; project {self._config.project!r})"

    # --- lookups -----------------------------------------------------------------------------

    def get_model_info(self, target: str) -> ModelInfo:
        """Facts and prices of ``'provider:model'``; an unknown model has prices None and a ``price_note``.

        Raises `UnknownProviderError` when the provider entry is not in the config.
        """
        from orchlab.resolution import parse_target

        provider, model = parse_target(target)
        return self.entry(provider, model).info

    def entry(self, provider: str, model: str) -> Entry:
        """The cached entry the engine prices calls with (built once per provider and model)."""
        found = self._entries.get((provider, model))
        if found is None:
            with self._lock:
                found = self._entries.get((provider, model))
                if found is None:
                    found = self._build(provider, model)
                    self._entries[(provider, model)] = found
        return found

    def estimate_cost(self, target: str, prompt_tokens: int, output_tokens: int) -> float | None:
        """USD for one call of ``target`` with these token counts (None: unpriced)."""
        from orchlab.resolution import parse_target

        price = self.entry(*parse_target(target)).price
        return None if price is None else price.cost(Usage(prompt_tokens, output_tokens))

    # --- listing -----------------------------------------------------------------------------

    def list_models(
        self,
        capability: str | None = None,
        max_cost: float | None = None,
        tier: Tier | str | None = None,
        local: bool | None = None,
        *,
        prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
        output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        discover: bool = False,
    ) -> list[ModelInfo]:
        """The catalogued models that match every filter given, sorted by target.

        ``max_cost`` is in USD per call, for ``prompt_tokens`` in and ``output_tokens`` out
        (1000 and 500 unless given); an unpriced model never passes it. ``tier`` matches exactly.
        ``discover=True`` first asks the local providers for their models (a network call).
        """
        if discover:
            self.discover()
        wanted_tier = _tier(tier)
        if capability is not None and capability not in CAPABILITIES:
            raise InvalidRequestError(
                f"unknown capability {capability!r}; known: {', '.join(sorted(CAPABILITIES))}"
            )
        out = []
        for provider, model in self._targets():
            entry = self.entry(provider, model)
            info = entry.info
            if capability is not None and capability not in info.capabilities:
                continue
            if wanted_tier is not None and info.tier is not wanted_tier:
                continue
            if local is not None and info.local != local:
                continue
            if max_cost is not None:
                cost = None if entry.price is None else entry.price.cost(Usage(prompt_tokens, output_tokens))
                if cost is None or cost > max_cost:
                    continue
            out.append(info)
        return sorted(out, key=lambda i: i.target)

    def frame(self, **filters: Any) -> pd.DataFrame:
        """`list_models` as a pandas DataFrame (one row per model)."""
        import pandas as pd

        return pd.DataFrame([info.as_row() for info in self.list_models(**filters)])

    def choose_model(
        self,
        capability: str | None = "chat",
        tier: Tier | str | None = None,
        max_cost: float | None = None,
        *,
        prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
        max_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        local: bool | None = None,
        discover: bool = False,
    ) -> Choice:
        """The cheapest catalogued model that matches, for ``prompt_tokens`` + ``max_output_tokens``.

        ``capability`` defaults to ``"chat"`` (an embedding model cannot answer); pass None for any.
        Models without a price, or whose context window cannot hold the call, are left out (the
        rationale counts them). Ties go to the higher tier, then the larger context window.
        Raises `InvalidRequestError` when nothing matches, saying what was left out and why.
        """
        candidates = self.list_models(capability, None, tier, local, discover=discover)
        priced: list[tuple[float, ModelInfo]] = []
        unpriced: list[str] = []
        too_small: list[str] = []
        too_dear: list[tuple[float, str]] = []
        for info in candidates:
            if info.context_window is not None and prompt_tokens + max_output_tokens > info.context_window:
                too_small.append(info.target)
                continue
            price = self.entry(info.provider, info.model).price
            if price is None:
                unpriced.append(info.target)
                continue
            cost = price.cost(Usage(prompt_tokens, max_output_tokens))
            if max_cost is not None and cost > max_cost:
                too_dear.append((cost, info.target))
                continue
            priced.append((cost, info))
        wanted = _describe(capability, _tier(tier), max_cost, local)
        left_out = _left_out(unpriced, too_small, too_dear)
        if not priced:
            raise InvalidRequestError(
                f"no catalogued model matches {wanted} for {prompt_tokens:,} prompt + "
                f"{max_output_tokens:,} output tokens ({len(candidates)} matched the filters"
                f"{'; ' + left_out if left_out else ''}). Add models under models: in the YAML, "
                "or relax the filters."
            )
        priced.sort(key=lambda c: (c[0], -_TIER_RANK[c[1].tier], -(c[1].context_window or 0), c[1].target))
        cost, best = priced[0]
        rationale = (
            f"cheapest of {len(priced)} priced model(s) matching {wanted}: {best.target} at "
            f"${cost:.6f} for {prompt_tokens:,} prompt + {max_output_tokens:,} output tokens "
            f"({best.price_source} prices, tier {best.tier.value})"
        )
        if len(priced) > 1:
            rationale += f"; next: {priced[1][1].target} at ${priced[1][0]:.6f}"
        if left_out:
            rationale += f"; left out: {left_out}"
        return Choice(best, cost, rationale)

    # --- discovery ---------------------------------------------------------------------------

    async def adiscover(
        self, providers: Sequence[str] | None = None, *, warn: bool = True
    ) -> list[ModelInfo]:
        """Ask providers for their models (default: every local provider, e.g. Ollama); a network call.

        A provider that cannot be reached is recorded in ``discovery_errors`` (with an
        `OrchlabWarning` unless ``warn=False``); the others' models join the catalog.
        """
        from orchlab.loop import run_async

        names = list(providers) if providers is not None else self._local_providers()
        now = time.monotonic()
        for name in names:
            self.discovered_at[name] = now
        results = await asyncio.gather(
            *(run_async(self._providers(name).list_models()) for name in names), return_exceptions=True
        )
        found: list[ModelInfo] = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                self.discovery_errors[name] = result
                self.version += 1
                if not warn:
                    continue
                warnings.warn(
                    f"orchlab: could not list the models of provider {name!r} ({result}); "
                    "they are missing from the catalog",
                    OrchlabWarning,
                    stacklevel=2,
                )
                continue
            self.discovery_errors.pop(name, None)
            self.version += 1
            with self._lock:
                for discovered in result:
                    self._discovered[(name, discovered.id)] = discovered
                    self._entries.pop((name, discovered.id), None)
            found += [self.entry(name, d.id).info for d in result]
        return found

    def discover(self, providers: Sequence[str] | None = None) -> list[ModelInfo]:
        """`adiscover` from synchronous code (works inside Jupyter's loop)."""
        from orchlab.loop import run_sync

        return run_sync(self.adiscover(providers))

    # --- building ----------------------------------------------------------------------------

    def _local_providers(self) -> list[str]:
        names = []
        for name, spec in self._config.providers.items():
            kind = kind_of(name, spec.type)
            if kind is not None and provider_class(kind, provider=name).is_local:
                names.append(name)
        return names

    def _targets(self) -> list[tuple[str, str]]:
        """Every (provider, model) the catalog covers, without duplicates, in a stable order."""
        from orchlab.resolution import parse_target

        config = self._config
        seen: dict[tuple[str, str], None] = {}
        for role in config.roles.values():
            own = role.own_target()
            if own is not None:
                seen[parse_target(own)] = None
            for target in role.fallbacks:
                seen[parse_target(target)] = None
            for candidate in role.candidates:
                if isinstance(candidate, LogicCandidateConfig):
                    inside = candidate.targets()
                else:
                    inside = [candidate if isinstance(candidate, str) else candidate.target]
                for target in inside:
                    seen[parse_target(target)] = None
        for provider, model in self._rebound():
            seen[(provider, model)] = None
        for target in getattr(config, "models", {}) or {}:
            seen[parse_target(target)] = None
        for name, spec in config.providers.items():
            kind = kind_of(name, spec.type)
            if kind is not None:
                for facts in metadata().listed(kind):
                    seen[(name, facts.id)] = None
        for key in list(self._discovered):
            seen[key] = None
        return [key for key in seen if key[0] in config.providers]

    def _build(self, provider: str, model: str) -> Entry:
        config = self._config
        spec = self._provider_config(provider)
        kind = kind_of(provider, spec.type)
        if kind is None:
            raise UnknownProviderError(
                f"providers.{provider}: unknown adapter type {spec.type or provider!r}", provider=provider
            )
        cls = provider_class(kind, provider=provider)
        target = f"{provider}:{model}"
        kind_info = metadata().kind(kind)
        facts: ModelFacts | None = metadata().facts(kind, model)
        override = (getattr(config, "models", None) or {}).get(target)
        discovered = self._discovered.get((provider, model))
        sources: list[str] = []
        genai: PriceLookup | None = None

        def genai_lookup() -> PriceLookup | None:
            nonlocal genai
            if genai is None and kind_info.prices not in (None, "local") and not cls.is_local:
                genai = lookup(str(kind_info.prices), model)
            return genai

        # prices
        price: Price | None = None
        note: str | None = None
        if override is not None and override.input_price_per_mtok is not None:
            price = Price(
                input_per_mtok=override.input_price_per_mtok,
                output_per_mtok=override.output_price_per_mtok or 0.0,
                cache_read_per_mtok=override.cache_read_price_per_mtok,
                cache_write_per_mtok=override.cache_write_price_per_mtok,
                source="config",
            )
        elif cls.is_local:
            price, note = Price(0.0, 0.0, source="local"), LOCAL_NOTE
        elif kind_info.prices is None:
            note = (
                f"no price for {target}: genai-prices has no prices for adapter kind {kind!r} and "
                f"the config's models: has no entry; add models: {{{target!r}: "
                "{input_price_per_mtok: ..., output_price_per_mtok: ...}}"
            )
        else:
            found = genai_lookup()
            if found is not None and found.price is not None:
                price = found.price
            else:
                why = found.note if found is not None else "no genai-prices provider"
                note = (
                    f"no price for {target} in genai-prices ({why}) or the config's models:; add "
                    f"models: {{{target!r}: {{input_price_per_mtok: ..., output_price_per_mtok: ...}}}}"
                )

        # context window: config, the provider itself, discovery, metadata, genai-prices
        context: int | None = None
        if override is not None and override.context_window is not None:
            context = override.context_window
            sources.append("config")
        if context is None and cls.is_local:
            # only a local adapter is built here: a cloud one would need its key
            context = self._providers(provider).context_window()
            if context is not None:
                sources.append("provider")
        if context is None and discovered is not None:
            # a num_ctx the server loads the model with beats the model's trained length
            num_ctx = discovered.details.get("num_ctx")
            context = num_ctx if isinstance(num_ctx, int) and num_ctx > 0 else discovered.context_window
            if context is not None:
                sources.append("discovery")
        if context is None and facts is not None and facts.context_window is not None:
            context = facts.context_window
            sources.append("metadata")
        if context is None:
            found = genai_lookup()
            if found is not None and found.context_window:
                context = found.context_window
                sources.append("genai-prices")

        def pick(attr: str) -> Any:
            value = getattr(override, attr, None) if override is not None else None
            if value is None and facts is not None:
                value = getattr(facts, attr)
            return value

        caps = getattr(override, "capabilities", None) if override is not None else None
        if caps is None and discovered is not None:
            caps = _discovered_capabilities(discovered)
        if caps is None and facts is not None:
            caps = facts.capabilities
        tier = pick("tier")
        display = pick("display_name") or (genai.display_name if genai is not None else None) or model
        if facts is not None:
            sources.append("metadata")
        if price is not None:
            sources.append(price.source)
        info = ModelInfo(
            provider=provider,
            model=model,
            display_name=display,
            capabilities=frozenset(caps) if caps is not None else frozenset({"chat"}),
            context_window=context,
            max_output_tokens=pick("max_output_tokens"),
            input_price_per_mtok=price.input_per_mtok if price is not None else None,
            output_price_per_mtok=price.output_per_mtok if price is not None else None,
            cache_read_price_per_mtok=price.cache_read_per_mtok if price is not None else None,
            cache_write_price_per_mtok=price.cache_write_per_mtok if price is not None else None,
            tier=Tier(tier) if tier is not None else Tier.STANDARD,
            local=cls.is_local,
            price_source=price.source if price is not None else "unknown",
            price_note=note,
            kind=kind,
            sources=tuple(dict.fromkeys(sources)),
        )
        return Entry(info, price)


# Ollama's /api/show capability names -> orchlab's
_SERVER_CAPABILITIES = {
    "completion": "chat",
    "tools": "tools",
    "vision": "vision",
    "thinking": "reasoning",
    "embedding": "embedding",
}


def _discovered_capabilities(discovered: DiscoveredModel) -> frozenset[str] | None:
    reported = discovered.details.get("capabilities")
    if not reported:
        return None
    caps = {_SERVER_CAPABILITIES[c] for c in reported if c in _SERVER_CAPABILITIES}
    return frozenset(caps) or None


def _tier(tier: Tier | str | None) -> Tier | None:
    if tier is None or isinstance(tier, Tier):
        return tier
    try:
        return Tier(str(tier).lower())
    except ValueError:
        raise InvalidRequestError(
            f"unknown tier {tier!r}; known: {', '.join(t.value for t in Tier)}"
        ) from None


def _describe(capability: str | None, tier: Tier | None, max_cost: float | None, local: bool | None) -> str:
    parts = []
    if capability is not None:
        parts.append(f"capability {capability!r}")
    if tier is not None:
        parts.append(f"tier {tier.value!r}")
    if max_cost is not None:
        parts.append(f"max cost ${max_cost:g} per call")
    if local is not None:
        parts.append("local" if local else "cloud")
    return ", ".join(parts) or "any model"


def _left_out(unpriced: list[str], too_small: list[str], too_dear: list[tuple[float, str]]) -> str:
    parts = []
    if unpriced:
        parts.append(f"{len(unpriced)} unpriced ({_few(unpriced)})")
    if too_small:
        parts.append(f"{len(too_small)} with too small a context window ({_few(too_small)})")
    if too_dear:
        too_dear.sort()
        parts.append(
            f"{len(too_dear)} over the max cost (cheapest: {too_dear[0][1]} at ${too_dear[0][0]:.6f})"
        )
    return "; ".join(parts)


def _few(items: Iterable[str], n: int = 3) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")
