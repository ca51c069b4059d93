"""The public API is short, sorted, pinned here, and importing it is cheap."""

from __future__ import annotations

import subprocess
import sys

import orchlab

PUBLIC = [
    "AllAttemptsFailedError",
    "AuthError",
    "BudgetExceededError",
    "ConfigError",
    "ContextWindowError",
    "Embeddings",
    "EnsembleMode",
    "LLMResponse",
    "Logic",
    "ModelInfo",
    "Orchestrator",
    "OrchlabError",
    "OutputValidationError",
    "Provider",
    "ProviderError",
    "RateLimitError",
    "ResolvedLLMConfig",
    "Strategy",
    "StrategyError",
    "TaskType",
    "Tier",
    "Tool",
    "ToolCall",
    "ToolResult",
    "UnknownCostError",
    "Usage",
    "compare",
    "evaluate",
    "flush",
    "get_llm_client",
    "history",
    "load_config",
    "load_prompt",
    "register_formatter",
    "register_prompt",
    "tool",
    "usage_history",
]


def test_all_is_pinned_and_sorted():
    assert orchlab.__all__ == PUBLIC
    assert sorted(orchlab.__all__) == orchlab.__all__


def test_every_public_name_resolves():
    for name in PUBLIC:
        assert getattr(orchlab, name) is not None, name
    assert orchlab.Strategy("local_first") is orchlab.Strategy.LOCAL_FIRST
    assert issubclass(orchlab.AllAttemptsFailedError, ExceptionGroup)
    assert issubclass(orchlab.RateLimitError, orchlab.ProviderError)
    assert orchlab.Provider.__module__ == "orchlab.providers.base"
    assert callable(orchlab.load_ipython_extension)
    assert orchlab.ToolCall.from_text("c1", "f", '{"a": 1}').arguments == {"a": 1}

    def double(x: int) -> int:
        return 2 * x

    assert orchlab.tool(double).tool.name == "double" and orchlab.tool(double)(4) == 8


def test_unknown_attribute_is_an_attribute_error():
    try:
        orchlab.does_not_exist  # noqa: B018
    except AttributeError as exc:
        assert "does_not_exist" in str(exc)
    else:
        raise AssertionError("orchlab.does_not_exist resolved")


def test_import_orchlab_loads_nothing_heavy():
    code = (
        "import sys, orchlab\n"
        "heavy = ['pydantic', 'yaml', 'openai', 'anthropic', 'google.genai', 'ollama', 'llama_cpp',"
        " 'mlflow', 'pandas', 'numpy', 'matplotlib', 'ipywidgets', 'IPython', 'tiktoken',"
        " 'genai_prices', 'jinja2', 'httpx']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
