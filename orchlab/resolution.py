"""From ``(project, env, role)`` to a `ResolvedLLMConfig`: provider, adapter kind, model, key, params."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchlab.auth import Secret, resolve_api_key
from orchlab.config.schema import OrchestratorConfig, ProviderConfig, RoleParams, unsendable
from orchlab.errors import AuthError, InvalidRequestError, UnknownProviderError, UnknownRoleError
from orchlab.plugins import close_matches, did_you_mean
from orchlab.providers.base import ProviderSettings
from orchlab.providers.registry import kind_of, provider_class
from orchlab.types import GenerationParams


@dataclass(frozen=True, slots=True)
class ResolvedLLMConfig:
    """Everything needed to call one model for one role. The key prints as asterisks."""

    provider: str
    kind: str
    model: str
    api_key: Secret | None
    api_base: str | None
    params: GenerationParams = field(default_factory=GenerationParams)
    role: str | None = None
    project: str | None = None
    env: str | None = None

    @property
    def target(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True, slots=True)
class Binding:
    """What a role runs on, before any key is looked up: a strategy plans with this, and each
    candidate's key is looked up only when that candidate is tried (`Resolver.resolve_target`)."""

    provider: str
    model: str
    params: GenerationParams
    role: str

    @property
    def target(self) -> str:
        return f"{self.provider}:{self.model}"


def params_from(role_params: RoleParams) -> GenerationParams:
    return GenerationParams(
        temperature=role_params.temperature,
        max_tokens=role_params.max_tokens,
        top_p=role_params.top_p,
        stop=tuple(role_params.stop) if role_params.stop else None,
        seed=role_params.seed,
        logprobs=role_params.logprobs,
        timeout_s=role_params.timeout_s,
        extra=dict(role_params.extra),
    )


PARAM_NAMES: frozenset[str] = frozenset(RoleParams.model_fields)
"""The generation parameters orchlab knows; any other name is passed to the provider as an extra."""
_NOT_PARAMS = {
    "model": "pick the model with the role (client.rebind) or complete(model='provider:model')",
    "messages": "pass messages as the call's messages argument",
    "stream": "use client.stream(...) to stream",
}
# Real provider parameters within a typo's distance of one of orchlab's names (top_k ~ top_p):
# passed through, never "did you mean".
_PROVIDER_NAMES = frozenset({"top_k", "top_a", "top_logprobs"})


