"""Files of the repository itself: one source for the embedded default config, a LICENSE that
matches the package's metadata."""

from __future__ import annotations

import tomllib
from pathlib import Path

from orchlab.config.loader import default_config_path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "venv", "node_modules", "site", "build", "dist", "__pycache__"}


def repo_files(*suffixes: str) -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if any(p in SKIP or p.startswith(".") for p in parts[:-1]) or path.suffix not in suffixes:
            continue
        if path.is_file():
            found.append(path)
    return found


def test_the_embedded_default_config_has_one_copy() -> None:
    default = default_config_path()
    assert default == ROOT / "orchlab" / "data" / "local.yaml"  # the package's copy: a wheel ships it
    text = default.read_bytes()
    copies = [
        p.relative_to(ROOT).as_posix()
        for p in repo_files(".yaml", ".yml")
        if p != default and p.read_bytes() == text
    ]
    assert copies == []
    assert not (ROOT / "configs" / "local.yaml").exists()


def test_the_license_is_the_mit_license_pyproject_names() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert meta["license"] == {"text": "MIT"}
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License\n\nCopyright (c) 2026 the orchlab authors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in license_text


def test_the_version_is_one_number_in_the_package_the_metadata_and_the_changelog() -> None:
    import re

    import orchlab

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, re.M)
    assert orchlab.__version__ == meta["version"] == released[0]


def test_every_example_config_loads_and_names_only_its_own_providers() -> None:
    from orchlab.config.loader import load_config

    examples = sorted((ROOT / "configs").glob("*.yaml"))
    assert [p.name for p in examples] == ["cloud.yaml", "team.yaml"]
    for path in examples:
        config = load_config(path)  # every schema and reference check a client's build runs
        used = {role.provider for role in config.roles.values()}
        assert used <= set(config.providers), path.name
        assert {"llm.preprocess", "llm.inference", "llm.embedding"} <= set(config.roles), path.name
