"""Reading a config file into an `OrchestratorConfig`, with errors that point into the file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchlab.config.document import Document, Problem, decode, key_path, read_document
from orchlab.config.schema import UNION_TAGS, LogicCandidateConfig, OrchestratorConfig
from orchlab.errors import (
    ConfigError,
    ConfigFileError,
    ConfigValidationError,
    PluginError,
    UnknownProviderError,
    UnknownRoleError,
)
from orchlab.plugins import close_matches
from orchlab.plugins import did_you_mean as _did_you_mean
from orchlab.providers.registry import kind_of, known_kinds

DEFAULT_CONFIG_NAME = "local.yaml"
MAX_SHOWN = 50
"""Problems listed in a `ConfigValidationError` message (all of them are in ``.problems``)."""


def default_config_path() -> Path:
    """The embedded default: every example role on the in-process local model."""
    return Path(__file__).parent.parent / "data" / DEFAULT_CONFIG_NAME


def load_config(path: str | Path | None = None) -> OrchestratorConfig:
    """Load and check a YAML config; ``None`` loads the embedded default. PyYAML's reading of the
    file is kept for a later process (`orchlab.yaml_cache`; ``ORCH_YAML_CACHE=off``: never)."""
    file = Path(path).expanduser() if path is not None else default_config_path()
    return parse_config(read_config_text(file), source=str(file), cache=True)


def read_config_text(file: Path) -> str:
    """The text of a config file (UTF-8), or a `ConfigFileError` saying why it cannot be read."""
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigFileError(f"config file not found: {file}", path=str(file)) from None
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {file}: {exc}", path=str(file)) from exc
    return decode(raw, source=str(file))


def parse_config(text: str, *, source: str = "<string>", cache: bool = False) -> OrchestratorConfig:
    """Check YAML text into an `OrchestratorConfig`; ``${VAR}`` values are expanded from the
    environment (rules in `orchlab.config.envvars`, refusals in `orchlab.config.document`).
    ``cache``: keep PyYAML's reading of ``text`` for a later process, or take it from there."""
    doc = read_document(text, source=source, cache=cache)
    if doc.problems:
        raise problems_error(source, doc.problems)
    data = doc.data
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
        problems = []
        for err in exc.errors(include_url=False):
            err["loc"] = tuple(part for part in err["loc"] if part not in UNION_TAGS)
            path = doc.locate(err["loc"])
            written = doc.from_env[path][0] if path in doc.from_env else None
            message = doc.redact(_explain(err, written), path)
            line = doc.lines.get(path) if path else None
            problems.append(Problem(key_path(err["loc"]), line, message))
        raise problems_error(source, problems) from None
    try:
        check_references(config, source=source)
        check_models_and_budgets(config, source=source)
        check_strategy_references(config, source=source)
    except ConfigError as exc:
        if not doc.from_env:
            raise
        shown = _as_written(exc, doc)
    else:
        return config
    raise shown  # outside the except block: the error naming the values is not even its context


def _as_written(exc: ConfigError, doc: Document) -> ConfigError:
    """``exc`` built again with every value from ``${VAR}`` shown as the file writes it (a new
    error, raised instead of the one that names the values: nothing is patched)."""
    message = doc.redact(str(exc))

    def shown(value: str) -> str:
        return next((written for written, expanded in doc.from_env.values() if value == expanded), value)

    if isinstance(exc, UnknownProviderError):
        return UnknownProviderError(message, provider=shown(exc.provider))
    if isinstance(exc, UnknownRoleError):
        return UnknownRoleError(
            message, role=shown(exc.role), suggestions=[shown(s) for s in exc.suggestions]
        )
    if isinstance(exc, ConfigValidationError):
        problems = [(key, doc.redact(text)) for key, text in exc.problems]
        return ConfigValidationError(message, path=exc.path, problems=problems)
    if isinstance(exc, PluginError):
        provider = None if exc.provider is None else shown(exc.provider)
        return PluginError(message, kind=shown(exc.kind), provider=provider)
    return ConfigError(message)


def problems_error(source: str, problems: Sequence[Problem]) -> ConfigValidationError:
    """One error listing the first `MAX_SHOWN` problems with their lines, and how many there are."""
    shown = [
        f"  {p.key}{f' (line {p.line})' if p.line is not None else ''}: {p.message}"
        for p in problems[:MAX_SHOWN]
    ]
    if len(problems) > MAX_SHOWN:
        shown.append(f"  … and {len(problems) - MAX_SHOWN} more ({len(problems)} in total)")
    return ConfigValidationError(
        f"{source}: {len(problems)} problem(s) in the config:\n" + "\n".join(shown),
        path=source,
        problems=[(p.key, p.message) for p in problems],
    )


