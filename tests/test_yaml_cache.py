"""PyYAML's reading of a config file (and of the packaged models.yaml) kept as JSON for a later
process (orchlab.yaml_cache): the same config comes back, ${VAR} is expanded from the environment
of each read and never kept, errors still name their lines, and a cache that cannot be used only
means PyYAML reads the file. How much it saves a one-shot script: benchmarks/first_call.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchlab import yaml_cache
from orchlab.config import load_config, yaml_reader
from orchlab.config.document import read_document
from orchlab.errors import ConfigValidationError

ROOT = Path(__file__).resolve().parents[1]

CALL = """
import json, sys
import orchlab
client = orchlab.get_llm_client(sys.argv[1])
r = client.run("chat", [{"role": "user", "content": "hi"}])
print(json.dumps({"content": r.content, "yaml": "yaml" in sys.modules,
                  "config": client.config.model_dump(mode="json")}))
"""


def _kept_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "yaml").glob("*.json"))


def test_a_later_process_loads_the_same_config_and_calls_without_importing_pyyaml(
    openai_server, write_config, tmp_path
):
    path = write_config(
        f"""
        project: kept
        providers:
          openai: {{auth_profile: t, api_base: "{openai_server.base_url}"}}
        roles:
          chat: {{provider: openai, model: gpt-4o-mini, params: {{temperature: 0.3}}}}
        """
    )
    env = {**os.environ, "ORCH_AUTH_T_API_KEY": "sk-test-0000", "ORCH_CACHE_DIR": str(tmp_path / "c")}

    def call() -> dict:
        out = subprocess.run(
            [sys.executable, "-c", CALL, str(path)], capture_output=True, text=True, env=env, check=True
        )
        return json.loads(out.stdout)

    first, again = call(), call()
    assert first["yaml"] is True and again["yaml"] is False
    assert again["content"] == first["content"] == "echo: hi"
    assert again["config"] == first["config"] and first["config"]["project"] == "kept"
    assert len(_kept_files(tmp_path / "c")) == 2  # the config and models.yaml
    # a changed file is read again (and kept as well)
    path.write_text(path.read_text().replace("project: kept", "project: changed"))
    changed = call()
    assert changed["yaml"] is True and changed["config"]["project"] == "changed"


CONFIGS = [
    # anchors, aliases, merges (a merged key set again), lists, nested ${VAR}, $${ and a lone $
    """\
base: &base {auth_profile: p, api_base: "${BASE_URL:-http://localhost:1/v1}", timeout_s: 5}
project: "${PROJECT}"
providers:
  a: {<<: *base, timeout_s: 9}
  b: *base
roles:
  r:
    provider: a
    model: "m-$${literal}"
    fallbacks: ["b:${MODEL:-x}", "a:price$5"]
    params: {stop: ["${STOP}", "end"], temperature: 0.5}
""",
    # ${VAR} problems at different lines, one in a block scalar
    """\
project: p
providers:
  a: {api_base: "${UNSET_A}"}
roles:
  r:
    provider: a
    model: |
      ${1BAD}
