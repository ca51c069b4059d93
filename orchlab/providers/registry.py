"""Adapter kinds and where their classes live (imported only when a provider is built)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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


def kind_of(name: str, declared_type: str | None) -> str | None:
    """The adapter kind of a provider entry: its ``type``, else its key if that is a kind."""
    kind = declared_type or name
    return kind if kind in KNOWN_KINDS else None


def provider_class(kind: str) -> type[Provider]:
    module_name, _, attr = KNOWN_KINDS[kind].partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), attr)
    return cls