def check_env(config: OrchestratorConfig, env: str, *, source: str, origin: str = "env=") -> None:
    """``env`` is the base env (``env:``) or has an overlay under ``envs:``; else a `ConfigError`
    listing the envs that exist."""
    known = list(dict.fromkeys([config.env, *config.envs]))
    if env not in known:
        raise ConfigError(
            f"{source}: env {env!r} (from {origin}) is not defined; the envs are "
            f"{', '.join(known)} ({config.env!r} is the base, set by env:; the others are under envs:)"
            + _did_you_mean(env, known)
        )


def check_references(config: OrchestratorConfig, *, source: str = "<config>") -> None:
    """Every role names a defined provider; every provider names a known adapter type (built-in,
    registered, an installed plugin's, or ``"package.module:Class"``, imported on first use)."""
    for name, provider in config.providers.items():
        if kind_of(name, provider.type) is None:
            wanted = provider.type or name
            known = known_kinds()
            raise UnknownProviderError(
                f"{source}: providers.{name}: unknown adapter type {wanted!r}; known types: "
                f"{', '.join(known)}, or a class as 'package.module:Class'" + _did_you_mean(wanted, known),
                provider=name,
            )
    for env_name, overlay in [("", None), *config.envs.items()]:
        view = config if overlay is None else config.for_env(env_name)
        prefix = "" if overlay is None else f"envs.{env_name}."
        for role_name, role in view.roles.items():
            targets = [(f"{prefix}roles.{role_name}.provider", role.provider)] if role.provider else []
            targets += [(f"{prefix}roles.{role_name}.fallbacks", t.partition(":")[0]) for t in role.fallbacks]
            for c in role.candidates:
                if isinstance(c, LogicCandidateConfig):
                    inside = c.targets()
                else:
                    inside = [c if isinstance(c, str) else c.target]
                for target in inside:
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
                suggestions=close_matches(role_name, roles),
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
    """Judges, aggregators, routes, the classifier and the gateway's aliases name a role or a
    'provider:model' of a defined provider; the gateway's ``expose`` names roles."""
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
    for alias, ref in config.gateway.aliases.items():
        if ref[:4].lower() != "urn:":  # a URN is checked by the gateway when it starts (orchlab.serve)
            refs.append((f"gateway.aliases.{alias}", ref))
    for i, role_name in enumerate(config.gateway.expose or ()):
        if role_name not in config.roles:
            refs.append((f"gateway.expose[{i}]", role_name))
    for key, ref in refs:
        if ref in config.roles:
            continue
        if key.startswith("gateway.expose"):
            raise UnknownRoleError(
                f"{source}: {key}: {ref!r} is not a defined role (defined: "
                f"{', '.join(sorted(config.roles)) or 'none'})" + _did_you_mean(ref, config.roles),
                role=ref,
                suggestions=close_matches(ref, config.roles),
            )
        provider_name, sep, model = ref.partition(":")
        if not sep or not model:
            raise UnknownRoleError(
                f"{source}: {key}: {ref!r} is not a defined role (defined: "
                f"{', '.join(sorted(config.roles)) or 'none'}) nor a 'provider:model' target"
                + _did_you_mean(ref, config.roles),
                role=ref,
                suggestions=close_matches(ref, config.roles),
            )
        if provider_name not in config.providers:
            raise UnknownProviderError(
                f"{source}: {key}: provider {provider_name!r} is not defined under providers: "
                f"(defined: {', '.join(sorted(config.providers)) or 'none'})"
                + _did_you_mean(provider_name, config.providers),
                provider=provider_name,
            )


def _explain(err: Mapping[str, Any], written: str | None = None) -> str:
    """Pydantic's message, and the value it got (as the file writes it when it came from ``${VAR}``)."""
    if err["type"] == "extra_forbidden":
        return "unknown key (not part of the schema)"
    if err["type"] == "missing":
        return "required key is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")  # our own validators' ValueError
    got = err.get("input")
    if err["type"] == "value_error" and repr(got) in msg:
        return msg  # it names the value already
    if isinstance(got, Mapping | list):
        shown = ""
    elif written is not None:
        shown = f" (got {written!r} from the environment)"
    else:
        text = repr(got)
        shown = f" (got {text if len(text) <= 80 else text[:80] + '…'})"
    return f"{msg}{shown}"
