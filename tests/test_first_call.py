"""What a one-shot script's first call loads: the config's models are built when a config is
validated, not at import, and genai-prices' answers are kept on disk so that a later process
prices a model it priced before without importing genai-prices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PRICE = """
import json, sys
from orchlab.catalog.prices import lookup
found = lookup(sys.argv[1], sys.argv[2])
p = found.price
print(json.dumps({
    "price": None if p is None else [p.input_per_mtok, p.output_per_mtok, p.cache_read_per_mtok, p.source],
    "matched": found.matched_id, "window": found.context_window, "name": found.display_name,
    "note": found.note, "genai_prices imported": "genai_prices" in sys.modules,
}))
"""


def price_in_a_fresh_process(cache_dir, provider="openai", model="gpt-4o-mini"):
    out = subprocess.run(
        [sys.executable, "-c", PRICE, provider, model],
        capture_output=True,
        text=True,
        env={**os.environ, "ORCH_CACHE_DIR": str(cache_dir)},
        check=True,
    )
    found = json.loads(out.stdout)
    return found, found.pop("genai_prices imported")


def test_a_later_process_prices_a_model_without_importing_genai_prices(tmp_path):
    first, imported = price_in_a_fresh_process(tmp_path)
    assert imported and first["price"][:2] == [0.15, 0.6] and first["price"][3] == "genai-prices"
    assert first["matched"] == "gpt-4o-mini" and first["window"] == 128000
    again, imported = price_in_a_fresh_process(tmp_path)
    assert (again, imported) == (first, False)
    # a model genai-prices does not know is remembered as such
    unknown, imported = price_in_a_fresh_process(tmp_path, model="no-such-model-xyz")
    assert imported and unknown["price"] is None and "no price for 'no-such-model-xyz'" in unknown["note"]
    assert price_in_a_fresh_process(tmp_path, model="no-such-model-xyz") == (unknown, False)
    # and the first answer is still there
    assert price_in_a_fresh_process(tmp_path) == (first, False)


def test_a_cache_of_other_genai_prices_data_or_another_day_is_not_used(tmp_path):
    reference, _ = price_in_a_fresh_process(tmp_path / "reference")
    stale = tmp_path / "stale"
    stale.mkdir()
    row = {"price": [999.0, 999.0, None, None], "note": None, "display_name": "x", "context_window": 1}
    (stale / "genai-prices.json").write_text(
        json.dumps(
            {"stamp": "other data:2020-01-01", "lookups": {"openai\tgpt-4o-mini": {**row, "matched_id": "x"}}}
        )
    )
    assert price_in_a_fresh_process(stale) == (reference, True)
    saved = json.loads((stale / "genai-prices.json").read_text())
    assert saved["stamp"] != "other data:2020-01-01" and list(saved["lookups"]) == ["openai\tgpt-4o-mini"]
    assert price_in_a_fresh_process(stale) == (reference, False)


def test_a_cache_that_cannot_be_written_only_costs_the_lookup(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    reference, _ = price_in_a_fresh_process(tmp_path / "reference")
    assert price_in_a_fresh_process(blocked) == (reference, True)
    assert price_in_a_fresh_process(blocked) == (reference, True)
    assert blocked.read_text() == "not a directory"


def test_config_models_are_built_when_a_config_is_validated_not_at_import():
    code = (
        "import orchlab.config.schema as s\n"
        "print(s.OrchestratorConfig.__pydantic_complete__, s.RoleConfig.__pydantic_complete__)\n"
        "roles = {'r': {'provider': 'a', 'model': 'b'}}\n"
        "c = s.OrchestratorConfig.model_validate({'project': 'p', 'roles': roles})\n"
        "print(s.OrchestratorConfig.__pydantic_complete__, c.roles['r'].model)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n") == ["False False", "True b", ""]


def test_a_session_crossing_midnight_reads_the_cache_again(monkeypatch):
    import orchlab.catalog.prices as prices

    for name, value in (("_cache", {}), ("_disk", None), ("_disk_stamp", None)):
        monkeypatch.setattr(prices, name, value)
    row = {"note": None, "display_name": "GPT", "context_window": 5, "matched_id": "gpt-4o-mini"}

    def saved(stamp, given, taken):
        prices.cache_file().parent.mkdir(parents=True, exist_ok=True)
        lookups = {"openai\tgpt-4o-mini": {**row, "price": [given, taken, None, None]}}
        prices.cache_file().write_text(json.dumps({"stamp": stamp, "lookups": lookups}))
        monkeypatch.setattr(prices, "_stamp", lambda: stamp)

    saved("data:day 1", 1.0, 2.0)
    assert prices.lookup("openai", "gpt-4o-mini").price == prices.Price(1.0, 2.0, source="genai-prices")
    prices._cache.clear()  # what a new day would find in memory: nothing for it yet
    saved("data:day 2", 3.0, 4.0)
    assert prices.lookup("openai", "gpt-4o-mini").price == prices.Price(3.0, 4.0, source="genai-prices")


def test_a_config_builds_one_validator_and_its_left_out_sections_need_none_of_their_own():
    code = (
        "import orchlab.config.schema as s\n"
        "roles = {'r': {'provider': 'a', 'model': 'b'}}\n"
        "c = s.OrchestratorConfig.model_validate({'project': 'p', 'roles': roles})\n"
        "sections = (s.RoleParams, s.RoutingConfig, s.TiersConfig, s.TrackingConfig,\n"
        "            s.BudgetsConfig, s.GatewayConfig, s.StoreConfig, s.CacheConfig)\n"
        "built = [m.__name__ for m in sections if m.__pydantic_complete__]\n"
        "print(built, type(c.tracking).__name__, c.tracking.enabled, c.cache.enabled,\n"
        "      c.roles['r'].params.stop, c.routing.tiers.task_types, c.gateway == s.GatewayConfig())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # the sections a config leaves out are still the sections' values, with their defaults
    assert out.stdout.strip() == "[] TrackingConfig True True None {} True"


FIRST_CALL = """
import json, sys
import orchlab
client = orchlab.get_llm_client(sys.argv[1])
r = client.run("chat", [{"role": "user", "content": "hi"}])
loaded = sorted(m for m in sys.modules if m.startswith(("orchlab.tracking", "mlflow")))
before = "orchlab.tracking.observer" in sys.modules
off = client.tracking  # asked for: built then, with the settings resolved with the client
print(json.dumps({
    "content": r.content, "trace_id": r.trace_id, "loaded": loaded, "observer before": before,
    "enabled": off.enabled, "observed": off in list(client.observers),
    "experiment": off.settings.experiment, "same": client.tracking is off,
}))
"""


def test_a_first_call_with_tracking_off_never_imports_the_tracking_observer(
    openai_server, write_config, tmp_path
):
    path = write_config(
        f"""
        project: first
        providers:
          openai: {{auth_profile: t, api_base: "{openai_server.base_url}"}}
        roles:
          chat: {{provider: openai, model: gpt-4o-mini}}
        tracking: {{enabled: false, experiment: exp-of-first}}
        """
    )
    env = {**os.environ, "ORCH_AUTH_T_API_KEY": "sk-test-0000"}
    env.pop("ORCH_TRACKING")  # the YAML turns it off, as a user would
    out = subprocess.run(
        [sys.executable, "-c", FIRST_CALL, str(path)], capture_output=True, text=True, env=env, check=True
    )
    found = json.loads(out.stdout)
    assert found == {
        "content": "echo: hi",
        "trace_id": None,
        # only the settings (is tracking on?): no observer, journal, drain launcher or records
        "loaded": ["orchlab.tracking", "orchlab.tracking.settings"],
        "observer before": False,
        "enabled": False,
        "observed": False,
        "experiment": "exp-of-first",
        "same": True,
    }
    assert [r.path for r in openai_server.requests] == ["/v1/chat/completions"]


def test_tracking_off_keeps_the_settings_resolved_when_the_client_was_built(
    openai_server, write_config, monkeypatch
):
    import orchlab
    from orchlab.errors import TrackingError

    path = write_config(
        f"""
        project: p
        providers:
          openai: {{auth_profile: t, api_base: "{openai_server.base_url}"}}
        roles:
          chat: {{provider: openai, model: gpt-4o-mini}}
        """
    )
    monkeypatch.setenv("ORCH_AUTH_T_API_KEY", "sk-test-0000")
    client = orchlab.get_llm_client(path)  # ORCH_TRACKING=0 (conftest)
    monkeypatch.setenv("ORCH_TRACKING", "1")  # too late for this client, as before tracking was lazy
    response = client.run("chat", [{"role": "user", "content": "hi"}])
    assert (response.content, response.trace_id) == ("echo: hi", None)
    assert client.tracking.enabled is False and client.tracking not in list(client.observers)
    assert client.tracking.settings.experiment == "p · dev"
    with pytest.raises(TrackingError, match="tracking is off"):
        client.feedback(response, 5)
    client.close()


def test_a_role_without_fallbacks_or_candidates_gets_lists_of_its_own():
    from orchlab.config.schema import OrchestratorConfig

    roles = {"a": {"provider": "p", "model": "m"}, "b": {"provider": "p", "model": "m"}}
    config = OrchestratorConfig.model_validate({"project": "p", "roles": roles})
    a, b = config.roles["a"], config.roles["b"]
    assert a.fallbacks == [] and a.candidates == [] and b.fallbacks == []
    a.fallbacks.append("p:other")  # the models are frozen, their lists are not: never shared
    assert (b.fallbacks, a.candidates, b.candidates) == ([], [], [])


def test_the_packaged_metadata_reads_the_same_with_pyyamls_c_loader_and_its_python_one():
    from importlib import resources

    import yaml

    from orchlab.catalog.metadata import Metadata, metadata

    text = (resources.files("orchlab") / "data" / "models.yaml").read_text(encoding="utf-8")
    python = Metadata(yaml.load(text, Loader=yaml.SafeLoader))
    read = metadata()
    assert (read.kinds, read.vendors, read.families, read.loose) == (
        python.kinds,
        python.vendors,
        python.families,
        python.loose,
    )
    assert read.facts("openai", "gpt-4o-mini-2024-07-18") == python.facts("openai", "gpt-4o-mini")
    assert read.facts("openai", "gpt-4o-mini").context_window == 128000


PLAIN_CALL = """
import json, sys
import orchlab
client = orchlab.get_llm_client(sys.argv[1])
hi = [{"role": "user", "content": "hi"}]
r = client.run("chat", hi)
plain = sorted(m for m in sys.modules if m in json.loads(sys.argv[2]))
tools = client.run("chat", hi, {"temperature": 0.5}, tools=[{"type": "function", "function": {"name": "f"}}])
det = client.run("chat", hi, {"temperature": 0})
print(json.dumps({"content": r.content, "plain": plain, "tools": tools.content, "cache": det.cache,
                  "after": sorted(m for m in sys.modules if m in json.loads(sys.argv[2]))}))
