"""Adapter kinds: which `Provider` class a provider entry's ``type`` names.

A kind is looked up in this order, the first match wins:

1. the built-in kinds (`BUILTIN_KINDS`), which cannot be replaced;
2. kinds added in this process with `register` (tests, notebooks);
3. installed plugins: the entry points of the group ``orchlab.providers``
   (``[project.entry-points."orchlab.providers"] echo = "my_pkg.echo:EchoProvider"``), read once,
   the first time a kind is not found among the first two (never at ``import orchlab``);
4. ``type: "package.module:Class"`` in the YAML.

The first three are an `orchlab.plugins.PluginRegistry`; this module imports and checks the classes.

A class is imported on first use (a call, a price, a check of ``is_local``), not when the config is
loaded: an entry whose plugin cannot be imported fails with a `PluginError` naming the entry, the
type and what is wrong, and the other entries of the config keep working.

Example (a notebook)::

    from orchlab.providers import registry
    registry.register("echo", EchoProvider)        # or "my_pkg.echo:EchoProvider"
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from orchlab.errors import MissingDependencyError, PluginError
from orchlab.plugins import Plugin, PluginRegistry

if TYPE_CHECKING:
    from orchlab.providers.base import Provider

ENTRY_POINT_GROUP = "orchlab.providers"

# kind -> "module:Class"; OpenAI-compatible services are thin subclasses in openai.py.
BUILTIN_KINDS: Mapping[str, str] = MappingProxyType(
    {
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
)

# adapter module -> the extra (pyproject's optional-dependencies) that installs what it imports
EXTRAS: Mapping[str, str] = MappingProxyType(
    {
        "orchlab.providers.llamacpp": "local",
        "orchlab.providers.openai": "openai",
        "orchlab.providers.anthropic": "anthropic",
        "orchlab.providers.gemini": "gemini",
        "orchlab.providers.ollama": "ollama",
    }
)

_CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_KIND_NAME = re.compile(r"[A-Za-z_][\w.-]*")

_kinds: PluginRegistry[type[Provider]] = PluginRegistry(
    ENTRY_POINT_GROUP, BUILTIN_KINDS, noun="kind", log=logging.getLogger(__name__)
)


def is_class_path(text: str) -> bool:
    """``text`` has the shape of ``"package.module:Class"``."""
    return _CLASS_PATH.fullmatch(text) is not None


def register(kind: str, adapter: str | type[Provider]) -> None:
    """Add (or replace) a kind in this process: a `Provider` subclass, or its ``"module:Class"``
    (imported on first use). A built-in kind cannot be replaced; an installed plugin's can."""
    from orchlab.providers.base import Provider

    if not isinstance(kind, str) or _KIND_NAME.fullmatch(kind) is None:
        raise PluginError(
            f"register({kind!r}, ...): a kind is a name such as 'echo' (letters, digits, _ . -)",
            kind=str(kind),
        )
    _kinds.refuse_builtin(kind, f"register({kind!r}, ...)")
    if isinstance(adapter, str):
        fits = is_class_path(adapter)
    else:
        fits = isinstance(adapter, type) and issubclass(adapter, Provider)
    if not fits:
        raise PluginError(
            f"register({kind!r}, {adapter!r}): expected a Provider subclass or 'package.module:Class'",
            kind=kind,
        )
    _kinds.add(kind, adapter)


def unregister(kind: str) -> None:
    """Remove a kind added with `register` (nothing happens when there is none)."""
    _kinds.remove(kind)


def installed_kinds(*, refresh: bool = False) -> dict[str, Plugin]:
    """The provider plugins installed in this environment, by kind. Read once; ``refresh=True``
    reads them again (after a ``pip install`` in a running notebook)."""
    return dict(_kinds.installed(refresh=refresh))


def known_kinds() -> list[str]:
    """Every kind a ``type:`` can name here (built-in, registered, installed), sorted."""
    return sorted(_kinds.known())


def kind_of(name: str, declared_type: str | None) -> str | None:
    """The adapter kind of a provider entry: its ``type``, else its key if that is a kind (None: not
    a kind here). A ``"module:Class"`` type is its own kind; nothing is imported here."""
    kind = declared_type or name
    if kind in BUILTIN_KINDS or kind in _kinds.added:
        return kind
    if declared_type is not None and is_class_path(declared_type):
        return kind
    return kind if _kinds.is_installed(kind) else None


