"""Every adapter kind honours the one provider interface, and importing it loads no SDK."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from orchlab.providers.base import Provider
from orchlab.providers.registry import BUILTIN_KINDS, provider_class

KINDS = sorted(BUILTIN_KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_kind_implements_the_interface(kind):
    cls = provider_class(kind)
    assert issubclass(cls, Provider)
    assert cls.kind == kind
    assert not inspect.isabstract(cls), f"{cls.__name__} leaves abstract methods"
    for name in ("complete", "list_models", "is_available", "aclose"):
        assert inspect.iscoroutinefunction(getattr(cls, name)), f"{cls.__name__}.{name}"
    # every adapter streams (the base default refuses; adapters must override it)
    assert cls.stream is not Provider.stream, f"{cls.__name__} does not implement stream()"
    assert inspect.isasyncgenfunction(cls.stream), f"{cls.__name__}.stream is not an async generator"


def test_importing_every_adapter_loads_no_sdk():
    code = (
        "import sys\n"
        "from orchlab.providers.registry import BUILTIN_KINDS, provider_class\n"
        "[provider_class(k) for k in BUILTIN_KINDS]\n"
        "heavy = ['openai', 'anthropic', 'google.genai', 'ollama', 'llama_cpp', 'mlflow',"
        " 'pandas', 'tiktoken', 'genai_prices', 'ipywidgets', 'matplotlib']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
