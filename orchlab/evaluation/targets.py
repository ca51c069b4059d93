"""What an `evaluate` target names: a role, ``'provider:model'``, a URN, a logic id, a logic
object or a dict (see `orchlab.evaluation.run`'s module doc)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchlab.config import logic_ids
from orchlab.errors import InvalidRequestError
from orchlab.evaluation.replay import POLICY_KEYS
from orchlab.strategies.registry import is_logic_object, logic_object_name
from orchlab.strategies.urn import is_urn

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator
    from orchlab.strategies.logic import Logic

TARGET_KEYS = ("label", "target", "strategy", "prompt", "system", "params", "replay_of", *POLICY_KEYS)


@dataclass(frozen=True)
class EvalTarget:
    label: str
    target: str | None = None
    """A role, ``'provider:model'`` or a URN (None: ``strategy`` on the default role)."""
    strategy: str | Logic | type[Logic] | None = None
    """A logic id, or a logic object the calls use unregistered."""
    prompt: str | None = None
    system: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    replay_of: str | None = None
    policy: Mapping[str, Any] = field(default_factory=dict)


def eval_target(client: Orchestrator, spec: object) -> EvalTarget:
    """What an evaluate target names (see the module doc)."""
    if isinstance(spec, EvalTarget):
        return spec
    if isinstance(spec, str):
        return EvalTarget(spec, **_where(client, spec))
    if is_logic_object(spec):
        return EvalTarget(logic_object_name(spec), strategy=spec)
    if not isinstance(spec, Mapping):
        raise InvalidRequestError(
            "an evaluate target is a role, 'provider:model', a URN, a logic id, a logic object "
            f"(an orchlab.Logic subclass or instance) or a dict, got {spec!r}"
        )
    unknown = sorted(set(spec) - set(TARGET_KEYS))
    if unknown:
        raise InvalidRequestError(
            f"evaluate target {dict(spec)!r}: unknown key(s) {unknown}; use {', '.join(TARGET_KEYS)}"
        )
    where: dict[str, Any] = {}
    if spec.get("target") is not None:
        where = _where(client, str(spec["target"]))
    strategy = spec.get("strategy")
    if strategy is not None:
        where["strategy"] = strategy if is_logic_object(strategy) else str(strategy)
    named = logic_object_name(strategy) if is_logic_object(strategy) else strategy
    label = spec.get("label") or spec.get("target") or named or spec.get("replay_of")
    if not label:
        raise InvalidRequestError(f"evaluate target {dict(spec)!r} needs a label, target or strategy")
    params = spec.get("params") or {}
    if not isinstance(params, Mapping):
        raise InvalidRequestError(f"evaluate target {label!r}: params must be a dict, got {params!r}")
    return EvalTarget(
        str(label),
        prompt=spec.get("prompt"),
        system=spec.get("system"),
        params=dict(params),
        replay_of=spec.get("replay_of"),
        policy={k: spec[k] for k in POLICY_KEYS if k in spec},
        **where,
    )


def _where(client: Orchestrator, spec: str) -> dict[str, Any]:
    spec = spec.strip()
    if is_urn(spec) or spec in client.roles():
        return {"target": spec}
    if ":" in spec:
        client.resolver.provider_config(spec.partition(":")[0])  # UnknownProviderError, "did you mean"
        return {"target": spec}
    try:
        logic_ids.check(spec)
    except ValueError as exc:
        raise InvalidRequestError(
            f"evaluate target {spec!r} is not a role ({', '.join(client.roles()) or 'none defined'}), "
            f"not 'provider:model', not a URN and not a logic: {exc}"
        ) from None
    return {"strategy": spec}


def strategy_name(strategy: str | Logic | type[Logic] | None) -> str:
    if strategy is None:
        return "-"
    return strategy if isinstance(strategy, str) else logic_object_name(strategy)