def provider_class(kind: str, *, provider: str | None = None) -> type[Provider]:
    """The class of ``kind``, imported and checked on first use. ``provider``: the entry that asks,
    named in the `PluginError` when the class cannot be had."""
    cls = _kinds.loaded(kind)
    if cls is not None:
        return cls
    where = f"providers.{provider}: type {kind!r}" if provider else f"type {kind!r}"
    origin = ""
    if kind in BUILTIN_KINDS:
        target: str | type[Provider] = BUILTIN_KINDS[kind]
    elif kind in _kinds.added:
        target = _kinds.added[kind]
        origin = " (added with registry.register)"
    elif is_class_path(kind):
        target = kind
    else:
        _kinds.check_clash(kind, where, provider=provider)
        plugin = _kinds.installed().get(kind)
        if plugin is None:
            raise PluginError(
                f"{where}: no such kind; known: {', '.join(known_kinds())}, or 'package.module:Class'",
                provider=provider,
                kind=kind,
            )
        target = plugin.target
        origin = f" ({plugin.origin})"
    cls = target if isinstance(target, type) else _load(target, f"{where}{origin}", provider, kind)
    _check(cls, f"{where}{origin}", provider, kind)
    return _kinds.remember(kind, cls)


def _load(target: str, where: str, provider: str | None, kind: str) -> type[Provider]:
    module_name, _, attr = target.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            why = f"no module named {exc.name!r} is installed (is the plugin's package installed here?)"
        else:
            why = f"importing {module_name!r} needs the {exc.name!r} module, which is not installed"
        raise PluginError(f"{where}: {why}", provider=provider, kind=kind) from exc
    except Exception as exc:
        raise PluginError(
            f"{where}: importing {module_name!r} failed: {type(exc).__name__}: {exc}",
            provider=provider,
            kind=kind,
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(
                f"{where}: {module_name!r} has no attribute {attr!r}" + _adapters_in(obj),
                provider=provider,
                kind=kind,
            )
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]  # checked by _check


def _check(cls: object, where: str, provider: str | None, kind: str) -> None:
    from orchlab.providers.base import Provider

    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        what = f"the class {cls.__qualname__}" if isinstance(cls, type) else f"a {type(cls).__name__}"
        raise PluginError(
            f"{where}: names {what}, which is not a subclass of orchlab.Provider",
            provider=provider,
            kind=kind,
        )
    if inspect.isabstract(cls):
        missing = ", ".join(f"{name}()" for name in sorted(cls.__abstractmethods__))
        raise PluginError(
            f"{where}: {cls.__qualname__} does not implement {missing}", provider=provider, kind=kind
        )


def _adapters_in(module: object) -> str:
    from orchlab.providers.base import Provider

    names = sorted(
        name
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, Provider) and value is not Provider
    )
    return f"; its Provider classes: {', '.join(names)}" if names else ""


def missing_dependency(
    provider: Provider, exc: ImportError, *, otherwise: str = ""
) -> MissingDependencyError:
    """The error for an adapter whose SDK import failed: the entry, its kind, the module and the
    extra to install. Adapters import their SDK lazily, so this happens at the first call;
    the provider boundary (`Provider`) routes every ``ImportError`` here. ``otherwise``: another way out."""
    module = exc.name
    extra = EXTRAS.get(type(provider).__module__)
    kind = provider.settings.kind
    what = f"the {module!r} module" if module else "a module"
    if isinstance(exc, ModuleNotFoundError):
        why = f"{what}, which is not installed"
    else:
        why = f"{what}, which cannot be imported ({exc})"
    if extra:
        fix = f"pip install 'orchlab[{extra}]'"
    else:
        plugin = _kinds.installed().get(kind)
        of = (
            f" (the dependencies of {plugin.distribution.split()[0]})"
            if plugin and plugin.distribution
            else ""
        )
        fix = f"install the package that provides {module!r}{of}"
    return MissingDependencyError(
        f"provider {provider.name!r} (type {kind}) needs {why}: {fix}{otherwise}",
        provider=provider.name,
        kind=kind,
        module=module,
        extra=extra,
    )
