"""Tracking without a store: settings and env overrides, ratings, scrubbing, the trace payload."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchlab.calls import CallContext, CallRecord
from orchlab.config.loader import parse_config
from orchlab.errors import ConfigValidationError, InvalidRequestError, PromptError, TrackingError
from orchlab.tracking.compare_inputs import compare_target, load_prompts
from orchlab.tracking.feedback import normalize_rating, trace_id_of
from orchlab.tracking.history import filter_string
from orchlab.tracking.prompts import PromptMessage, _prompt_uri
from orchlab.tracking.records import REDACTED, env_secrets, new_trace_id, scrub, trace_payload
from orchlab.tracking.settings import resolve_settings
from orchlab.types import Attempt, Decision, LLMResponse, Message, Usage
from tests.tracking_support import (  # noqa: F401  (the *_fixture names register fixtures)
    API_KEY,
    loop_config_fixture,
    tracking_on_fixture,
)

REPO = Path(__file__).resolve().parents[1]


def _config(text: str):  # type: ignore[no-untyped-def]
    return parse_config(textwrap.dedent(text))


# --- settings -------------------------------------------------------------------------------


def test_defaults_are_a_sqlite_store_in_the_working_directory(tmp_path: Path) -> None:
    cfg = _config("project: demo\nenv: staging\n")
    s = resolve_settings(cfg.tracking, project=cfg.project, env=cfg.env)
    assert s.enabled is True
    assert s.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert s.experiment == "demo · staging"
    assert s.spool_dir == tmp_path.resolve() / ".orchlab" / "spool"


def test_a_later_chdir_does_not_move_the_store(
    tmp_path: Path, write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import orchlab

    client = orchlab.get_llm_client(write_config("project: p\n"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert client.tracking.settings.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_yaml_paths_are_relative_to_the_yaml_file(tmp_path: Path) -> None:
    cfg = _config(
        """
        project: p
        tracking: {tracking_uri: "sqlite:///stores/t.db", experiment: mine, spool_dir: spool}
        """
    )
    yaml_dir = tmp_path / "conf"
    s = resolve_settings(cfg.tracking, project="p", env="dev", base_dir=yaml_dir)
    assert s.tracking_uri == f"sqlite:///{yaml_dir.resolve()}/stores/t.db"
    assert s.experiment == "mine"
    assert s.spool_dir == (yaml_dir / "spool").resolve()


def test_env_overrides_in_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = _config('project: p\ntracking: {tracking_uri: "http://team:5000/", experiment: from-yaml}\n')
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow-env:5000")
    s = resolve_settings(cfg.tracking, project="p", env="dev")
    assert s.tracking_uri == "http://team:5000"  # the YAML beats MLFLOW_TRACKING_URI
    assert s.experiment == "from-yaml"
    monkeypatch.setenv("ORCH_TRACKING_URI", "sqlite:///o.db")
    monkeypatch.setenv("ORCH_EXPERIMENT", "from-env")
    s = resolve_settings(cfg.tracking, project="p", env="dev")
    assert s.tracking_uri == f"sqlite:///{tmp_path.resolve()}/o.db"
    assert s.experiment == "from-env"
    bare = _config("project: p\n")
    monkeypatch.delenv("ORCH_TRACKING_URI")
    assert resolve_settings(bare.tracking, project="p", env="dev").tracking_uri == "http://mlflow-env:5000"


@pytest.mark.parametrize(("value", "enabled"), [("0", False), ("false", False), ("OFF", False), ("1", True)])
def test_orch_tracking_switches_it(monkeypatch: pytest.MonkeyPatch, value: str, enabled: bool) -> None:
    monkeypatch.setenv("ORCH_TRACKING", value)
    cfg = _config("project: p\ntracking: {enabled: true}\n")
    assert resolve_settings(cfg.tracking, project="p", env="dev").enabled is enabled


def test_bad_orch_tracking_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TRACKING", "maybe")
    with pytest.raises(ConfigValidationError, match="ORCH_TRACKING='maybe'"):
        resolve_settings(None, project="p", env="dev")


def test_journal_settings_from_yaml_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config("project: p\ntracking: {fsync: true, spool_max_mb: 0.5}\n")
    s = resolve_settings(cfg.tracking, project="p", env="dev")
    assert (s.fsync, s.max_spool_bytes, s.drain_idle_s) == (True, 512 * 1024, 15.0)
    monkeypatch.setenv("ORCH_TRACKING_FSYNC", "0")
    monkeypatch.setenv("ORCH_TRACKING_SPOOL_MAX_MB", "2")
    monkeypatch.setenv("ORCH_TRACKING_DRAIN_IDLE", "0.5")
    s = resolve_settings(cfg.tracking, project="p", env="dev")
    assert (s.fsync, s.max_spool_bytes, s.drain_idle_s) == (False, 2 * 1024 * 1024, 0.5)
    assert s.store_dir == s.spool_dir / s.store_id and len(s.store_id) == 16


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ORCH_TRACKING_FSYNC", "sometimes"),
        ("ORCH_TRACKING_SPOOL_MAX_MB", "0"),
        ("ORCH_TRACKING_SPOOL_MAX_MB", "inf"),
        ("ORCH_TRACKING_DRAIN_IDLE", "soon"),
    ],
)
def test_bad_journal_settings_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigValidationError, match=f"{name}='{value}'"):
        resolve_settings(None, project="p", env="dev")


@pytest.mark.parametrize("uri", ["./mlruns", "file:///tmp/mlruns", "sqlite://"])
def test_stores_that_lose_or_cannot_filter_traces_are_refused(uri: str) -> None:
    cfg = _config(f'project: p\ntracking: {{tracking_uri: "{uri}"}}\n')
    with pytest.raises(ConfigValidationError, match=r"tracking\.tracking_uri"):
        resolve_settings(cfg.tracking, project="p", env="dev")


def test_unknown_tracking_key_names_its_path() -> None:
    with pytest.raises(ConfigValidationError) as info:
        _config("project: p\ntracking: {uri: x}\n")
    assert ("tracking.uri", "unknown key (not part of the schema)") in info.value.problems


def test_tracking_off_leaves_responses_untraced(
    loop_config: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import orchlab

    monkeypatch.setenv("ORCH_TRACKING", "0")
    client = orchlab.get_llm_client(loop_config)
    response = client.run("chat", [{"role": "user", "content": "hi"}])
    assert response.content == "echo: hi"
    assert response.trace_id is None
    assert client.tracking not in list(client.observers)
    with pytest.raises(TrackingError, match="tracking is off"):
        client.feedback(response, 5)


def test_import_and_client_creation_do_not_import_mlflow(write_config: Callable[[str], Path]) -> None:
    path = write_config("project: p\n")
    code = (
        "import sys, orchlab; c = orchlab.get_llm_client(sys.argv[1]); "
        "assert c.tracking.enabled; "
        "print(sorted(m for m in ('mlflow', 'pandas', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_without_mlflow_tracking_is_off_with_one_warning_and_writes_nothing(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    path = write_config(
        """
        project: p
        providers:
          t: {type: test, options: {models: {m: {reply: "four"}}}}
        roles:
          chat: {provider: t, model: m}
        """
    )
    code = (
        "import sys\n"
        "sys.modules['mlflow'] = None  # as if only orchlab[local] were installed: import mlflow fails\n"
        "import orchlab\n"
        "a, b = orchlab.get_llm_client(sys.argv[1]), orchlab.get_llm_client(sys.argv[1])\n"
        "r = a.run('chat', [{'role': 'user', 'content': 'hi'}])\n"
        "b.run('chat', [{'role': 'user', 'content': 'again'}])\n"
        "print(r.content, r.trace_id, a.tracking.enabled, b.tracking.enabled)\n"
        "try:\n"
        "    a.feedback(r, 5)\n"
        "except orchlab.OrchlabError as exc:\n"
        "    print('refused:', exc)\n"
    )
    out = subprocess.run(  # tracking is on (the tracking_on fixture), as a user has it by default
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    first, refused = out.stdout.splitlines()
    assert first == "four None False False"
    assert refused.startswith("refused: tracking is off for this client (MLflow tracking is off: mlflow is")
    warned = [line for line in out.stderr.splitlines() if "mlflow is not installed" in line]
    assert len(warned) == 1, out.stderr
    assert "OrchlabWarning" in warned[0] and "pip install 'orchlab[tracking]'" in warned[0]
    # no spool, no store (orchlab-cache is conftest's ORCH_CACHE_DIR, ~/.cache/orchlab for a user)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llm_orchestrator.yaml", "orchlab-cache"]


# --- ratings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (True, ("thumbs", True)),
        (False, ("thumbs", False)),
        ("up", ("thumbs", True)),
        ("Down", ("thumbs", False)),
        (1, ("rating", 1)),
        (5, ("rating", 5)),
        (4.0, ("rating", 4)),
        ("3", ("rating", 3)),
    ],
)
def test_ratings_are_thumbs_or_stars(given: object, stored: tuple[str, object]) -> None:
    assert normalize_rating(given) == stored
    assert type(normalize_rating(given)[1]) is type(stored[1])


@pytest.mark.parametrize("given", [0, 6, 3.5, "meh", None, [5]])
def test_other_ratings_are_refused(given: object) -> None:
    with pytest.raises(TrackingError):
        normalize_rating(given)


def test_trace_ids_come_from_responses_or_strings() -> None:
    tid = new_trace_id()
    assert tid.startswith("tr-") and len(tid) == 35 and int(tid[3:], 16) >= 0
    assert trace_id_of(tid) == tid
    assert trace_id_of(LLMResponse("x", "p", "m", trace_id=tid)) == tid
    with pytest.raises(TrackingError, match="was not tracked"):
        trace_id_of(LLMResponse("x", "p", "m"))
    with pytest.raises(TrackingError, match="not an MLflow trace id"):
        trace_id_of("12345")


# --- the trace payload ----------------------------------------------------------------------


def test_payload_has_a_root_span_and_one_span_per_attempt_with_real_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCH_AUTH_X_API_KEY", API_KEY)
    t0 = 1_800_000_000.25
    failed = Attempt(
        "openai", "gpt-big", "error", 0.5, stage="fallback 1", started_at=t0,
        error=f"HTTP 500 (key {API_KEY})", error_type="ProviderUnavailableError",
        params={"temperature": 0, "api_key": "inline-secret-value",
                "extra_headers": {"Authorization": "B x"}},
    )  # fmt: skip
    ok = Attempt(
        "openai", "gpt-small", "ok", 0.25, Usage(13, 7, cache_read_tokens=3), cost_usd=0.0000164,
        stage="fallback 2", started_at=t0 + 0.5, output="four", params={"temperature": 0},
    )  # fmt: skip
    ctx = CallContext(role="llm.inference", strategy="fallback", messages=(Message("user", "2+2?"),))
    ctx.started_at, ctx.attempts = t0, [failed, ok]
    response = LLMResponse(
        "four", "openai", "gpt-small", usage=Usage(13, 7), cost_usd=0.0000164,
        decision=Decision("fallback", attempts=(failed, ok), winner="openai:gpt-small", rationale="r"),
    )  # fmt: skip
    record = CallRecord(ctx, response, None, t0 + 0.8)
    tid = new_trace_id()

    payload = trace_payload(
        record, tid, link=None, base_tags={"orchlab.project": "p"}, provider_kinds={"openai": "openai"},
        secrets={API_KEY},
    )  # fmt: skip

    root, first, second = payload["spans"]  # the root, then its children: one per attempt
    assert payload["trace_id"] == tid and payload["kind"] == "trace"
    assert (root["type"], first["type"], second["type"]) == ("CHAIN", "CHAT_MODEL", "CHAT_MODEL")
    assert root["start_ns"] == int(t0 * 1e9)
    assert root["end_ns"] == int((t0 + 0.8) * 1e9)
    assert second["start_ns"] == int((t0 + 0.5) * 1e9)
    assert second["end_ns"] == int((t0 + 0.75) * 1e9)
    assert json.loads(json.dumps(payload)) == payload  # plain JSON, as the journal keeps it
    attrs = second["attributes"]
    assert attrs["mlflow.chat.tokenUsage"] == {
        "input_tokens": 13, "output_tokens": 7, "total_tokens": 20, "cache_read_input_tokens": 3,
    }  # fmt: skip
    assert attrs["mlflow.llm.cost"] == {"total_cost": 0.0000164}
    assert attrs["mlflow.llm.model"] == "gpt-small" and attrs["mlflow.llm.provider"] == "openai"
    assert second["status"] == "OK" and first["status"] == "ERROR"
    assert first["error"] == {"type": "ProviderUnavailableError", "message": f"HTTP 500 (key {REDACTED})"}
    assert payload["tags"]["orchlab.role"] == "llm.inference"
    assert payload["tags"]["orchlab.strategy"] == "fallback"
    assert payload["tags"]["mlflow.traceName"] == "llm.inference → fallback"  # MLflow's "Trace name"
    root_attrs = root["attributes"]
    assert root_attrs["orchlab.decision"]["winner"] == "openai:gpt-small"
    assert root_attrs["orchlab.cost_usd"] == 0.0000164
    text = json.dumps(payload)
    assert API_KEY not in text and "inline-secret-value" not in text and "B x" not in text
    first_attrs = first["attributes"]
    assert first_attrs["orchlab.params"]["api_key"] == REDACTED
    assert first_attrs["orchlab.error"] == f"HTTP 500 (key {REDACTED})"
    assert "mlflow.llm.cost" not in first_attrs  # no price for a failure that used no tokens


def test_payload_of_a_failed_call_and_of_a_registered_prompt() -> None:
    ctx = CallContext(
        role="chat",
        strategy="single",
        messages=(
            PromptMessage("system", "Be brief.", "greet", "3"),
            PromptMessage("user", "Hi Ann", "greet", "3"),
        ),
    )
    ctx.attempts = [
        Attempt("loop", "m", "error", 0.1, started_at=ctx.started_at, error="down", error_type="X")
    ]
    payload = trace_payload(
        CallRecord(ctx, None, RuntimeError("down"), ctx.started_at + 0.1), new_trace_id(),
        link=None, base_tags={}, provider_kinds={}, secrets=(),
    )  # fmt: skip
    root = payload["spans"][0]
    assert root["status"] == "ERROR" and root["error"] == {"type": "RuntimeError", "message": "down"}
    tags = payload["tags"]
    assert tags["orchlab.status"] == "error"
    assert tags["mlflow.traceName"] == "chat → loop:m"  # no answer: the model it asked last
    ctx.role = None
    direct = trace_payload(
        CallRecord(ctx, None, RuntimeError("down"), ctx.started_at + 0.1), new_trace_id(),
        link=None, base_tags={}, provider_kinds={}, secrets=(),
    )  # fmt: skip
    assert direct["tags"]["mlflow.traceName"] == "loop:m"  # a model asked without a role
    assert tags["orchlab.prompt"] == "greet"
    assert tags["orchlab.prompt_version"] == "3"
    assert payload["prompts"] == [{"name": "greet", "version": "3"}]


def test_credential_environment_variables_are_found_as_they_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_API_KEY", "sk-first-value-123")
    assert "sk-first-value-123" in env_secrets()
    monkeypatch.setenv("SOME_API_KEY", "sk-second-value-456")  # a new value under a known name
    assert "sk-second-value-456" in env_secrets() and "sk-first-value-123" not in env_secrets()
    monkeypatch.setenv("LATER_TOKEN", "tok-later-789xyz")  # a new name
    assert "tok-later-789xyz" in env_secrets()
    monkeypatch.setenv("PLAIN_SETTING", "not-a-secret-value")
    assert "not-a-secret-value" not in env_secrets()


def test_a_credential_variable_swapped_for_another_of_the_same_count_is_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCHLAB_SWAP_PLAIN", "ordinary")
    env_secrets()  # names seen with ORCHLAB_SWAP_PLAIN
    monkeypatch.delenv("ORCHLAB_SWAP_PLAIN")
    monkeypatch.setenv("ORCHLAB_SWAP_API_KEY", "sk-swapped-in-0123")  # as many variables as before
    assert "sk-swapped-in-0123" in env_secrets()


def test_scrub_masks_keys_and_known_secret_values() -> None:
    data = {"max_tokens": 5, "Authorization": "x", "nested": [{"refresh_token": "y"}, f"url?k={API_KEY}"]}
    assert scrub(data, [API_KEY, "short"]) == {
        "max_tokens": 5,
        "Authorization": REDACTED,
        "nested": [{"refresh_token": REDACTED}, f"url?k={REDACTED}"],
    }


# --- compare inputs, history filters, prompt references ---------------------------------------


def test_prompt_sets_load_from_lists_and_dataset_files(tmp_path: Path) -> None:
    cases = load_prompts(REPO / "data" / "prompts_small.jsonl")
    assert [c.id for c in cases][:2] == ["arithmetic", "capital"]
    assert cases[0].messages == (Message("user", "What is 2+2?"),)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "p.csv").write_text("prompt,expected\nHi there,x\nBye,y\n", encoding="utf-8")
    assert [c.text for c in load_prompts("p.csv")] == ["Hi there", "Bye"]  # found under ./data/
    mixed = load_prompts(["plain", [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]])
    assert [c.text for c in mixed] == ["plain", "u"]
    with pytest.raises(InvalidRequestError, match="dataset file not found"):
        load_prompts("missing.jsonl")
    with pytest.raises(InvalidRequestError, match="neither a dataset file"):
        load_prompts("What is 2+2?")


def test_compare_targets_are_roles_models_or_strategies(loop_config: Path) -> None:
    import orchlab

    client = orchlab.get_llm_client(loop_config)
    assert compare_target(client, "chat").kind == "role"
    assert compare_target(client, "loop:big").model == "loop:big"
    assert compare_target(client, "cascade").strategy == "cascade"
    custom = compare_target(client, {"label": "hot", "role": "chat", "temperature": 1.0})
    assert (custom.label, custom.role, dict(custom.options)) == ("hot", "chat", {"temperature": 1.0})
    with pytest.raises(InvalidRequestError, match="not a role"):
        compare_target(client, "nope")
    with pytest.raises(orchlab.ConfigError, match="nowhere"):
        compare_target(client, "nowhere:model")


def test_history_filters_become_mlflow_search_clauses() -> None:
    flt = filter_string(role="chat", model="m", min_rating=4, since=1_700_000_000, status="error")
    assert flt == (
        "tag.`orchlab.role` = 'chat' AND tag.`orchlab.model` = 'm' AND tag.`orchlab.status` = 'error' "
        "AND feedback.rating >= 4 AND trace.timestamp_ms >= 1700000000000"
    )
    import datetime as dt

    recent = filter_string(since=dt.timedelta(hours=1))
    assert abs(int(recent.rsplit(" ", 1)[1]) - (time.time() - 3600) * 1000) < 5000
    with pytest.raises(TrackingError, match="min_rating"):
        filter_string(min_rating=9)
    with pytest.raises(TrackingError, match="since"):
        filter_string(since="yesterday-ish")


@pytest.mark.parametrize(
    ("ref", "uri"),
    [
        ("summarise@2", "prompts:/summarise/2"),
        ("summarise@prod", "prompts:/summarise@prod"),
        ("summarise", "prompts:/summarise@latest"),
        ("prompts:/x/1", "prompts:/x/1"),
    ],
)
def test_prompt_references(ref: str, uri: str) -> None:
    assert _prompt_uri(ref) == uri


def test_bad_prompt_references_are_prompt_errors() -> None:
    for bad in ("", "a b@1", "name@"):
        with pytest.raises(PromptError):
            _prompt_uri(bad)
