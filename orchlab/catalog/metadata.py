"""The packaged model metadata (``orchlab/data/models.yaml``): capabilities, tier, context, max output.

Prices are not kept here (see `orchlab.catalog.prices`). Read once per process, on first use (about 2 ms).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchlab.catalog.model_info import CAPABILITIES, Tier

# A dated or versioned variant of a listed id: gpt-4o-2024-08-06, claude-3-5-haiku-20241022,
# gemini-2.0-flash-001, qwen-plus-latest, gemini-2.5-flash-preview-05-20, an ":tag".
_VARIANT = re.compile(
    r"^(?:[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|\d{3,4}|latest|preview[\w.-]*|exp[\w.-]*|v\d[\w.-]*)|:[\w.-]+)$"
)


@dataclass(frozen=True, slots=True)
class ModelFacts:
    id: str
    family: str
    display_name: str | None = None
    tier: Tier | None = None
    capabilities: frozenset[str] | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class KindInfo:
    """How an adapter kind finds prices (a genai-prices provider id, ``"local"``, or None) and facts."""

    prices: str | None = None
    families: tuple[str, ...] = ()
    list: bool = False
    vendor_prefix: bool = False


class Metadata:
    def __init__(self, data: dict[str, Any]) -> None:
        self.kinds = {
            name: KindInfo(
                prices=spec.get("prices"),
                families=tuple(spec.get("families") or ()),
                list=bool(spec.get("list", False)),
                vendor_prefix=bool(spec.get("vendor_prefix", False)),
            )
            for name, spec in (data.get("kinds") or {}).items()
        }
        self.vendors: dict[str, str] = dict(data.get("vendors") or {})
        self.families: dict[str, dict[str, ModelFacts]] = {}
        self.loose: set[str] = set()
        for family, entries in (data.get("families") or {}).items():
            if entries.pop("loose", False):
                self.loose.add(family)
            self.families[family] = {
                model_id.lower(): _facts(family, model_id, spec) for model_id, spec in entries.items()
            }

    def kind(self, kind: str) -> KindInfo:
        return self.kinds.get(kind, KindInfo())

    def facts(self, kind: str, model: str) -> ModelFacts | None:
        """The entry describing ``model`` for an adapter of ``kind`` (None: not described)."""
        info = self.kind(kind)
        name = model.lower()
        families = info.families
        if "/" in name:
            vendor, _, rest = name.partition("/")
            if info.vendor_prefix:
                families = (self.vendors[vendor],) if vendor in self.vendors else ()
            name = rest
        best: ModelFacts | None = None
        for family in families:
            entries = self.families.get(family, {})
            exact = entries.get(name)
            if exact is not None:
                return exact
            for model_id, facts in entries.items():
                if not name.startswith(model_id) or (best is not None and len(best.id) >= len(model_id)):
                    continue
                rest = name[len(model_id) :]
                loose = family in self.loose and rest[:1] in ("-", ":", "_")
                if loose or _VARIANT.match(rest):
                    best = facts
        return best

    def listed(self, kind: str) -> list[ModelFacts]:
        """The models a provider of ``kind`` offers without the config naming them."""
        info = self.kind(kind)
        if not info.list:
            return []
        return [facts for family in info.families for facts in self.families.get(family, {}).values()]


def _facts(family: str, model_id: str, spec: dict[str, Any]) -> ModelFacts:
    caps = spec.get("capabilities")
    if caps is not None and not set(caps) <= CAPABILITIES:
        raise ValueError(f"models.yaml: {family}.{model_id}: unknown capabilities {set(caps) - CAPABILITIES}")
    return ModelFacts(
        id=model_id,
        family=family,
        display_name=spec.get("display_name"),
        tier=Tier(spec["tier"]) if spec.get("tier") else None,
        capabilities=frozenset(caps) if caps is not None else None,
        context_window=spec.get("context_window"),
        max_output_tokens=spec.get("max_output_tokens"),
    )


@functools.cache
def metadata() -> Metadata:
    from orchlab import yaml_cache

    # next to the package's modules, as the embedded config is (`Path`, not importlib.resources,
    # whose reader machinery is one more import on the first call's path)
    text = (Path(__file__).parent.parent / "data" / "models.yaml").read_text(encoding="utf-8")
    data = yaml_cache.load("models", text)  # read before: no PyYAML import on the first call
    if data is None:
        import yaml

        # PyYAML's C loader when it has one: 2 ms instead of 16 ms
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        yaml_cache.save("models", text, data)
    return Metadata(data)
