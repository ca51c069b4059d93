"""The widgets, driven headlessly (set values, click buttons), with the real local model and a real
MLflow store in the test's temp dir; what they write is read back from that store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import orchlab
from orchlab import widgets
from orchlab.config.loader import load_config
from orchlab.orchestrator import Orchestrator, get_llm_client

CONFIG = """\
    # widget tests: two providers on the same in-process model
    project: widget_tests   # a comment that must survive a Save
    env: dev

    providers:
      local: {type: llamacpp, options: {n_ctx: 2048}}
      local2:
        type: llamacpp          # same GGUF, another entry, which also answers to another name
        options: {n_ctx: 2048, aliases: [gemma-3-270m-alt]}

    roles:
      # the main answer
      llm.inference:
        provider: local
        model: "gemma-3-270m"   # quoted on purpose
        description: the main answer
        params: {temperature: 0, max_tokens: 8}
      llm.preprocess: {provider: local, model: gemma-3-270m, params: {max_tokens: 6}}

    models:
      local2:gemma-3-270m-alt: {display_name: Gemma alt, context_window: 1024, tier: standard}

    envs:
      prod:
        roles:
          llm.preprocess: {provider: local2, model: gemma-3-270m}
    """

QUESTION = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def config_path(write_config: Callable[..., Path]) -> Path:
    return write_config(CONFIG)


@pytest.fixture
def client(config_path: Path) -> Iterator[Orchestrator]:
    """Tracking off (the tests' default): for the tests that do not read MLflow back."""
    with get_llm_client(config_path) as made:
        yield made


@pytest.fixture
def tracked(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Orchestrator]:
    """Tracking on, into ``mlflow.db`` in the test's temp dir; everything flushed before it ends."""
    monkeypatch.setenv("ORCH_TRACKING", "1")
    with get_llm_client(config_path) as client:
        yield client
    assert orchlab.flush(timeout=120)


def assessments(client: Orchestrator, trace_id: str) -> dict[str, Any]:
    """The trace's feedback, read back from the test's own MLflow store."""
    import mlflow

    assert orchlab.flush(timeout=120)
    store = mlflow.MlflowClient(tracking_uri=client.tracking.settings.tracking_uri)
    trace = store.get_trace(trace_id)
    return {a.name: a for a in trace.info.assessments}


# --- feedback -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_feedback_clicks_store_thumbs_and_stars_in_mlflow(tracked: Orchestrator, tmp_path: Path) -> None:
    client = tracked
    response = client.run("llm.inference", QUESTION)
    assert client.tracking.settings.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    fb = widgets.feedback(response, client=client, user="ada")
    fb.up.click()
    assert fb.status.value == "<span style='color:#080'>✓ saved 👍</span>"
    assert fb.up.button_style == "success"
    fb.comment.value = "right, but terse"
    fb.stars[3].click()
    assert fb.status.value == "<span style='color:#080'>✓ saved ★★★★☆ (4/5) · “right, but terse”</span>"
    assert (fb.up.button_style, fb.stars[3].button_style) == ("", "success")
    assert [(r.name, r.value) for r in fb.saved] == [("thumbs", True), ("rating", 4)]

    found = assessments(client, response.trace_id)
    assert found["thumbs"].value is True
    assert found["rating"].value == 4
    assert found["rating"].rationale == "right, but terse"
    assert found["rating"].source.source_type == "HUMAN"
    assert found["rating"].source.source_id == "ada"


def test_feedback_on_an_untracked_answer_is_disabled_and_says_why(client: Orchestrator) -> None:
    fb = widgets.feedback("", client=client)
    assert all(b.disabled for b in fb.buttons()) and fb.comment.disabled
    assert "not tracked" in fb.status.value
    assert fb._repr_mimebundle_()["text/plain"] == "rate this answer: 👍 👎 1★ 2★ 3★ 4★ 5★ + comment"


def test_feedback_error_is_shown_not_raised(tracked: Orchestrator) -> None:
    fb = widgets.feedback("not-a-trace-id", client=tracked)
    assert fb.rate(5) is None
    assert "✗ not saved: 'not-a-trace-id' is not an MLflow trace id" in fb.status.value
    assert fb.saved == []


def test_feedback_with_tracking_off_says_so(client: Orchestrator) -> None:
    fb = widgets.feedback("tr-" + "0" * 32, client=client)
    fb.up.click()
    assert "✗ not saved: tracking is off for this client" in fb.status.value


# --- model picker -------------------------------------------------------------------------------


def test_picker_shows_the_role_binding_and_catalog_facts(client: Orchestrator) -> None:
    picker = widgets.model_picker(client)
    assert list(picker.role.options) == ["llm.inference", "llm.preprocess"]
    assert (picker.role.value, picker.provider.value, picker.model.value) == (
        "llm.inference",
        "local",
        "gemma-3-270m",
    )
    assert list(picker.provider.options) == ["local", "local2"]
    info = picker.info.value
    assert "· local · fast · 2,048-token context · $0 in / $0 out per 1M tokens" in info
    picker.provider.value = "local2"
    assert list(picker.model.options) == ["gemma-3-270m-alt"]
    assert "Gemma alt · local · standard · 1,024-token context" in picker.info.value


@pytest.mark.slow
def test_picker_apply_rebinds_for_the_session(client: Orchestrator, config_path: Path) -> None:
    before = config_path.read_text()
    picker = widgets.model_picker(client, role="llm.preprocess")
    picker.provider.value = "local2"
    picker.model.value = "gemma-3-270m-alt"
    picker.apply.click()
    assert picker.status.value == (
        "<span style='color:#080'>✓ llm.preprocess: local:gemma-3-270m → local2:gemma-3-270m-alt "
        "for this session</span>"
    )
    assert client.resolve("llm.preprocess").target == "local2:gemma-3-270m-alt"
    assert client.run("llm.preprocess", QUESTION).provider == "local2"
    assert config_path.read_text() == before  # Apply never writes


def test_picker_save_writes_the_yaml_keeping_comments_and_keys(
    client: Orchestrator, config_path: Path
) -> None:
    before = config_path.read_text()
    picker = widgets.model_picker(client)
    picker.provider.value = "local2"
    picker.model.value = "gemma-3-270m-alt"
    picker.save.click()
    assert (
        "✓ saved roles.llm.inference = local2:gemma-3-270m-alt in llm_orchestrator.yaml"
        in picker.status.value
    )
    after = config_path.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [
        ("    provider: local", "    provider: local2"),
        # the comment keeps its column
        (
            '    model: "gemma-3-270m"   # quoted on purpose',
            '    model: "gemma-3-270m-alt" # quoted on purpose',
        ),
    ]
    reloaded = load_config(config_path)
    assert (reloaded.roles["llm.inference"].provider, reloaded.roles["llm.inference"].model) == (
        "local2",
        "gemma-3-270m-alt",
    )
    assert client.resolve("llm.inference").target == "local2:gemma-3-270m-alt"


def test_picker_save_writes_the_env_overlay_when_it_defines_the_role(config_path: Path) -> None:
    prod = get_llm_client(config_path, env="prod")
    picker = widgets.model_picker(prod, role="llm.preprocess")
    assert (picker.provider.value, picker.model.value) == ("local2", "gemma-3-270m")
    picker.provider.value = "local"
    picker.save.click()
    assert "saved envs.prod.roles.llm.preprocess = local:gemma-3-270m" in picker.status.value
    reloaded = load_config(config_path)
    assert reloaded.envs["prod"].roles["llm.preprocess"].provider == "local"
    assert reloaded.roles["llm.preprocess"].provider == "local"  # the base entry was not touched
    assert "llm.preprocess: {provider: local, model: gemma-3-270m, params: {max_tokens: 6}}" in (
        config_path.read_text()
    )


def test_picker_refuses_to_edit_the_built_in_default() -> None:
    default = get_llm_client()
    picker = widgets.model_picker(default)
    picker.save.click()
    assert "✗ not saved: the built-in default config is part of the installed package" in picker.status.value


def test_picker_save_never_writes_a_config_that_does_not_load(
    client: Orchestrator, config_path: Path
) -> None:
    before = config_path.read_text()
    picker = widgets.model_picker(client)
    # a provider entry that is not in the file: the edited YAML would not load, so nothing is written
    picker.provider.options = ["local", "local2", "ghost"]
    picker.provider.value = "ghost"
    picker.model.options = ["x"]
    picker.model.value = "x"
    picker.save.click()
    assert "✗" in picker.status.value and "ghost" in picker.status.value
    assert config_path.read_text() == before


# --- compare view -------------------------------------------------------------------------------


@pytest.mark.slow
def test_compare_view_runs_targets_side_by_side_and_logs_runs(tracked: Orchestrator) -> None:
    import mlflow

    client = tracked
    view = widgets.compare_view(
        client, prompt="What is 2+2?", targets=["llm.preprocess", "local2:gemma-3-270m"]
    )
    assert "local2:gemma-3-270m-alt" in view.targets.options
    view.max_tokens.value = 8
    view.run.click()
    assert (view.progress.value, view.progress.max, view.progress.bar_style) == (2, 2, "success")
    assert view.progress_text.value.startswith("2/2 done in ")
    results = view.last
    assert [r.target for r in results] == ["llm.preprocess", "local2:gemma-3-270m"]
    assert all(r.ok and r.row["output_tokens"] <= 8 for r in results)
    assert results[1].row["provider"] == "local2"
    assert results[0].text() == results[1].text() == "2+2 = 4"
    assert view.panel is not None
    head, answers = view.panel.widget.children
    assert "<b>prompt:</b> What is 2+2?" in head.value and len(answers.children) == 2
    text = view.panel.text()
    assert text.startswith("prompt: What is 2+2?\n── llm.preprocess\n2+2 = 4\nlocal · gemma-3-270m · ")
    assert "── local2:gemma-3-270m\n2+2 = 4\nlocal2 · gemma-3-270m · " in text

    view.panel.feedback["local2:gemma-3-270m"].down.click()
    found = assessments(client, results[1].trace_id)
    assert found["thumbs"].value is False

    store = mlflow.MlflowClient(tracking_uri=client.tracking.settings.tracking_uri)
    experiment = store.get_experiment_by_name(client.tracking.settings.experiment)
    runs = store.search_runs([experiment.experiment_id])
    by_target = {r.data.params["target"]: r for r in runs}
    assert set(by_target) == {"llm.preprocess", "local2:gemma-3-270m"}
    assert by_target["local2:gemma-3-270m"].data.params["provider"] == "local2"
    assert by_target["llm.preprocess"].data.metrics["success_rate"] == 1.0
    assert by_target["llm.preprocess"].data.metrics["output_tokens"] == results[0].row["output_tokens"]
    names = {r.data.tags["mlflow.runName"].partition(" · ")[2] for r in runs}  # "<target> · <name>"
    assert len(names) == 1 and names.pop().startswith("compare view ")


def test_compare_view_with_a_bad_target_says_so(client: Orchestrator) -> None:
    view = widgets.compare_view(client, prompt="hi", targets=["llm.preprocess", "nowhere:model"])
    assert view.run_now() == []
    assert view.progress.bar_style == "danger"
    assert "provider 'nowhere' is not defined" in view.progress_text.value


def test_compare_view_clears_the_old_answers_when_it_runs_again(
    client: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchlab.errors import InvalidRequestError
    from orchlab.widgets import compare as compare_module
    from orchlab.widgets.compare import TargetResult

    seen_on_screen: list[tuple[Any, ...]] = []

    def first(client: Any, prompt: str, targets: list[str], **kwargs: Any) -> list[TargetResult]:
        return [TargetResult(t, {"target": t, "ok": True, "answer": f"old answer of {t}"}) for t in targets]

    def second(client: Any, prompt: str, targets: list[str], **kwargs: Any) -> list[TargetResult]:
        seen_on_screen.append(view.output.children)
        raise InvalidRequestError("session budget reached")

    view = widgets.compare_view(client, prompt="What is 2+2?", targets=["llm.preprocess", "llm.inference"])
    monkeypatch.setattr(compare_module, "run_targets", first)
    view.run.click()
    assert view.panel is not None and "old answer of llm.inference" in view.panel.text()
    assert len(view.output.children) == 1
    view.prompt.value = "What is 3+3?"
    monkeypatch.setattr(compare_module, "run_targets", second)
    view.run.click()
    assert seen_on_screen == [()]  # cleared before the new run started
    assert view.output.children == () and view.panel is None and view.last == []
    assert view.progress_text.value == "✗ session budget reached"


def test_picker_asks_a_local_provider_for_its_models(config_path: Path) -> None:
    text = config_path.read_text().replace("local2:gemma-3-270m-alt", "local:gemma-3-270m-big")
    config_path.write_text(text)
    client = get_llm_client(config_path)
    picker = widgets.model_picker(client)
    picker.provider.value = "local2"  # nothing of local2 in the YAML: its llama.cpp adapter lists the GGUF
    assert list(picker.model.options) == ["gemma-3-270m"]
    picker.apply.click()
    assert client.resolve("llm.inference").target == "local2:gemma-3-270m"


def test_picker_without_a_model_does_nothing(client: Orchestrator, config_path: Path) -> None:
    before = config_path.read_text()
    picker = widgets.model_picker(client)
    picker.model.options = []
    picker.save.click()
    assert "✗ choose a role, a provider and a model first" in picker.status.value
    assert config_path.read_text() == before
    assert client.resolve("llm.inference").target == "local:gemma-3-270m"
