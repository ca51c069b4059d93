"""The one place logics are registered: the built-ins (one `Logic` class per `Strategy` member),
then logics added with `register_logic`, then installed plugins (the entry points of the group
``orchlab.logics``: ``[project.entry-points."orchlab.logics"] shortest = "my_pkg:Shortest"``, read
once, the first time an id is not found among the first two, never at ``import orchlab``).

A logic id is what YAML ``strategy:``, a nested ``{strategy: ...}``, a URN and
``complete(strategy=...)`` name: a `Strategy` value or an added/installed id. ``logic_for(plan)``
builds the logic that answers ``plan``; nothing else picks a logic by name.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from orchlab.config import logic_ids
from orchlab.config.schema import Strategy
from orchlab.errors import InvalidRequestError, PluginError
from orchlab.strategies.auto import Auto
from orchlab.strategies.base import Answering, EnsembleMode, Nested
from orchlab.strategies.cascade import Cascade
from orchlab.strategies.ensemble import Ensemble
from orchlab.strategies.fallback import Fallback
from orchlab.strategies.logic import Logic
from orchlab.strategies.plan import Plan, split_options
from orchlab.strategies.race import Race
from orchlab.strategies.selection import CloudFirst, CloudOnly, LocalFirst, LocalOnly
from orchlab.strategies.single import Single

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = logic_ids.GROUP

LOGICS: Mapping[str, type[Logic]] = MappingProxyType(
    {
        cls.strategy: cls
        for cls in (
            Single,
            Fallback,
            LocalOnly,
            CloudOnly,
            LocalFirst,
            CloudFirst,
            Race,
            Cascade,
            Ensemble,
            Auto,
        )
    }
)
"""The built-in logics, by their `Strategy` (a `Strategy` is its value: ``LOGICS["parallel"]``)."""

_ID = re.compile(r"[a-z_][a-z0-9_.-]*")


@dataclass(frozen=True, slots=True)
class LogicPlugin:
    """An installed logic plugin: its id, the ``module:Class`` it names, and its distribution."""

    name: str
    target: str
    distribution: str | None = None

    @property
    def origin(self) -> str:
        where = f" of {self.distribution}" if self.distribution else ""
        return f"the entry point {self.name} = {self.target}{where} (group {ENTRY_POINT_GROUP})"


_lock = threading.Lock()
_registered: dict[str, type[Logic]] = {}
_installed: dict[str, LogicPlugin] | None = None  # read on first need
_clashes: dict[str, list[LogicPlugin]] = {}
_classes: dict[str, type[Logic]] = {}  # installed id -> its class, once imported and checked


def register_logic(name: str, cls: type[Logic]) -> None:
    """Add (or replace) a logic in this process under the id ``name`` (lower case: letters, digits,
    ``_ . -``). A built-in id cannot be taken; an installed plugin's can."""
    if not isinstance(name, str) or _ID.fullmatch(name) is None:
        raise PluginError(
            f"register_logic({name!r}, ...): a logic id is a lower-case name such as 'shortest' "
            "(letters, digits, _ . -)",
            kind=str(name),
        )
    if name in LOGICS or name == "race" or name == "role":
        raise PluginError(
            f"register_logic({name!r}, ...): {name!r} is a built-in logic and cannot be replaced",
            kind=name,
        )
    _check(cls, f"register_logic({name!r}, ...)", name)
    _name(cls, name)
    with _lock:
        _registered[name] = cls
        logic_ids.add(name)


def unregister_logic(name: str) -> None:
    """Remove a logic added with `register_logic` (nothing happens when there is none)."""
    with _lock:
        _registered.pop(name, None)
        logic_ids.discard(name)


def installed_logics(*, refresh: bool = False) -> dict[str, LogicPlugin]:
    """The logic plugins installed in this environment, by id. Read once; ``refresh=True`` reads
    them again."""
    return dict(_plugins(refresh=refresh))


def _plugins(*, refresh: bool = False) -> Mapping[str, LogicPlugin]:
    global _installed
    installed = _installed
    if installed is not None and not refresh:
        return installed
    with _lock:
        if _installed is None or refresh:
            _installed, clashes = _read_entry_points(refresh)
            _clashes.clear()
            _clashes.update(clashes)
            _classes.clear()
        return _installed


