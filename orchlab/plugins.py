"""One plugin registry, used by the provider kinds (`orchlab.providers.registry`) and the logic ids
(`orchlab.config.logic_ids`): names built in (never replaced; an installed plugin naming one is
ignored), added in this process, and installed (the entry points of one group, read once, the first
time a name is neither built in nor added: never at ``import orchlab``). A name two distributions
claim is a clash: known, but using it raises a `PluginError` naming both. Importing and checking
a plugin's ``module:Class`` is the user's business. Nothing of orchlab above `orchlab.errors` is
imported here, so the lowest layer can use it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from orchlab.errors import PluginError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Plugin:
    """An installed plugin: its name, the ``module:Class`` it names, its distribution, its group."""

    name: str
    target: str
    distribution: str | None = None
    group: str = ""

    @property
    def origin(self) -> str:
        where = f" of {self.distribution}" if self.distribution else ""
        return f"the entry point {self.name} = {self.target}{where} (group {self.group})"


def close_matches(word: str, choices: Iterable[str]) -> list[str]:
    """Up to three of ``choices`` close to ``word``, the closest first (difflib's, cutoff 0.5)."""
    import difflib  # only once a name is wrong: not on every load or call

    return difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'a', 'b'?"`` for the choices close to ``word``, else ``""``."""
    close = close_matches(word, choices)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


class PluginRegistry(Generic[T]):
    """The names of one entry-point ``group``: ``builtins`` (listed first, in their order), added
    ones (values ``T``, or a ``"module:Class"`` the user imports on first use) and installed ones.
    ``reserved``: further names nothing may take, not listed. ``noun`` names one in a clash
    ("claim this kind"), ``builtin_noun`` in a refusal ("a built-in logic"); ``log`` gets the
    warning for an installed plugin that names a built-in."""

    def __init__(
        self,
        group: str,
        builtins: Collection[str],
        *,
        noun: str,
        builtin_noun: str | None = None,
        reserved: Collection[str] = (),
        log: logging.Logger | None = None,
    ) -> None:
        self.group = group
        self.builtins = tuple(builtins)
        self._taken = frozenset((*builtins, *reserved))
        self.noun = noun
        self.builtin_noun = builtin_noun or noun
        self._log = log or logging.getLogger(__name__)
        self._lock = threading.Lock()
        self.added: dict[str, T | str] = {}
        self._installed: dict[str, Plugin] | None = None  # read on first need
        self._clashes: dict[str, list[Plugin]] = {}
        self._loaded: dict[str, T] = {}  # name -> its value, once imported and checked

    def refuse_builtin(self, name: str, call: str) -> None:
        """Raise the `PluginError` of ``call`` (``"register('x', ...)"``) when ``name`` is built in."""
        if name in self._taken:
            raise PluginError(
                f"{call}: {name!r} is a built-in {self.builtin_noun} and cannot be replaced", kind=name
            )

    def add(self, name: str, value: T | str) -> None:
        """Add (or replace) ``name``; the caller has checked both (`refuse_builtin`)."""
        with self._lock:
            self.added[name] = value
            self._loaded.pop(name, None)

    def remove(self, name: str) -> None:
        """Remove an added name (nothing happens when there is none)."""
        with self._lock:
            self.added.pop(name, None)
            self._loaded.pop(name, None)

    def installed(self, *, refresh: bool = False) -> Mapping[str, Plugin]:
        """The installed plugins by name, clashes left out. Read once; ``refresh=True`` reads the
        entry points again (after a ``pip install`` in a running notebook) and forgets what was loaded."""
        installed = self._installed
        if installed is not None and not refresh:
            return installed
        with self._lock:
            if self._installed is None or refresh:
                installed, self._clashes = self._read()
                self._installed = installed  # last: a reader that sees it sees its clashes
                if refresh:
                    self._loaded.clear()
            return self._installed

    def _read(self) -> tuple[dict[str, Plugin], dict[str, list[Plugin]]]:
        from importlib.metadata import entry_points  # scans the installed distributions: only when needed

        found: dict[str, list[Plugin]] = {}
        for ep in entry_points(group=self.group):
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else None
            plugin = Plugin(ep.name, ep.value, dist, self.group)
            if ep.name in self._taken:
                self._log.warning(
                    "ignored %s: %r is a built-in %s", plugin.origin, ep.name, self.builtin_noun
                )
                continue
            same = found.setdefault(ep.name, [])
            if plugin not in same:  # a distribution seen twice on sys.path is one plugin
                same.append(plugin)
        installed = {name: plugins[0] for name, plugins in found.items() if len(plugins) == 1}
        clashes = {
            name: sorted(plugins, key=lambda p: (p.distribution or "", p.target))
            for name, plugins in found.items()
            if len(plugins) > 1
        }
        return installed, clashes

    def is_installed(self, name: str) -> bool:
        """``name`` is an installed plugin's (a clash included: it is known, using it is refused)."""
        return name in self.installed() or name in self._clashes

    def check_clash(self, name: str, where: str, *, provider: str | None = None) -> None:
        """Raise the `PluginError` naming both plugins when two claim ``name`` (``provider``: the
        config entry that asks, when there is one)."""
        self.installed()
        if name in self._clashes:
            named = "; ".join(p.origin for p in self._clashes[name])
            raise PluginError(
                f"{where}: two installed plugins claim this {self.noun} ({named}): uninstall one of them",
                kind=name,
                provider=provider,
            )

    def is_known(self, name: str) -> bool:
        """Built in, added or installed (entry points are read only when it is neither of the first two)."""
        return name in self.builtins or name in self.added or self.is_installed(name)

    def known(self) -> list[str]:
        """Every name: the built-ins in their order, then the added and installed ones, sorted."""
        others = {*self.added, *self.installed(), *self._clashes} - set(self.builtins)
        return [*self.builtins, *sorted(others)]

    def loaded(self, name: str) -> T | None:
        """The value `remember` kept for ``name``, if any."""
        return self._loaded.get(name)

    def remember(self, name: str, value: T) -> T:
        """Keep ``value`` (imported and checked) for ``name`` until it is removed or refreshed."""
        self._loaded[name] = value
        return value
