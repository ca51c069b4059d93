"""Selectors: which catalogued model a rule picks (a role's ``select:``), and why.

``select_model`` ranks every catalogued model of the providers in scope that meets the rule, and
names every other one with the reason it was ruled out (capability, tier, unreachable or cooling
down, context window, no price, over the max cost). Ranking: ``prefer: local`` puts local models
first, ``cloud`` cloud ones, ``cheapest`` neither; then the estimated cost per call (prompt +
output tokens at the catalog's prices), then the higher tier, the larger window, the target.

It is pure: what is reachable now comes in as ``unavailable(provider) -> why | None`` (the
client's cooldowns, a pool's health, the catalog's discovery errors), so the same rule picks
again, differently, when a host goes down or a model appears.

For example:

    selection = select_model(client.catalog, SelectConfig(capability="code", tier="standard"))
    selection.target, selection.estimated_cost_usd, selection.rationale
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchlab.catalog.model_info import ModelInfo, Tier
from orchlab.errors import NoModelMatchesError
from orchlab.types import Usage

if TYPE_CHECKING:
    from orchlab.catalog.catalog import Catalog
    from orchlab.config.schema import SelectConfig

_TIER_RANK = {Tier.FAST: 0, Tier.STANDARD: 1, Tier.ADVANCED: 2}


@dataclass(frozen=True, slots=True)
class Selection:
    """What a selector picked now: the model, its estimated cost per call, the runners-up (in
    rank order, the choice first), everything ruled out with why, and a one-line rationale."""

    chosen: ModelInfo
    estimated_cost_usd: float
    ranked: tuple[tuple[ModelInfo, float], ...]
    ruled_out: Mapping[str, str] = field(default_factory=dict)
    tier: Tier | None = None
    rationale: str = ""

    @property
    def target(self) -> str:
        return self.chosen.target

    def __str__(self) -> str:
        return f"{self.target} (~${self.estimated_cost_usd:.6f} per call): {self.rationale}"


def select_model(
    catalog: Catalog,
    rule: SelectConfig,
    *,
    tier: Tier | None = None,
    tier_why: str = "",
    output_tokens: int | None = None,
    unavailable: Callable[[str], str | None] = lambda provider: None,
    role: str | None = None,
) -> Selection:
    """The model ``rule`` picks from ``catalog`` now. ``tier`` (else the rule's) must match;
    ``output_tokens`` (else the rule's) sizes the cost estimate. Raises `NoModelMatchesError`
    listing every model ruled out and why when none is left."""
    wanted = tier if tier is not None else (Tier(rule.tier) if rule.tier is not None else None)
    prompt = rule.prompt_tokens
    output = output_tokens if output_tokens is not None else rule.output_tokens
    scope = list(rule.providers)
    ruled_out: dict[str, str] = {}
    kept: list[tuple[ModelInfo, float]] = []
    down: dict[str, str | None] = {}
    for info in catalog.list_models():
        if scope and info.provider not in scope:
            continue
        why = _ruled_out(catalog, info, rule, wanted, prompt, output, down, unavailable)
        if isinstance(why, str):
            ruled_out[info.target] = why
        else:
            kept.append((info, why))
    what = _describe(rule, wanted, tier_why)
    who = f"role {role!r}: " if role else ""
    if not kept:
        lines = "; ".join(f"{t}: {why}" for t, why in ruled_out.items()) or "no model in the catalog"
        where = f" among providers {', '.join(scope)}" if scope else ""
        raise NoModelMatchesError(
            f"{who}no model matches select {what}{where} for {prompt:,} prompt + {output:,} output tokens "
            f"(ruled out: {lines}). Relax the rule, add models under models: in the YAML, or start a host.",
            ruled_out=ruled_out,
        )
    prefer = rule.prefer
    kept.sort(
        key=lambda item: (
            (not item[0].local) if prefer == "local" else item[0].local if prefer == "cloud" else False,
            item[1],
            -_TIER_RANK[item[0].tier],
            -(item[0].context_window or 0),
            item[0].target,
        )
    )
    best, cost = kept[0]
    rationale = (
        f"select {what}: {best.target} at ${cost:.6f} per call ({prompt:,} prompt + {output:,} output "
        f"tokens, {best.price_source} prices, tier {best.tier.value}"
        f"{', local' if best.local else ''}); {_order(prefer)} of {len(kept)} matching"
    )
    if len(kept) > 1:
        rationale += f"; next: {kept[1][0].target} at ${kept[1][1]:.6f}"
    if ruled_out:
        rationale += "; ruled out: " + "; ".join(f"{t} ({why})" for t, why in list(ruled_out.items())[:6])
        if len(ruled_out) > 6:
            rationale += f"; and {len(ruled_out) - 6} more"
    return Selection(best, cost, tuple(kept), ruled_out, wanted, rationale)


def _ruled_out(
    catalog: Catalog,
    info: ModelInfo,
    rule: SelectConfig,
    tier: Tier | None,
    prompt: int,
    output: int,
    down: dict[str, str | None],
    unavailable: Callable[[str], str | None],
) -> str | float:
    """Why ``info`` is ruled out, or its estimated cost per call."""
    if rule.capability not in info.capabilities:
        return f"no capability {rule.capability!r} (has {', '.join(sorted(info.capabilities))})"
    if tier is not None and info.tier is not tier:
        return f"tier {info.tier.value}, not {tier.value}"
    if info.provider not in down:
        down[info.provider] = unavailable(info.provider)
    if down[info.provider] is not None:
        return str(down[info.provider])
    if info.context_window is not None and prompt + output > info.context_window:
        return f"context window {info.context_window:,} < {prompt + output:,} tokens"
    price = catalog.entry(info.provider, info.model).price
    if price is None:
        return "no price (add it under models:)"
    cost = price.cost(Usage(prompt, output))
    if rule.max_cost_per_call is not None and cost > rule.max_cost_per_call:
        return f"${cost:.6f} per call > max_cost_per_call ${rule.max_cost_per_call:g}"
    return cost


def _describe(rule: SelectConfig, tier: Tier | None, tier_why: str) -> str:
    parts = [f"capability {rule.capability!r}"]
    if tier is not None:
        parts.append(f"tier {tier.value!r}{f' ({tier_why})' if tier_why else ''}")
    if rule.max_cost_per_call is not None:
        parts.append(f"max ${rule.max_cost_per_call:g} per call")
    if rule.prefer != "cheapest":
        parts.append(f"prefer {rule.prefer}")
    return ", ".join(parts)


def _order(prefer: str) -> str:
    return {"local": "local first, then cheapest", "cloud": "cloud first, then cheapest"}.get(
        prefer, "cheapest"
    )
