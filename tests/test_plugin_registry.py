"""The generic plugin registry (`orchlab.plugins`) on its own: built-in, added and installed names,
installed ones read from real ``importlib.metadata`` entry points (distribution metadata written to
a directory on ``sys.path``) once, clashes refused naming both plugins, and "did you mean"."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchlab.errors import PluginError
from orchlab.plugins import Plugin, PluginRegistry, did_you_mean
from tests.test_layers import ROOT, imports

GROUP = "orchlab.test_plugin_registry"
LOG = logging.getLogger("tests.test_plugin_registry")


def make() -> PluginRegistry[type]:
    return PluginRegistry(
        GROUP, ["single", "fallback"], noun="id", builtin_noun="logic", reserved=("race",), log=LOG
    )


@pytest.fixture
def dists(tmp_path: Path) -> Iterator[Callable[[str, str], None]]:
    """``add(distribution, "name = module:Class")``: a distribution's metadata (no code) on sys.path,
    declaring one entry point of `GROUP`."""
    sys.path.insert(0, str(tmp_path))

    def add(name: str, line: str) -> None:
        info = tmp_path / f"{name.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[{GROUP}]\n{line}\n")
        importlib.invalidate_caches()

    yield add
    sys.path.remove(str(tmp_path))
    importlib.invalidate_caches()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every read of `GROUP`'s entry points, through the real ``importlib.metadata.entry_points``."""
    seen: list[str] = []
    real = importlib.metadata.entry_points

    def counting(**kwargs: Any) -> Any:
        if kwargs.get("group") == GROUP:
            seen.append(kwargs["group"])
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", counting)
    return seen


def test_entry_points_are_read_once_and_only_for_a_name_neither_built_in_nor_added(
    dists: Callable[[str, str], None], reads: list[str]
) -> None:
    dists("pkg-one", "shortest = pkg_one:Shortest")
    registry = make()
    registry.add("longest", int)
    assert (registry.is_known("single"), registry.is_known("longest")) == (True, True)
    assert reads == []  # a built-in and an added name need no read
    assert registry.is_known("shortest") and not registry.is_known("nothing")
    assert registry.known() == ["single", "fallback", "longest", "shortest"]
    assert registry.installed()["shortest"] == Plugin("shortest", "pkg_one:Shortest", "pkg-one 1.0", GROUP)
    assert reads == [GROUP]
    # a plugin installed after the read is seen only once the entry points are read again
    dists("pkg-two", "newest = pkg_two:Newest")
    assert not registry.is_known("newest")
    assert sorted(registry.installed(refresh=True)) == ["newest", "shortest"]
    assert registry.is_known("newest") and reads == [GROUP, GROUP]


def test_two_distributions_claiming_one_name_are_a_clash_naming_both(
    dists: Callable[[str, str], None],
) -> None:
    dists("pkg-b", "twice = pkg_b:Twice")
    dists("pkg-a", "twice = pkg_a:Twice")
    dists("pkg-c", "once = pkg_c:Once")
    registry = make()
    assert sorted(registry.installed()) == ["once"]  # the clash is not an installed plugin
    assert registry.is_known("twice") and "twice" in registry.known()
    registry.check_clash("once", "logic 'once'")  # one claim: nothing to refuse
    with pytest.raises(PluginError) as caught:
        registry.check_clash("twice", "logic 'twice'", provider="box")
    assert str(caught.value) == (
        "logic 'twice': two installed plugins claim this id (the entry point twice = pkg_a:Twice of "
        f"pkg-a 1.0 (group {GROUP}); the entry point twice = pkg_b:Twice of pkg-b 1.0 (group {GROUP})): "
        "uninstall one of them"
    )
    assert (caught.value.kind, caught.value.provider) == ("twice", "box")


def test_a_plugin_naming_a_built_in_or_reserved_name_is_ignored_with_a_warning(
    dists: Callable[[str, str], None], caplog: pytest.LogCaptureFixture
) -> None:
    dists("evil", "single = evil:Single")
    dists("sly", "race = sly:Race")
    registry = make()
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert dict(registry.installed()) == {}
    assert sorted((r.name, r.getMessage()) for r in caplog.records) == [  # any distribution order
        (
            LOG.name,
            f"ignored the entry point race = sly:Race of sly 1.0 (group {GROUP}): 'race' is a built-in logic",
        ),
        (
            LOG.name,
            f"ignored the entry point single = evil:Single of evil 1.0 (group {GROUP}): "
            "'single' is a built-in logic",
        ),
    ]
    assert registry.known() == ["single", "fallback"]  # a reserved name is taken but not listed
    assert not registry.is_known("race")


def test_added_names_and_remembered_values(dists: Callable[[str, str], None]) -> None:
    dists("pkg-one", "shortest = pkg_one:Shortest")
    registry = make()
    for taken in ("single", "race"):
        with pytest.raises(PluginError) as caught:
            registry.refuse_builtin(taken, f"register_logic({taken!r}, ...)")
        assert str(caught.value) == (
            f"register_logic({taken!r}, ...): {taken!r} is a built-in logic and cannot be replaced"
        )
        assert caught.value.kind == taken
    registry.refuse_builtin("shortest", "register_logic('shortest', ...)")  # an installed name may be taken
    registry.add("shortest", str)
    assert registry.added == {"shortest": str} and registry.known().count("shortest") == 1
    registry.remove("shortest")
    registry.remove("shortest")  # nothing to remove: nothing happens
    assert registry.added == {} and registry.is_known("shortest")  # the installed one again
    assert registry.remember("shortest", int) is int and registry.loaded("shortest") is int
    registry.add("shortest", str)
    assert registry.loaded("shortest") is None  # an added value replaces what was loaded
    registry.remember("other", float)
    registry.installed(refresh=True)
    assert registry.loaded("other") is None  # a refresh forgets what was loaded


def test_did_you_mean_and_the_plugin_origin() -> None:
    assert did_you_mean("longst", ["single", "longest", "shortest"]) == "; did you mean 'longest'?"
    assert did_you_mean("llama", ["llamacpp", "llama_native", "ollama"]) == (
        "; did you mean 'ollama', 'llamacpp', 'llama_native'?"
    )
    assert did_you_mean("zzz", ["single", "longest"]) == ""
    assert Plugin("x", "m:C", None, "g").origin == "the entry point x = m:C (group g)"


def test_the_registry_imports_nothing_of_orchlab_but_the_errors() -> None:
    # so the lowest layer (providers, config) can use it
    ours = {name for _, name in imports(ROOT / "plugins.py") if name.startswith("orchlab")}
    assert ours == {"orchlab.errors", "orchlab.errors.PluginError"}
