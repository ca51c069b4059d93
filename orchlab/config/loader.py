"""Reading a config file into an `OrchestratorConfig`, with errors that point into the file."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchlab.config.schema import OrchestratorConfig
from orchlab.errors import ConfigFileError, ConfigValidationError, UnknownProviderError, UnknownRoleError
from orchlab.providers.registry import KNOWN_KINDS, kind_of

DEFAULT_CONFIG_NAME = "local.yaml"


def default_config_path() -> Path:
    """The embedded default: every example role on the in-process local model."""
    return Path(str(resources.files("orchlab") / "data" / DEFAULT_CONFIG_NAME))


def load_config(path: str | Path | None = None) -> OrchestratorConfig:
    """Load and check a YAML config; ``None`` loads the embedded default."""
    file = Path(path).expanduser() if path is not None else default_config_path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"config file not found: {file}", path=str(file)) from None
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {file}: {exc}", path=str(file)) from exc
    return parse_config(text, source=str(file))


def parse_config(text: str, *, source: str = "<string>") -> OrchestratorConfig:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        where = f"{source}:{line}:{column}" if line is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError(
            f"{where}: invalid YAML: {problem}", path=source, line=line, column=column
        ) from exc
    if data is None:
        raise ConfigFileError(f"{source}: the file is empty", path=source)
    if not isinstance(data, Mapping):
        raise ConfigFileError(
            f"{source}: the top level must be a mapping (project:, providers:, roles:), "
            f"got {type(data).__name__}",
            path=source,
        )
    try:
        config = OrchestratorConfig.model_validate(data)
    except ValidationError as exc:
        problems = [(_key_path(err["loc"]), _explain(err)) for err in exc.errors()]
        lines = [
            f"  {key}{_line_of(node, err['loc'])}: {msg}"
            for (key, msg), err in zip(problems, exc.errors(), strict=True)
        ]
        raise ConfigValidationError(
            f"{source}: {len(problems)} problem(s) in the config:\n" + "\n".join(lines),
            path=source,
            problems=problems,
        ) from None
    check_references(config, source=source)
    check_models_and_budgets(config, source=source)
    check_strategy_references(config, source=source)
    return config


def check_references(config: OrchestratorConfig, *, source: str = "<config>") -> None:
    """Every role names a defined provider; every provider names a known adapter type."""
    for name, provider in config.providers.items():
        if kind_of(name, provider.type) is None:
            wanted = provider.type or name
            raise UnknownProviderError(
                f"{source}: providers.{name}: unknown adapter type {wanted!r}; known types: "
                f"{', '.join(sorted(KNOWN_KINDS))}" + _did_you_mean(wanted, KNOWN_KINDS),
                provider=name,
            )
    for env_name, overlay in [("", None), *config.envs.items()]:
        view = config if overlay is None else config.for_env(env_name)
        prefix = "" if overlay is None else f"envs.{env_name}."
        for role_name, role in view.roles.items():
            targets = [(f"{prefix}roles.{role_name}.provider", role.provider)]
            targets += [(f"{prefix}roles.{role_name}.fallbacks", t.partition(":")[0]) for t in role.fallbacks]
            for c in role.candidates:
                target = c if isinstance(c, str) else c.target
                targets.append((f"{prefix}roles.{role_name}.candidates", target.partition(":")[0]))
            for key, provider_name in targets:
                if provider_name not in view.providers:
                    raise UnknownProviderError(
                        f"{source}: {key}: provider {provider_name!r} is not defined under "
                        f"providers: (defined: {', '.join(sorted(view.providers)) or 'none'})"
                        + _did_you_mean(provider_name, view.providers),
                        provider=provider_name,
                    )


def check_models_and_budgets(config: OrchestratorConfig, *, source: str = "<config>") -> None:
    """``models:`` keys name defined providers; budgeted roles exist and are budgeted once."""
    providers = set(config.providers)
    roles = set(config.roles)
    for overlay in config.envs.values():
        providers |= set(overlay.providers)
        roles |= set(overlay.roles)
    for target in config.models:
        provider_name = target.partition(":")[0]
        if provider_name not in providers:
            raise UnknownProviderError(
                f"{source}: models.{target}: provider {provider_name!r} is not defined under "
                f"providers: (defined: {', '.join(sorted(providers)) or 'none'})"
                + _did_you_mean(provider_name, providers),
                provider=provider_name,
            )
    for role_name in config.budgets.per_role_usd:
        if role_name not in roles:
            raise UnknownRoleError(
                f"{source}: budgets.per_role_usd.{role_name}: role {role_name!r} is not defined "
                f"(defined: {', '.join(sorted(roles)) or 'none'})" + _did_you_mean(role_name, roles),
                role=role_name,
                suggestions=difflib.get_close_matches(role_name, list(roles), n=3, cutoff=0.5),
            )
        if role_name in config.roles and config.roles[role_name].budget_usd is not None:
            key = f"roles.{role_name}.budget_usd"
            raise ConfigValidationError(
                f"{source}: {key}: the budget of role {role_name!r} is set twice (also in "
                "budgets.per_role_usd); keep one",
                path=source,
                problems=[(key, "set twice")],
            )


def check_strategy_references(config: OrchestratorConfig, *, source: str = "<config>") -> None:
    """Judges, aggregators, routes and the classifier name a role or a 'provider:model' of a defined
    provider."""
    refs: list[tuple[str, str]] = []
    for role_name, role in config.roles.items():
        for key, section in (("cascade", role.cascade), ("parallel", role.parallel)):
            if section is not None and section.judge:
                refs.append((f"roles.{role_name}.{key}.judge", section.judge))
        if role.ensemble is not None:
            for key in ("judge", "aggregator"):
                if getattr(role.ensemble, key):
                    refs.append((f"roles.{role_name}.ensemble.{key}", getattr(role.ensemble, key)))
    routing = config.routing
    if routing.default:
        refs.append(("routing.default", routing.default))
    if routing.classifier_role:
        refs.append(("routing.classifier_role", routing.classifier_role))
    for task, route in routing.routes.items():
        for tier, ref in route.items() if isinstance(route, dict) else [(None, route)]:
            refs.append((f"routing.routes.{task}" + (f".{tier}" if tier else ""), ref))
    for key, ref in refs:
        if ref in config.roles:
            continue
        provider_name, sep, model = ref.partition(":")
        if not sep or not model:
            raise UnknownRoleError(
                f"{source}: {key}: {ref!r} is not a defined role (defined: "
                f"{', '.join(sorted(config.roles)) or 'none'}) nor a 'provider:model' target"
                + _did_you_mean(ref, config.roles),
                role=ref,
                suggestions=difflib.get_close_matches(ref, list(config.roles), n=3, cutoff=0.5),
            )
        if provider_name not in config.providers:
            raise UnknownProviderError(
                f"{source}: {key}: provider {provider_name!r} is not defined under providers: "
                f"(defined: {', '.join(sorted(config.providers)) or 'none'})"
                + _did_you_mean(provider_name, config.providers),
                provider=provider_name,
            )


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _key_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<top level>"


def _explain(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (not part of the schema)"
    if err["type"] == "missing":
        return "required key is missing"
    got = err.get("input")
    shown = "" if isinstance(got, Mapping | list) else f" (got {got!r})"
    return f"{err['msg']}{shown}"


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> str:
    """' (line N)' for the deepest YAML node along ``loc`` that exists."""
    found = node
    for part in loc:
        child = None
        if isinstance(found, yaml.MappingNode) and isinstance(part, str):
            for key, value in found.value:
                if key.value == part:
                    child = value if part != loc[-1] else key
                    break
        elif isinstance(found, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(found.value):
            child = found.value[part]
        if child is None:
            break
        found = child
    if found is None or found is node:
        return ""
    return f" (line {found.start_mark.line + 1})"