def check_params(
    params: object, *, where: str = "params_override", keywords: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A call's parameter overrides, validated by the model that validates YAML ``params:``.

    Returns the overrides as given (values normalised: ``stop="x"`` -> ``["x"]``), unknown names
    under ``extra``. Refused with `InvalidRequestError` naming the parameter, before anything is
    sent: a non-mapping, a wrong type (strict: ``max_tokens="10"``), a value out of range
    (``temperature=5``, negative ``max_tokens``, a NaN or infinite ``timeout_s``), a value that
    cannot be sent (not JSON-encodable, a lone surrogate), a name orchlab sets itself (``model``),
    and a name close to a known one (``max_token``: "did you mean 'max_tokens'?"; ``keywords``
    adds the call's own keyword names to the suggestions). A provider-specific parameter whose
    name looks like a typo goes through ``extra={...}``, which is not name-checked.
    """
    if isinstance(params, GenerationParams):  # already typed: its set values, extras apart
        params = {
            **{k: v for k, v in params.as_dict().items() if k in PARAM_NAMES},
            "extra": dict(params.extra),
        }
    if not isinstance(params, Mapping):
        raise InvalidRequestError(
            f"{where} must be a mapping of parameter names to values (e.g. {{'max_tokens': 64}}), "
            f"got {type(params).__name__}"
        )
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in params.items():
        if not isinstance(name, str):
            raise InvalidRequestError(f"{where}: parameter names must be strings, got {name!r}")
        if name in PARAM_NAMES:
            known[name] = value
            continue
        if name in _NOT_PARAMS:
            raise InvalidRequestError(
                f"{where}: {name!r} is not a generation parameter: {_NOT_PARAMS[name]}", parameter=name
            )
        if name not in _PROVIDER_NAMES:
            close = _close_name(name, keywords)
            if close is not None:
                raise InvalidRequestError(
                    f"{where}: unknown parameter {name!r}; did you mean {close!r}? (to send a "
                    f"provider-specific parameter of that name, pass extra={{{name!r}: ...}})",
                    parameter=name,
                )
        extra[name] = value
    try:
        checked = RoleParams.model_validate(known, strict=True)
    except ValidationError as exc:
        raise _invalid(exc, where) from None
    out = {name: getattr(checked, name) for name in known}
    if extra:
        for name, value in extra.items():
            problem = unsendable(value)
            if problem:
                raise InvalidRequestError(
                    f"{where}: parameter {name!r} {problem}; nothing was sent", parameter=name
                )
        out["extra"] = {**out.get("extra", {}), **extra}
    return out


@functools.lru_cache(maxsize=512)
def _close_name(name: str, keywords: tuple[str, ...]) -> str | None:
    """A known name ``name`` looks like a typo of (cached: the same extras recur on every call)."""
    import difflib  # only for a name orchlab does not know

    lowered = name.lower()
    choices = {n.lower(): n for n in (*keywords, *sorted(PARAM_NAMES))}
    close = difflib.get_close_matches(lowered, list(choices), n=1, cutoff=0.8)
    return choices[close[0]] if close else None


def _invalid(exc: ValidationError, where: str) -> InvalidRequestError:
    """The first problem of ``exc`` as an `InvalidRequestError` naming its parameter."""
    err = exc.errors()[0]
    parameter = ".".join(str(part) for part in err["loc"]) or None
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "value_error":
        what = msg if msg.startswith(("stop[", "extra[")) else f"parameter {parameter!r} {msg}"
    else:
        what = f"parameter {parameter!r}: {msg[:1].lower()}{msg[1:]} (got {err.get('input')!r})"
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    return InvalidRequestError(f"{where}: {what}{more}; nothing was sent", parameter=parameter)


def parse_target(target: str) -> tuple[str, str]:
    """``'provider:model'`` -> ``(provider, model)``; the model part may itself contain colons."""
    provider, sep, model = target.partition(":")
    if not sep or not provider or not model:
        raise InvalidRequestError(f"{target!r} is not a target of the form 'provider:model'")
    return provider, model


class Resolver:
    """Resolves roles and targets against one config.

    Keys are looked up by `resolve_target` / `provider_settings` only, so a role's `binding`
    (provider, model, params) is known without one: a fallback chain whose first candidate has no
    key moves on to the next instead of failing before it starts.
    """

    def __init__(self, config: OrchestratorConfig, *, base_dir: Path | None = None) -> None:
        self.config = config
        self.base_dir = base_dir
        self._settings: dict[str, ProviderSettings] = {}

    def role_names(self) -> list[str]:
        return sorted(self.config.roles)

    def binding(self, role: str, *, project: str | None = None, env: str | None = None) -> Binding:
        """The provider, model and params ``role`` is bound to in the YAML (no key lookup)."""
        if project is not None and project != self.config.project:
            raise InvalidRequestError(f"this config is for project {self.config.project!r}, not {project!r}")
        if env is not None and env != self.config.env:
            return Resolver(self.config.for_env(env), base_dir=self.base_dir).binding(role)
        spec = self.config.roles.get(role)
        if spec is None:
            close = close_matches(role, self.config.roles)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownRoleError(
                f"role {role!r} is not defined in project {self.config.project!r} "
                f"(env {self.config.env!r}); defined roles: "
                f"{', '.join(self.role_names()) or 'none'}{hint}",
                role=role,
                suggestions=close,
            )
        target = spec.own_target()
        if target is None:
            raise InvalidRequestError(
                f"role {role!r} selects its model (select:): the client picks it "
                "(client.resolve(role), client.selection(role))",
                parameter="role",
            )
        provider, model = parse_target(target)
        self.provider_kind(provider)
        return Binding(provider, model, params_from(spec.params), role)

    def resolve(self, role: str, *, project: str | None = None, env: str | None = None) -> ResolvedLLMConfig:
        """The role's binding with its provider's key (`AuthError` when that key is missing)."""
        if env is not None and env != self.config.env:
            return Resolver(self.config.for_env(env), base_dir=self.base_dir).resolve(role, project=project)
        bound = self.binding(role, project=project)
        return self.resolve_target(bound.provider, bound.model, bound.params, role=role)

    def resolve_target(
        self,
        provider: str,
        model: str,
        params: GenerationParams | None = None,
        *,
        role: str | None = None,
    ) -> ResolvedLLMConfig:
        settings = self.provider_settings(provider)
        return ResolvedLLMConfig(
            provider=provider,
            kind=settings.kind,
            model=model,
            api_key=settings.api_key,
            api_base=settings.api_base or provider_class(settings.kind).default_api_base,
            params=params or GenerationParams(),
            role=role,
            project=self.config.project,
            env=self.config.env,
        )

    def provider_config(self, name: str) -> ProviderConfig:
        spec = self.config.providers.get(name)
        if spec is None:
            raise UnknownProviderError(
                f"provider {name!r} is not defined under providers: (defined: "
                f"{', '.join(sorted(self.config.providers)) or 'none'})"
                + did_you_mean(name, self.config.providers),
                provider=name,
            )
        return spec

    def configured_keys(self) -> list[Secret]:
        """Every API key the config can reach: each provider's env var or key file, found now.

        For masking (tracking), so it tolerates what a call would refuse: a provider without a
        key, or with a key file it cannot read, is skipped here and reported when it is used.
        """
        keys = []
        for name, spec in self.config.providers.items():
            try:
                key = resolve_api_key(
                    provider=name,
                    profile=spec.auth_profile or name,
                    key_file=spec.key_file,
                    base_dir=self.base_dir,
                    required=False,
                )
            except AuthError:
                continue
            if key is not None:
                keys.append(key)
        return keys

    def provider_kind(self, name: str) -> str:
        """The adapter kind of provider entry ``name`` (no key lookup)."""
        spec = self.provider_config(name)
        kind = kind_of(name, spec.type)
        if kind is None:
            raise UnknownProviderError(
                f"providers.{name}: unknown adapter type {spec.type or name!r}", provider=name
            )
        return kind

    def provider_settings(self, name: str) -> ProviderSettings:
        """The entry with its key: looked up here, when a call to ``name`` is about to be made.

        A missing key raises `AuthError` and is not remembered, so a key set later in the
        session is found by the next call.
        """
        cached = self._settings.get(name)
        if cached is not None:
            return cached
        kind = self.provider_kind(name)
        spec = self.config.providers[name]
        cls = provider_class(kind, provider=name)
        key = None
        if cls.requires_key or spec.auth_profile or spec.key_file:
            key = resolve_api_key(
                provider=name,
                profile=spec.auth_profile or name,
                key_file=spec.key_file,
                base_dir=self.base_dir,
                required=cls.requires_key,
            )
        settings = ProviderSettings(
            name=name,
            kind=kind,
            api_base=spec.api_base,
            api_key=key,
            timeout_s=spec.timeout_s,
            max_retries=spec.max_retries,
            options=dict(spec.options),
            stream_idle_timeout_s=spec.stream_idle_timeout_s,
            deployments=tuple(spec.deployments),
            pool=spec.pool,
        )
        self._settings[name] = settings
        return settings
