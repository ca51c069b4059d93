"""Adapter kinds: which `Provider` class a provider entry's ``type`` names.

A kind is looked up in this order, the first match wins:

1. the built-in kinds (`BUILTIN_KINDS`), which cannot be replaced;
2. kinds added in this process with `register` (tests, notebooks);
3. installed plugins: the entry points of the group ``orchlab.providers``
   (``[project.entry-points."orchlab.providers"] echo = "my_pkg.echo:EchoProvider"``), read once,
   the first time a kind is not found among the first two (never at ``import orchlab``);
4. ``type: "package.module:Class"`` in the YAML.

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
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from orchlab.errors import MissingDependencyError, PluginError

if TYPE_CHECKING:
    from orchlab.providers.base import Provider

log = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class Plugin:
    """An installed provider plugin: its kind, the ``module:Class`` it names, and where it comes from."""

    kind: str
    target: str
    distribution: str | None = None

    @property
    def origin(self) -> str:
        where = f" of {self.distribution}" if self.distribution else ""
        return f"the entry point {self.kind} = {self.target}{where} (group {ENTRY_POINT_GROUP})"


_lock = threading.Lock()
_registered: dict[str, str | type[Provider]] = {}
_installed: dict[str, Plugin] | None = None  # read on first need
_clashes: dict[str, list[Plugin]] = {}  # a kind installed by two distributions: refused
_classes: dict[str, type[Provider]] = {}  # kind -> its class, once imported and checked


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
    if kind in BUILTIN_KINDS:
        raise PluginError(
            f"register({kind!r}, ...): {kind!r} is a built-in kind and cannot be replaced", kind=kind
        )
    if isinstance(adapter, str):
        if not is_class_path(adapter):
            raise PluginError(
                f"register({kind!r}, {adapter!r}): expected a Provider subclass or 'package.module:Class'",
                kind=kind,
            )
    elif not (isinstance(adapter, type) and issubclass(adapter, Provider)):
        raise PluginError(
            f"register({kind!r}, {adapter!r}): expected a Provider subclass or 'package.module:Class'",
            kind=kind,
        )
    with _lock:
        _registered[kind] = adapter
        _classes.pop(kind, None)


def unregister(kind: str) -> None:
    """Remove a kind added with `register` (nothing happens when there is none)."""
    with _lock:
        _registered.pop(kind, None)
        _classes.pop(kind, None)


def installed_kinds(*, refresh: bool = False) -> dict[str, Plugin]:
    """The provider plugins installed in this environment, by kind. Read once; ``refresh=True``
    reads them again (after a ``pip install`` in a running notebook)."""
    return dict(_plugins(refresh=refresh))


def _plugins(*, refresh: bool = False) -> Mapping[str, Plugin]:
    global _installed
    installed = _installed
    if installed is not None and not refresh:
        return installed
    with _lock:
        if _installed is None or refresh:
            _installed, clashes = _read_entry_points()
            _clashes.clear()
            _clashes.update(clashes)
            if refresh:
                _classes.clear()
        return _installed


def _read_entry_points() -> tuple[dict[str, Plugin], dict[str, list[Plugin]]]:
    from importlib.metadata import entry_points  # scans the installed distributions: only when needed

    found: dict[str, list[Plugin]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else None
        plugin = Plugin(ep.name, ep.value, dist)
        if ep.name in BUILTIN_KINDS:
            log.warning("ignored %s: %r is a built-in kind", plugin.origin, ep.name)
            continue
        same = found.setdefault(ep.name, [])
        if plugin not in same:  # a distribution seen twice on sys.path is one plugin
            same.append(plugin)
    installed = {kind: plugins[0] for kind, plugins in found.items() if len(plugins) == 1}
    clashes = {
        kind: sorted(plugins, key=lambda p: (p.distribution or "", p.target))
        for kind, plugins in found.items()
        if len(plugins) > 1
    }
    return installed, clashes


def known_kinds() -> list[str]:
    """Every kind a ``type:`` can name here (built-in, registered, installed), sorted."""
    return sorted({*BUILTIN_KINDS, *_registered, *_plugins(), *_clashes})


def kind_of(name: str, declared_type: str | None) -> str | None:
    """The adapter kind of a provider entry: its ``type``, else its key if that is a kind (None: not
    a kind here). A ``"module:Class"`` type is its own kind; nothing is imported here."""
    kind = declared_type or name
    if kind in BUILTIN_KINDS or kind in _registered:
        return kind
    if declared_type is not None and is_class_path(declared_type):
        return kind
    if kind in _plugins() or kind in _clashes:
        return kind
    return None


def provider_class(kind: str, *, provider: str | None = None) -> type[Provider]:
    """The class of ``kind``, imported and checked on first use. ``provider``: the entry that asks,
    named in the `PluginError` when the class cannot be had."""
    cls = _classes.get(kind)
    if cls is not None:
        return cls
    where = f"providers.{provider}: type {kind!r}" if provider else f"type {kind!r}"
    origin = ""
    if kind in BUILTIN_KINDS:
        target: str | type[Provider] = BUILTIN_KINDS[kind]
    elif kind in _registered:
        target = _registered[kind]
        origin = " (added with registry.register)"
    elif is_class_path(kind):
        target = kind
    else:
        installed = _plugins()
        if kind in _clashes:
            named = "; ".join(p.origin for p in _clashes[kind])
            raise PluginError(
                f"{where}: two installed plugins claim this kind ({named}): uninstall one of them",
                provider=provider,
                kind=kind,
            )
        if kind not in installed:
            raise PluginError(
                f"{where}: no such kind; known: {', '.join(known_kinds())}, or 'package.module:Class'",
                provider=provider,
                kind=kind,
            )
        target = installed[kind].target
        origin = f" ({installed[kind].origin})"
    cls = target if isinstance(target, type) else _load(target, f"{where}{origin}", provider, kind)
    _check(cls, f"{where}{origin}", provider, kind)
    with _lock:
        _classes[kind] = cls
    return cls


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
        plugin = _plugins().get(kind)
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
