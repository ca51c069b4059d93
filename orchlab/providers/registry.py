"""Adapter kinds and where their classes live (imported only when a provider is built)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from orchlab.errors import MissingDependencyError

if TYPE_CHECKING:
    from orchlab.providers.base import Provider

# kind -> "module:Class"; OpenAI-compatible services are thin subclasses in openai.py.
KNOWN_KINDS: dict[str, str] = {
    "llamacpp": "orchlab.providers.llamacpp:LlamaCppProvider",
    "openai": "orchlab.providers.openai:OpenAIProvider",
    "deepseek": "orchlab.providers.openai:DeepSeekProvider",
    "qwen": "orchlab.providers.openai:QwenProvider",
    "openrouter": "orchlab.providers.openai:OpenRouterProvider",
    "vllm": "orchlab.providers.openai:VLLMProvider",
    "lmstudio": "orchlab.providers.openai:LMStudioProvider",
    "llamacpp_server": "orchlab.providers.openai:LlamaCppServerProvider",
    "anthropic": "orchlab.providers.anthropic:AnthropicProvider",
    "gemini": "orchlab.providers.gemini:GeminiProvider",
    "ollama": "orchlab.providers.ollama:OllamaProvider",
    "test": "orchlab.testing:TestProvider",
    "test_local": "orchlab.testing:LocalTestProvider",
}

# adapter module -> the extra (pyproject's optional-dependencies) that installs what it imports
EXTRAS: dict[str, str] = {
    "orchlab.providers.llamacpp": "local",
    "orchlab.providers.openai": "openai",
    "orchlab.providers.anthropic": "anthropic",
    "orchlab.providers.gemini": "gemini",
    "orchlab.providers.ollama": "ollama",
}


def kind_of(name: str, declared_type: str | None) -> str | None:
    """The adapter kind of a provider entry: its ``type``, else its key if that is a kind."""
    kind = declared_type or name
    return kind if kind in KNOWN_KINDS else None


def provider_class(kind: str) -> type[Provider]:
    module_name, _, attr = KNOWN_KINDS[kind].partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), attr)
    return cls


def missing_dependency(
    provider: Provider, exc: ImportError, *, otherwise: str = ""
) -> MissingDependencyError:
    """The error for an adapter whose SDK import failed: the entry, its kind, the module and the
    extra to install. Adapters import their SDK lazily, so this happens at the first call;
    the provider boundary (`Provider`) routes every ``ImportError`` here. ``otherwise``: another way out."""
    module = exc.name
    extra = EXTRAS.get(type(provider).__module__)
    what = f"the {module!r} module" if module else "a module"
    if isinstance(exc, ModuleNotFoundError):
        why = f"{what}, which is not installed"
    else:
        why = f"{what}, which cannot be imported ({exc})"
    fix = f"pip install 'orchlab[{extra}]'" if extra else f"install the package that provides {module!r}"
    return MissingDependencyError(
        f"provider {provider.name!r} (type {provider.kind}) needs {why}: {fix}{otherwise}",
        provider=provider.name,
        kind=provider.kind,
        module=module,
        extra=extra,
    )