def _read_entry_points(
    refresh: bool = False,
) -> tuple[dict[str, LogicPlugin], dict[str, list[LogicPlugin]]]:
    found: dict[str, list[LogicPlugin]] = {}
    for ep in logic_ids.entry_points(refresh=refresh):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else None
        plugin = LogicPlugin(ep.name, ep.value, dist)
        if ep.name in LOGICS or ep.name in ("race", "role"):
            log.warning("ignored %s: %r is a built-in logic", plugin.origin, ep.name)
            continue
        same = found.setdefault(ep.name, [])
        if plugin not in same:
            same.append(plugin)
    installed = {name: plugins[0] for name, plugins in found.items() if len(plugins) == 1}
    clashes = {
        name: sorted(plugins, key=lambda p: (p.distribution or "", p.target))
        for name, plugins in found.items()
        if len(plugins) > 1
    }
    return installed, clashes


def known_logics() -> list[str]:
    """Every logic id: the built-ins (in `Strategy` order), then the added and installed ones, sorted."""
    extra = sorted({*_registered, *_plugins(), *_clashes} - set(LOGICS))
    return [s.value for s in Strategy] + extra


def logic_id(value: object, *, aliases: Mapping[str, Strategy] | None = None) -> Strategy | str:
    """``value`` as a logic id: a `Strategy` for a built-in, else an added or installed id.
    An unknown id raises `InvalidRequestError` with "did you mean" and the known ids."""
    if isinstance(value, Strategy):
        return value
    text = str(value)
    if aliases and text in aliases:
        return aliases[text]
    if text in LOGICS:
        return Strategy(text)
    if text in _registered or text in _plugins() or text in _clashes:
        return text
    known = [*(aliases or ()), *known_logics()]
    close = difflib.get_close_matches(text, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    installed = sorted(set(known_logics()) - set(LOGICS))
    raise InvalidRequestError(
        f"unknown logic {text!r}{hint} (built-in: {', '.join(s.value for s in Strategy)}; "
        f"installed: {', '.join(installed) or 'none'})",
        parameter="strategy",
    )


def logic_class(strategy: Strategy | str) -> type[Logic]:
    """The logic registered for ``strategy`` (a `Strategy`, its value, or an added/installed id)."""
    name = logic_id(strategy)
    builtin = LOGICS.get(name)
    if builtin is not None:
        return builtin
    if name in _registered:
        return _registered[name]
    cls = _classes.get(name)
    if cls is not None:
        return cls
    if name in _clashes:
        named = "; ".join(p.origin for p in _clashes[name])
        raise PluginError(
            f"logic {name!r}: two installed plugins claim this id ({named}): uninstall one of them",
            kind=name,
        )
    plugin = _plugins()[name]
    where = f"logic {name!r} ({plugin.origin})"
    module_name, _, attr = plugin.target.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise PluginError(f"{where}: cannot be loaded: {type(exc).__name__}: {exc}", kind=name) from exc
    _check(obj, where, name)
    assert isinstance(obj, type)
    _name(obj, name)
    with _lock:
        _classes[name] = obj
    return obj


def _check(cls: object, where: str, name: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Logic)):
        what = f"the class {cls.__qualname__}" if isinstance(cls, type) else f"a {type(cls).__name__}"
        raise PluginError(
            f"{where}: names {what}, which is not a subclass of orchlab.strategies.Logic", kind=name
        )


def _name(cls: type[Logic], name: str) -> None:
    """A plugin class that leaves ``strategy`` unset gets its id there (its errors name it)."""
    if getattr(cls, "strategy", None) is None:
        cls.strategy = name


def logic_for(plan: Plan) -> Logic:
    """The logic that answers ``plan``, built from it."""
    return logic_class(plan.strategy)(plan)


def nested_logic(cand: Nested, answering: Answering) -> Logic:
    """The logic of a candidate that is itself a logic (its options parsed by its ``from_params``)."""
    cls = logic_class(cand.strategy)
    options = cls.from_params(dict(cand.options))
    if "mode" in options:
        options["mode"] = EnsembleMode(options["mode"])
    known, extra = split_options(options)
    plan = Plan(
        role=cand.role,
        spec=None,
        strategy=cand.strategy,
        candidates=list(cand.candidates),
        base_params=cand.params,
        extra=extra,
        **known,
    )
    return cls(plan)