""",
    # a ${VAR} reaching the top level as a string
    '"${PROJECT}"\n',
]


@pytest.mark.parametrize("text", CONFIGS)
def test_a_kept_reading_gives_the_same_document_as_pyyaml(text, monkeypatch):
    environ = {"PROJECT": "proj", "STOP": "halt", "MODEL": "mini"}
    fresh = read_document(text, source="c.yaml", environ=environ)
    read = []
    real = yaml_reader.read
    monkeypatch.setattr(yaml_reader, "read", lambda *a: read.append(a) or real(*a))
    written = read_document(text, source="c.yaml", environ=environ, cache=True)
    assert len(read) == 1
    kept = read_document(text, source="c.yaml", environ=environ, cache=True)
    assert len(read) == 1  # the second came from the cache
    for doc in (written, kept):
        assert (doc.data, doc.lines, doc.from_env, doc.problems) == (
            fresh.data,
            fresh.lines,
            fresh.from_env,
            fresh.problems,
        )


def test_var_values_are_expanded_on_every_read_and_never_kept(write_config, tmp_path, monkeypatch):
    path = write_config(
        """
        project: p
        providers:
          a: {type: openai, auth_profile: t, api_base: "${GATEWAY_URL}"}
        roles:
          r: {provider: a, model: m}
        """
    )
    monkeypatch.setenv("GATEWAY_URL", "http://first.internal.example:8001/v1")
    assert load_config(path).providers["a"].api_base == "http://first.internal.example:8001/v1"
    monkeypatch.setenv("GATEWAY_URL", "http://second.internal.example:8002/v1")
    assert load_config(path).providers["a"].api_base == "http://second.internal.example:8002/v1"
    (kept,) = [f for f in _kept_files(tmp_path / "orchlab-cache") if "GATEWAY_URL" in f.read_text()]
    assert "internal.example" not in kept.read_text() and "${GATEWAY_URL}" in kept.read_text()
    assert kept.stat().st_mode & 0o777 == 0o600


def test_a_config_error_names_its_line_when_the_reading_was_kept(write_config, monkeypatch):
    path = write_config(
        """
        project: p
        providers:
          a: {type: openai, timeout_s: -1}
        roles:
          r: {provider: a, model: "${UNSET_MODEL}"}
        """
    )
    errors = []
    for _ in range(2):
        monkeypatch.setenv("UNSET_MODEL", "m")
        with pytest.raises(ConfigValidationError) as info:
            load_config(path)
        errors.append(str(info.value))
        monkeypatch.delenv("UNSET_MODEL")
        with pytest.raises(ConfigValidationError) as info:
            load_config(path)
        errors.append(str(info.value))
    assert "providers.a.timeout_s (line 4)" in errors[0] and "roles.r.model (line 6)" in errors[1]
    assert "UNSET_MODEL" in errors[1] and errors[2:] == errors[:2]


def test_only_plain_readings_are_kept(tmp_path):
    dated = "project: p\nstarted: 2024-01-01\n"
    numbered = "project: p\n1: one\n"
    binary = "project: p\nblob: !!binary aGk=\n"
    plain = "project: p\nn: [1, 2.5, -0.0, .inf, true, null, 'x']\n"
    for text in (dated, numbered, binary, plain):
        read_document(text, source="c.yaml", cache=True)
    (only,) = _kept_files(tmp_path / "orchlab-cache")
    assert json.loads(only.read_text())["value"]["data"]["n"] == [1, 2.5, -0.0, float("inf"), True, None, "x"]


def test_off_keeps_nothing_and_reads_nothing(write_config, tmp_path, monkeypatch):
    path = write_config("project: p\n")
    load_config(path)
    assert len(_kept_files(tmp_path / "orchlab-cache")) == 1
    monkeypatch.setenv("ORCH_YAML_CACHE", "off")
    read = []
    real = yaml_reader.read
    monkeypatch.setattr(yaml_reader, "read", lambda *a: read.append(a) or real(*a))
    assert load_config(path).project == "p" and len(read) == 1
    write_config("project: q\n", name="other.yaml")
    assert load_config(tmp_path / "other.yaml").project == "q"
    assert len(_kept_files(tmp_path / "orchlab-cache")) == 1


def test_a_cache_that_cannot_be_written_or_read_only_means_pyyaml_reads(write_config, tmp_path, monkeypatch):
    path = write_config("project: p\n")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("ORCH_CACHE_DIR", str(blocked))
    assert load_config(path).project == "p" and load_config(path).project == "p"
    assert blocked.read_text() == "not a directory"
    # damaged: not JSON, or JSON that is not what was written
    cache = tmp_path / "cache"
    monkeypatch.setenv("ORCH_CACHE_DIR", str(cache))
    load_config(path)
    (kept,) = _kept_files(cache)
    damaged = [
        "{not json",
        "[]",
        '{"format": 1, "value": 7}',
        '{"format": 1, "value": {"data": 1}}',
        # a ${VAR} that is not a string, or not there
        '{"format": 1, "value": {"data": {"project": 1}, "lines": [], "dollars": [[["project"], 1]]}}',
        '{"format": 1, "value": {"data": {"project": "p"}, "lines": [], "dollars": [[["x", 3], 1]]}}',
    ]
    for damage in damaged:
        kept.write_text(damage)
        assert load_config(path).project == "p"


def test_the_oldest_files_go_past_max_files(tmp_path, monkeypatch):
    monkeypatch.setattr(yaml_cache, "MAX_FILES", 3)
    seen: set[Path] = set()
    for n in range(5):
        yaml_cache.save("t", f"text {n}", {"n": n})
        (new,) = set(_kept_files(tmp_path / "orchlab-cache")) - seen
        os.utime(new, ns=(n * 10**9, n * 10**9))  # written in this order, whatever the clock's steps
        seen.add(new)
    assert len(_kept_files(tmp_path / "orchlab-cache")) == 3
    assert [yaml_cache.load("t", f"text {n}") for n in range(5)] == [None, None, {"n": 2}, {"n": 3}, {"n": 4}]


def test_the_packaged_metadata_reads_the_same_from_the_cache():
    code = (
        "import sys\n"
        "from orchlab.catalog.metadata import metadata\n"
        "m = metadata()\n"
        "print(repr((m.kinds, m.vendors, m.families, m.loose)), 'yaml' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the frozensets' repr in one order in both processes
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        ).stdout
        for _ in range(2)
    ]
    assert runs[0].endswith(" True\n") and runs[1].endswith(" False\n")
    assert runs[0].rsplit(" ", 1)[0] == runs[1].rsplit(" ", 1)[0]


def test_document_reads_without_importing_pyyaml_until_it_must():
    code = "import sys, orchlab.config.document, orchlab.config.loader; print('yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_another_pyyaml_reads_every_text_again(tmp_path, monkeypatch):
    import importlib.machinery
    import importlib.util

    yaml_cache.save("t", "text", {"n": 1})
    assert yaml_cache.load("t", "text") == {"n": 1}
    other = tmp_path / "site" / "yaml" / "__init__.py"  # an upgraded PyYAML: another file
    other.parent.mkdir(parents=True)
    other.write_text("# PyYAML 7\n")
    found = importlib.machinery.ModuleSpec("yaml", None, origin=str(other))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: found if name == "yaml" else None)
    assert yaml_cache.load("t", "text") is None
