"""orchlab: roles, not hard-coded models. A Jupyter-first kit to run, route, compare and pay for LLMs.

For example:

    import orchlab
    client = orchlab.get_llm_client()   # embedded default: in-process local model, no keys
    print(client.run("llm.preprocess", [{"role": "user", "content": "What is 2+2?"}]))

Everything below is imported on first use, so ``import orchlab`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AllAttemptsFailedError": "orchlab.errors",
    "AuthError": "orchlab.errors",
    "BudgetExceededError": "orchlab.errors",
    "ConfigError": "orchlab.errors",
    "ContextWindowError": "orchlab.errors",
    "Embeddings": "orchlab.types",
    "EnsembleMode": "orchlab.strategies.base",
    "LLMResponse": "orchlab.types",
    "Logic": "orchlab.strategies.logic",
    "ModelInfo": "orchlab.catalog.model_info",
    "Orchestrator": "orchlab.orchestrator",
    "OrchlabError": "orchlab.errors",
    "OutputValidationError": "orchlab.errors",
    "Provider": "orchlab.providers.base",
    "ProviderError": "orchlab.errors",
    "RateLimitError": "orchlab.errors",
    "ResolvedLLMConfig": "orchlab.resolution",
    "Strategy": "orchlab.strategies.base",
    "StrategyError": "orchlab.errors",
    "TaskType": "orchlab.strategies.routing",
    "Tier": "orchlab.catalog.model_info",
    "Tool": "orchlab.tools.model",
    "ToolCall": "orchlab.tools.model",
    "ToolResult": "orchlab.tools.model",
    "UnknownCostError": "orchlab.errors",
    "Usage": "orchlab.types",
    "compare": "orchlab.tracking.compare",
    "evaluate": "orchlab.evaluation.run",
    "flush": "orchlab.tracking.api",
    "get_llm_client": "orchlab.orchestrator",
    "history": "orchlab.tracking.history",
    "load_config": "orchlab.config.loader",
    "load_prompt": "orchlab.tracking.prompts",
    "register_formatter": "orchlab.output.formats",
    "register_prompt": "orchlab.tracking.prompts",
    "tool": "orchlab.tools.functions",
    "usage_history": "orchlab.tracking.history",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from orchlab.catalog.model_info import ModelInfo, Tier
    from orchlab.config.loader import load_config
    from orchlab.errors import (
        AllAttemptsFailedError,
        AuthError,
        BudgetExceededError,
        ConfigError,
        ContextWindowError,
        OrchlabError,
        OutputValidationError,
        ProviderError,
        RateLimitError,
        StrategyError,
        UnknownCostError,
    )
    from orchlab.evaluation.run import evaluate
    from orchlab.orchestrator import Orchestrator, get_llm_client
    from orchlab.output.formats import register_formatter
    from orchlab.providers.base import Provider
    from orchlab.resolution import ResolvedLLMConfig
    from orchlab.strategies.base import EnsembleMode, Strategy
    from orchlab.strategies.logic import Logic
    from orchlab.strategies.routing import TaskType
    from orchlab.tools.functions import tool
    from orchlab.tools.model import Tool, ToolCall, ToolResult
    from orchlab.tracking.api import flush
    from orchlab.tracking.compare import compare
    from orchlab.tracking.history import history, usage_history
    from orchlab.tracking.prompts import load_prompt, register_prompt
    from orchlab.types import Embeddings, LLMResponse, Usage


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orchlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext orchlab``: registers the ``%%llm`` / ``%llm`` magics (see `orchlab.notebook`)."""
    from orchlab.notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from orchlab.notebook import unload_ipython_extension as unload

    unload(ipython)
