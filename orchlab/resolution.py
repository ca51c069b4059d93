"""From ``(project, env, role)`` to a `ResolvedLLMConfig`: provider, adapter kind, model, key, params."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from orchlab.auth import Secret, resolve_api_key
from orchlab.config.schema import OrchestratorConfig, ProviderConfig, RoleParams
from orchlab.errors import AuthError, InvalidRequestError, UnknownProviderError, UnknownRoleError
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


def parse_target(target: str) -> tuple[str, str]:
    """``'provider:model'`` -> ``(provider, model)``; the model part may itself contain colons."""
    provider, sep, model = target.partition(":")
    if not sep or not provider or not model:
        raise InvalidRequestError(f"{target!r} is not a target of the form 'provider:model'")
    return provider, model


class Resolver:
    """Resolves roles and targets against one config (auth is looked up lazily, per provider)."""

    def __init__(self, config: OrchestratorConfig, *, base_dir: Path | None = None) -> None:
        self.config = config
        self.base_dir = base_dir
        self._settings: dict[str, ProviderSettings] = {}

    def role_names(self) -> list[str]:
        return sorted(self.config.roles)

    def resolve(self, role: str, *, project: str | None = None, env: str | None = None) -> ResolvedLLMConfig:
        if project is not None and project != self.config.project:
            raise InvalidRequestError(f"this config is for project {self.config.project!r}, not {project!r}")
        if env is not None and env != self.config.env:
            return Resolver(self.config.for_env(env), base_dir=self.base_dir).resolve(role)
        spec = self.config.roles.get(role)
        if spec is None:
            close = difflib.get_close_matches(role, self.config.roles, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownRoleError(
                f"role {role!r} is not defined in project {self.config.project!r} "
                f"(env {self.config.env!r}); defined roles: "
                f"{', '.join(self.role_names()) or 'none'}{hint}",
                role=role,
                suggestions=close,
            )
        return self.resolve_target(spec.provider, spec.model, params_from(spec.params), role=role)

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
            close = difflib.get_close_matches(name, self.config.providers, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownProviderError(
                f"provider {name!r} is not defined under providers: (defined: "
                f"{', '.join(sorted(self.config.providers)) or 'none'}){hint}",
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

    def provider_settings(self, name: str) -> ProviderSettings:
        cached = self._settings.get(name)
        if cached is not None:
            return cached
        spec = self.provider_config(name)
        kind = kind_of(name, spec.type)
        if kind is None:
            raise UnknownProviderError(
                f"providers.{name}: unknown adapter type {spec.type or name!r}", provider=name
            )
        cls = provider_class(kind)
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
        )
        self._settings[name] = settings
        return settings