"""


def test_a_plain_call_never_loads_the_cache_store_embeddings_or_the_tool_machinery(
    openai_server, write_config
):
    path = write_config(
        f"""
        project: first
        providers:
          openai: {{auth_profile: t, api_base: "{openai_server.base_url}"}}
        roles:
          chat: {{provider: openai, model: gpt-4o-mini}}
        cache: {{url: "sqlite:///cache.db"}}
        """
    )
    lazy = ["orchlab.pipeline.embed", "orchlab.tools.functions", "orchlab.tools.toolsets", "sqlite3"]
    env = {**os.environ, "ORCH_AUTH_T_API_KEY": "sk-test-0000", "ORCH_CACHE": "auto"}
    out = subprocess.run(
        [sys.executable, "-c", PLAIN_CALL, str(path), json.dumps(lazy)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    # the cache is on (auto) but a request without temperature 0 or a seed never reaches it
    assert found["content"] == "echo: hi" and found["plain"] == []
    # a call with tools, and a cacheable request, load what they need
    assert found["tools"] == "echo: hi" and found["cache"] == "miss"
    assert found["after"] == ["orchlab.tools.functions", "orchlab.tools.toolsets", "sqlite3"]


def test_no_config_field_defaults_through_a_builtin_factory():
    # pydantic reads a default_factory's signature when it builds the validator, and
    # inspect.signature(list) compiles tokenize's regex: ~1.3 ms of a one-shot script's first call.
    # default=[] is the same (pydantic copies a mutable default per instance). Two had come back.
    import pydantic

    import orchlab.config.schema as schema

    models = [m for m in vars(schema).values() if isinstance(m, type) and issubclass(m, pydantic.BaseModel)]
    assert len(models) > 20
    builtin = [
        f"{m.__name__}.{name}"
        for m in models
        for name, f in m.model_fields.items()
        if f.default_factory in (list, set, tuple, frozenset)
    ]
    assert builtin == []
