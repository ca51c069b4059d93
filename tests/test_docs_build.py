"""The docs site: ``mkdocs build --strict`` passes (no broken link, anchor or reference), and the
generated reference pages cover every config key, every error class and every ``ORCH_*`` variable,
so a new one cannot be left out."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import orchlab
from orchlab import errors
from orchlab.config import schema

ROOT = Path(__file__).resolve().parent.parent


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once by ``mkdocs build --strict`` into a temp folder."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # the hook documents this checkout itself
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        problems = [line for line in done.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
        pytest.fail("mkdocs build --strict failed:\n" + "\n".join(problems or done.stderr.splitlines()[-30:]))
    return out


def _text(page: Path) -> str:
    return html.unescape(page.read_text(encoding="utf-8"))


def test_strict_build_renders_the_generated_pages(site: Path) -> None:
    config = _text(site / "reference" / "config" / "index.html")
    assert "roles.<role>.params.temperature" in config
    assert "generated: config-reference" not in config
    tree = _text(site / "reference" / "errors" / "index.html")
    assert "OutputValidationError" in tree
    assert "generated: error-tree" not in tree
    assert "(no docstring)" not in tree
    api = _text(site / "reference" / "api" / "index.html")
    missing = [name for name in orchlab.__all__ if f'id="orchlab.{name}"' not in api]
    assert missing == []


def _schema_models() -> list[type]:
    return [
        obj
        for obj in vars(schema).values()
        if isinstance(obj, type)
        and issubclass(obj, schema.BaseModel)
        and obj.__module__ == schema.__name__
        and obj is not schema._Strict
    ]


def test_config_reference_has_every_model_and_key() -> None:
    hooks = _hooks()
    keys = {key.path: key for s in hooks.config_sections() for key in s.keys}
    page = hooks.config_reference()
    documented = set(keys)
    for model in _schema_models():
        for name in model.model_fields:
            rows = [p for p in documented if p == name or p.endswith("." + name)]
            assert rows, f"{model.__name__}.{name} is not in the configuration reference"
    # every model gets its section, and each key its row
    assert len(hooks.config_sections()) == len(_schema_models())
    for path in documented:
        assert f"| `{path}` |" in page
    temperature = keys["roles.<role>.params.temperature"]
    assert (temperature.type, temperature.default) == ("number \\| `null` (≥ 0, ≤ 2)", "`null`")
    assert temperature.description == "sampling temperature"
    timeout = keys["providers.<provider>.timeout_s"]
    assert timeout.default == "`60.0`"
    project = keys["project"]
    assert project.default == "**required**"


def test_every_config_key_has_a_description() -> None:
    empty = [key.path for s in _hooks().config_sections() for key in s.keys if not key.description]
    assert empty == []


def test_error_reference_has_every_class_with_its_gateway_status() -> None:
    hooks = _hooks()
    tree = hooks.error_tree()
    classes = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    ]
    for cls in classes:
        assert f"**`{cls.__name__}`**" in tree
    assert "(no docstring)" not in tree
    assert hooks.http_answer(errors.RateLimitError) == "HTTP 429 `rate_limit_exceeded`"
    assert hooks.http_answer(errors.UnknownRoleError) == "HTTP 404 `model_not_found`"
    assert hooks.http_answer(errors.ContextWindowError) == "HTTP 413 `context_length_exceeded`"
    assert hooks.http_answer(errors.ProviderTimeoutError) == "HTTP 504 `upstream_timeout`"
    assert hooks.http_answer(errors.ConfigError) == "HTTP 500"
    # nesting follows the class tree: UnknownCostError is indented under BudgetExceededError
    nested = r"^    - \*\*`BudgetExceededError`\*\*.*\n        - \*\*`UnknownCostError`\*\*"
    assert re.search(nested, tree, re.M)


def test_environment_page_names_every_variable_the_code_reads() -> None:
    page = (ROOT / "docs" / "reference" / "environment.md").read_text(encoding="utf-8")
    names: set[str] = set()
    for source in (ROOT / "orchlab").rglob("*.py"):
        names |= set(re.findall(r"\bORCH(?:LAB)?_[A-Z0-9_]*[A-Z0-9]\b", source.read_text(encoding="utf-8")))
    assert "ORCH_TRACKING_URI" in names  # the scan works
    missing = []
    for name in sorted(names):
        if name.startswith("ORCH_AUTH_"):  # ORCH_AUTH_<PROFILE>_API_KEY, and its examples
            name = "ORCH_AUTH_<PROFILE>_API_KEY"
        if f"`{name}`" not in page:
            missing.append(name)
    assert missing == []
