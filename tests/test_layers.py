"""The import direction of the package: lower layers never import upward, not even lazily or
under TYPE_CHECKING (they receive narrow callables instead of the client)."""

from __future__ import annotations

import ast
from pathlib import Path

import orchlab

ROOT = Path(orchlab.__file__).parent
LOWER = ("orchlab.providers", "orchlab.config", "orchlab.catalog", "orchlab.budgets", "orchlab.pipeline")
UPPER = ("orchlab.orchestrator", "orchlab.strategies", "orchlab.logics")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports: module level, inside functions, under TYPE_CHECKING."""
    found: list[tuple[int, str]] = []
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_imports_are_walked_everywhere(tmp_path: Path) -> None:
    # the walker itself: a lazy import and a TYPE_CHECKING one are both seen
    sample = ROOT / "pipeline" / "dispatch.py"
    names = {name for _, name in imports(sample)}
    assert "orchlab.catalog.tokens" in names  # module level
    assert "orchlab.types" in names  # a function-level import
    assert "orchlab.pipeline.settle" in names  # under TYPE_CHECKING


def test_lower_layers_never_import_the_orchestrator_or_a_logic() -> None:
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        if not within(name, LOWER):
            continue
        for line, imported in imports(path):
            if within(imported, UPPER):
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} imports {imported}")
    assert upward == []


SERVE = ("orchlab.serve",)
SERVE_USERS = ("orchlab.cli", "orchlab.__main__")


def test_only_the_cli_imports_the_gateway() -> None:
    # orchlab.serve is the top layer (it imports the orchestrator); the library never needs it
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        if within(name, SERVE) or within(name, SERVE_USERS):
            continue
        for line, imported in imports(path):
            if within(imported, SERVE):
                found.append(f"{path.relative_to(ROOT.parent)}:{line} imports {imported}")
    assert found == []
    cli = {name for _, name in imports(ROOT / "cli" / "serve.py")}
    assert "orchlab.serve.app" in cli  # the walker sees the CLI's lazy import of the gateway


NOTEBOOK = ("orchlab.notebook", "orchlab.widgets")


def test_the_gateway_never_imports_the_notebook_layer() -> None:
    # the gateway serves the library; the notebook layer (magics, widgets) sits beside it, for
    # Jupyter: what both need (formats, rendering) lives below them (orchlab.output, ...)
    found = []
    for path in sorted((ROOT / "serve").rglob("*.py")):
        for line, imported in imports(path):
            if within(imported, NOTEBOOK):
                found.append(f"{path.relative_to(ROOT.parent)}:{line} imports {imported}")
    assert found == []
    assert "orchlab.output.formats" in {name for _, name in imports(ROOT / "serve" / "chat_routes.py")}
