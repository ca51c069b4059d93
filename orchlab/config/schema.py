"""The `llm_orchestrator.yaml` schema: pydantic models with ``extra="forbid"``.

Example::

    project: my_project
    env: dev
    providers:
      openai: {auth_profile: openai_default, api_base: https://api.openai.com/v1}
      gpu1: {type: ollama, api_base: http://gpu1:11434}
    roles:
      llm.preprocess: {provider: openai, model: gpt-4.1-mini, params: {temperature: 0}}
      llm.inference: {provider: gpu1, model: "llama3.1:8b", fallbacks: ["openai:gpt-4.1"]}
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_target(value: str) -> str:
    provider, sep, model = value.partition(":")
    if not sep or not provider or not model:
        raise ValueError(f"{value!r} is not of the form 'provider:model'")
    return value


Target = Annotated[str, AfterValidator(_check_target)]
"""A ``'provider:model'`` string."""


class ProviderConfig(_Strict):
    """One provider entry. ``type`` names the adapter; it defaults to the entry's key."""

    type: str | None = None
    auth_profile: str | None = None
    api_base: str | None = None
    key_file: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=0, ge=0, description="retries inside the SDK itself")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="adapter-specific settings, validated by the adapter (e.g. model_path, n_ctx)",
    )


class RoleParams(_Strict):
    """Generation defaults for a role; a call's ``params_override`` goes on top."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: list[str] | None = None
    seed: int | None = None
    logprobs: bool = False
    timeout_s: float | None = Field(default=None, gt=0)
    extra: dict[str, Any] = Field(
        default_factory=dict, description="provider-specific parameters passed through as they are"
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RoleConfig(_Strict):
    provider: str
    model: str
    description: str | None = None
    params: RoleParams = RoleParams()
    fallbacks: list[Target] = Field(default_factory=list, description="'provider:model' targets")


class EnvOverlay(_Strict):
    """Per-environment changes, merged over the base providers and roles when that env is used."""

    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    roles: dict[str, RoleConfig] = Field(default_factory=dict)


class OrchestratorConfig(_Strict):
    project: str
    env: str = "dev"
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    roles: dict[str, RoleConfig] = Field(default_factory=dict)
    envs: dict[str, EnvOverlay] = Field(default_factory=dict)

    def for_env(self, env: str) -> OrchestratorConfig:
        """This config as seen from ``env``: that env's overlay merged over the base."""
        overlay = self.envs.get(env)
        if overlay is None:
            return self.model_copy(update={"env": env})
        return self.model_copy(
            update={
                "env": env,
                "providers": {**self.providers, **overlay.providers},
                "roles": {**self.roles, **overlay.roles},
            }
        )
