"""The ``openai`` package's own API tests (from its source distribution) against ``orchlab serve``:
``scripts/openai_conformance.py`` runs them; here the suite runs the script and reads its report.

The sdist is fetched with pip the first time on a machine and kept under ``~/.cache/orchlab/``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "openai_conformance.py"


def _script_module():
    spec = importlib.util.spec_from_file_location("openai_conformance", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.server
@pytest.mark.slow
def test_the_openai_sdks_own_api_tests_pass_against_the_gateway(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = done.stdout[-6000:] + done.stderr[-3000:]
    assert report.is_file(), output
    summary = json.loads(report.read_text())
    outcomes = summary["outcomes"]
    assert (outcomes["failed"], outcomes["error"]) == ([], []), output
    assert outcomes["skipped"] == [], output
    assert done.returncode == 0, output

    # Both files ran: chat completions (sync, async, async over aiohttp) and models, every variant.
    passed = outcomes["passed"]
    chat = [t for t in passed if t.startswith("tests/api_resources/chat/test_completions.py::")]
    models = [t for t in passed if t.startswith("tests/api_resources/test_models.py::")]
    for params in ("[loose]", "[strict]"):
        chat_all = "TestCompletions::test_method_create_with_all_params_overload_2"
        assert f"tests/api_resources/chat/test_completions.py::{chat_all}{params}" in chat
        assert f"tests/api_resources/test_models.py::TestModels::test_method_retrieve{params}" in models
    assert any("TestAsyncCompletions::test_streaming_response_create_overload_2[aiohttp]" in t for t in chat)
    assert any("TestAsyncModels::test_method_list[aiohttp]" in t for t in models)

    # Only the listed endpoints were deselected, each with its reason, and nothing else.
    table = _script_module().DESELECTED
    for nodeid, reason in summary["deselected"].items():
        path, _, rest = nodeid.partition("::")
        name = rest.split("::")[1].split("[")[0]
        assert table[path][name] == reason
        assert "stored completions" in reason or "DELETE /v1/models" in reason
    assert {n.split("::")[-1].split("[")[0] for n in summary["deselected"]} == {
        name for names in table.values() for name in names
    }
    assert not set(passed) & set(summary["deselected"])
