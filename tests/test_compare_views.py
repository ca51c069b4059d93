"""What a comparison shows: the picture (a PNG wherever IPython displays it), quality against cost
per 1,000 calls with the Pareto front, readable tables, the warm-up call, and MLflow's UI command.

The targets are the scriptable test provider (prices from the YAML, tokens = words), so costs and
answers are exact; the tests that rate answers write to a real MLflow SQLite store."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.formatters import DisplayFormatter

import orchlab
from orchlab.errors import ConfigValidationError, InvalidRequestError
from orchlab.frames import readable
from orchlab.orchestrator import Orchestrator
from orchlab.tracking.plots import pareto_points
from orchlab.tracking.settings import TrackingSettings
from orchlab.tracking.ui import server_command, ui_hint
from tests.tracking_support import store_fixture, template_db_fixture  # noqa: F401

PNG = b"\x89PNG\r\n\x1a\n"
CONFIG = """\
    project: cmp
    providers:
      fake:
        type: test
        options:
          models:
            cheap:
              reply: "four"
              script: [{content: "cold start"}]    # the first call only: the warm-up takes it
            mid: {reply: "it is four, I think"}
            big: {reply: "2 + 2 =\\n4"}
    models:
      "fake:cheap": {input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}
      "fake:mid": {input_price_per_mtok: 5.0, output_price_per_mtok: 10.0}
      "fake:big": {input_price_per_mtok: 10.0, output_price_per_mtok: 20.0}
    roles:
      cheap: {provider: fake, model: cheap}
      mid: {provider: fake, model: mid}
      big: {provider: fake, model: big}
    """
PROMPTS = ["What is 2+2?", "And 3+3 then?"]
TARGETS = ["cheap", "mid", "big"]


@pytest.fixture
def client(client_for: Callable[..., Orchestrator]) -> Orchestrator:
    return client_for(CONFIG)


@pytest.fixture
def tracked(
    client_for: Callable[..., Orchestrator], store: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator:
    """Tracking on, into this test's own store."""
    monkeypatch.setenv("ORCH_TRACKING", "1")
    made = client_for(CONFIG)
    yield made
    assert orchlab.flush(timeout=120)


def calls_per_target(client: Orchestrator) -> dict[str, list]:
    calls = client.provider("fake").calls
    return {t: [c for c in calls if c.model == t] for t in TARGETS}


# --- warm-up ------------------------------------------------------------------------------------


def test_each_target_is_warmed_up_once_and_the_warm_up_is_not_counted(client: Orchestrator) -> None:
    result = orchlab.compare(PROMPTS, TARGETS, client=client, progress=False)
    for target, calls in calls_per_target(client).items():
        assert len(calls) == len(PROMPTS) + 1
        warm = calls[0]
        assert (warm.prompt, warm.params.max_tokens) == (PROMPTS[0], 1)
        assert all(c.params.max_tokens != 1 for c in calls[1:])
        assert result.warmup[target].error is None
    assert "cold start" not in set(result.results["answer"])  # the cold call is the warm-up's
    assert result.summary["prompts"].tolist() == [2, 2, 2]
    assert "latency excludes one warm-up call per target" in repr(result)


def test_without_warm_up_the_first_call_is_a_result(client: Orchestrator) -> None:
    result = orchlab.compare(PROMPTS, TARGETS, client=client, progress=False, warmup=False)
    assert result.warmup == {}
    assert result.answers.loc[("0", PROMPTS[0]), "cheap"] == "cold start"
    assert {t: len(c) for t, c in calls_per_target(client).items()} == {t: 2 for t in TARGETS}
    assert "latency includes each target's first call (no warm-up)" in repr(result)


def test_the_warm_up_is_not_a_trace(tracked: Orchestrator) -> None:
    result = orchlab.compare(PROMPTS, TARGETS, client=tracked, progress=False)
    assert orchlab.flush(timeout=120)
    traced = orchlab.history(client=tracked, limit=None)
    assert sorted(traced["trace_id"]) == sorted(result.results["trace_id"])
    assert len(traced) == len(PROMPTS) * len(TARGETS)
    assert {t: len(c) for t, c in calls_per_target(tracked).items()} == {t: 3 for t in TARGETS}


# --- what a comparison leaves in MLflow ---------------------------------------------------------


def mlflow_client(client: Orchestrator):  # type: ignore[no-untyped-def]
    import mlflow

    return mlflow.MlflowClient(tracking_uri=client.tracking.settings.tracking_uri)


def test_ratings_reach_the_runs_without_a_refresh(tracked: Orchestrator) -> None:
    from orchlab.widgets.compare import ComparePanel, run_targets

    result = orchlab.compare(PROMPTS, TARGETS, client=tracked, progress=False)
    result.rate(0, "cheap", 5)
    result.rate(1, "cheap", 1)  # at once: the later mean must win, though it is the smaller
    tracked.feedback(result.results.query("target == 'big'")["trace_id"].iloc[0], 4)  # any way in
    (view,) = run_targets(tracked, "What is 2+2?", ["mid"])
    panel = ComparePanel([view], client=tracked)
    panel.feedback["mid"].stars[1].click()  # 2★ clicked in the compare view
    assert orchlab.flush(timeout=120)

    mc = mlflow_client(tracked)
    cheap = result.runs["cheap"]
    assert mc.get_run(cheap).data.metrics["mean_rating"] == 3.0
    assert mc.get_run(cheap).data.metrics["rated"] == 2.0
    history = sorted(mc.get_metric_history(cheap, "mean_rating"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(1, 5.0), (2, 3.0)]
    assert mc.get_run(result.runs["big"]).data.metrics["mean_rating"] == 4.0
    assert "mean_rating" not in mc.get_run(result.runs["mid"]).data.metrics
    assert view.comparison is not None
    assert mc.get_run(view.comparison.runs["mid"]).data.metrics["mean_rating"] == 2.0
    assert result.summary["mean_rating"].tolist()[0] == 3.0


def test_runs_are_named_target_first_with_the_figure_and_the_warm_up(tracked: Orchestrator) -> None:
    result = orchlab.compare(PROMPTS, TARGETS, client=tracked, progress=False, name="cmp 1")
    assert orchlab.flush(timeout=120)
    mc = mlflow_client(tracked)
    for target, run_id in result.runs.items():
        run = mc.get_run(run_id)
        assert run.info.run_name == f"{target} · cmp 1"
        assert run.data.params["warmup"] == "true"
        assert run.data.metrics["warmup_s"] == pytest.approx(result.warmup[target].latency_s)
        (artifact,) = mc.list_artifacts(run_id)
        assert artifact.path == "comparison.png"
        assert Path(mc.download_artifacts(run_id, "comparison.png")).read_bytes().startswith(PNG)
    exp = mc.get_experiment_by_name(tracked.tracking.settings.experiment)
    assert exp.name == "cmp · dev"  # MLflow's header shows what follows a "/": no "/" in it
    traces = mc.search_traces(locations=[exp.experiment_id])
    names = {t.info.tags["mlflow.traceName"] for t in traces}
    assert names == {"cheap → fake:cheap", "mid → fake:mid", "big → fake:big"}
    assert {t.info.request_preview for t in traces} == set(PROMPTS)  # MLflow's "Input" column
    assert {t.info.response_preview for t in traces} == {"four", "it is four, I think", "2 + 2 =\n4"}
    big = [t.info for t in traces if t.info.tags["orchlab.role"] == "big"]
    assert [i.token_usage["total_tokens"] for i in big] == [3 + 5, 3 + 5]  # MLflow's "Tokens" column
    cost = json.loads(big[0].trace_metadata["mlflow.trace.cost"])  # MLflow's "Cost" column: orchlab's
    assert cost["total_cost"] == pytest.approx(result.summary.loc["big", "mean_cost_usd"])


def test_without_warm_up_the_runs_say_so(tracked: Orchestrator) -> None:
    result = orchlab.compare(PROMPTS, ["cheap"], client=tracked, progress=False, warmup=False)
    assert orchlab.flush(timeout=120)
    run = mlflow_client(tracked).get_run(result.runs["cheap"])
    assert run.data.params["warmup"] == "false" and "warmup_s" not in run.data.metrics


# --- quality against cost, the Pareto front, the picture ----------------------------------------


def test_pareto_front_is_the_targets_nothing_beats_for_less() -> None:
    summary = pd.DataFrame(
        {
            "mean_cost_usd": [1e-5, 5e-5, 9e-5, 5e-5, None],
            "mean_rating": [3.0, 2.0, 5.0, 4.0, 5.0],
        },
        index=["cheap", "worse", "best", "middle", "unpriced"],
    )
    points = {p.target: p for p in pareto_points(summary, "mean_rating")}
    assert {t for t, p in points.items() if p.on_front} == {"cheap", "middle", "best"}
    assert points["worse"].cost_per_1k == pytest.approx(0.05)  # $ per 1,000 calls
    assert points["unpriced"].cost_per_1k is None and not points["unpriced"].on_front
    tie = pd.DataFrame({"mean_cost_usd": [0.0, 0.0], "mean_rating": [4.0, 4.0]}, index=["a", "b"])
    assert [p.on_front for p in pareto_points(tie, "mean_rating")] == [True, True]


def test_rated_comparison_plots_rating_against_cost_per_1000_calls(tracked: Orchestrator) -> None:
    result = orchlab.compare(PROMPTS, TARGETS, client=tracked, progress=False)
    for target, stars in {"cheap": [3, 3], "mid": [2, 2], "big": [5, 4]}.items():
        for i, s in enumerate(stars):
            result.rate(i, target, s)
    result.rate(1, "mid", False)
    assert "👎" in result.results._repr_html_()
    history = orchlab.history(client=tracked, thumbs=False)
    assert history["thumbs"].tolist() == [False] and "<td style='vertical-align:top'>👎</td>" in (
        history._repr_html_()
    )
    pareto = result.pareto()
    assert pareto["on_front"].to_dict() == {"cheap": True, "mid": False, "big": True}
    assert pareto["mean_rating"].to_dict() == {"cheap": 3.0, "mid": 2.0, "big": 4.5}
    # "What is 2+2?" is 3 words in, "four" 1 word out: 3 x $1 + 1 x $2 per million tokens
    cheap_first = 3 * 1.0 + 1 * 2.0
    cheap_second = 3 * 1.0 + 1 * 2.0
    assert pareto.loc["cheap", "cost_per_1k_calls_usd"] == pytest.approx(
        1000 * (cheap_first + cheap_second) / 2 / 1e6
    )
    assert result.summary.loc["big", "cost_per_1k_calls_usd"] == pytest.approx(
        pareto.loc["big", "cost_per_1k_calls_usd"]
    )

    fig = result.plot()
    quality_ax, latency_ax = fig.axes
    assert quality_ax.get_xlabel() == "$ per 1,000 calls"
    assert quality_ax.get_ylabel() == "mean rating (1-5)"
    (front,) = quality_ax.get_lines()
    xs, ys = front.get_data()
    assert list(ys) == [3.0, 4.5]  # cheap, then big: the front, cheapest first
    assert list(xs) == pytest.approx(pareto.loc[["cheap", "big"], "cost_per_1k_calls_usd"].tolist())
    assert sorted(t.get_text() for t in quality_ax.texts) == ["big", "cheap", "mid"]
    fig.savefig(io.BytesIO(), format="png")  # draws the ticks
    ticks = [t.get_text() for t in quality_ax.get_xticklabels() if t.get_text()]
    assert ticks[0] == "$0" and len(ticks) >= 3
    assert all(re.fullmatch(r"\$\d+\.\d\d+", t) for t in ticks[1:]), ticks  # no 1e-5
    assert len({len(t.partition(".")[2]) for t in ticks[1:]}) == 1, ticks  # one number of decimals
    assert quality_ax.xaxis.get_offset_text().get_text() == ""
    assert [t.get_text() for t in latency_ax.get_yticklabels()] == TARGETS


def test_plot_displays_itself_as_a_png(client: Orchestrator) -> None:
    result = orchlab.compare(PROMPTS, TARGETS, client=client, progress=False)
    data, _ = DisplayFormatter().format(result.plot())
    assert data["image/png"].startswith(PNG) and len(data["image/png"]) > 10_000
    assert data["text/plain"].startswith("<ComparisonFigure size 1100x420")
    # unrated: the quality axis falls back to the success rate, and says so
    assert result.plot().axes[0].get_ylabel() == "success rate"
    with pytest.raises(InvalidRequestError, match="quality='accuracy'"):
        result.pareto("accuracy")


# --- tables -------------------------------------------------------------------------------------


def test_answers_are_left_aligned_and_wrapped_with_line_breaks(client: Orchestrator) -> None:
    result = orchlab.compare(PROMPTS, TARGETS, client=client, progress=False)
    answers = result.answers
    assert answers.loc[("0", PROMPTS[0]), "big"] == "2 + 2 =\n4"  # the data is unchanged
    page = answers._repr_html_()
    left = "<th style='text-align:left'>"
    assert f"<th>target</th>{left}cheap</th>{left}mid</th>{left}big</th>" in page
    cell = re.search(r"<div style='([^']*)'>2 \+ 2 =\n4</div>", page)
    assert cell is not None
    assert "text-align:left" in cell.group(1) and "white-space:pre-wrap" in cell.group(1)
    assert "2 + 2 =\\n4" in repr(answers)  # plain text keeps one line per row


def test_thumbs_show_as_emoji_and_costs_in_dollars() -> None:
    frame = readable(
        pd.DataFrame(
            {
                "answer": ["<b>yes</b>", "no", "maybe"],
                "thumbs": [True, False, None],
                "cost_usd": [6.3e-6, 0.0, None],
                "rating": [4.0, None, 2.5],
            }
        )
    )
    page = frame._repr_html_()
    rows = re.findall(r"<tr>(.*?)</tr>", page)[1:]
    cells = [re.findall(r"<td[^>]*>(?:<div[^>]*>)?(.*?)(?:</div>)?</td>", r) for r in rows]
    assert cells == [
        ["&lt;b&gt;yes&lt;/b&gt;", "👍", "$0.0000063", "4.0"],
        ["no", "👎", "$0", ""],
        ["maybe", "", "", "2.5"],
    ]
    text = repr(frame)
    assert "👍" in text and "👎" in text and "True" not in text and "None" not in text
    assert frame["thumbs"].tolist() == [True, False, None]  # shown differently, stored the same
    sliced = frame[["answer", "thumbs"]].sort_values("answer").reset_index(drop=True)
    assert "👎" in sliced._repr_html_()  # slicing and sorting keep the rendering


def test_long_tables_are_cut_like_pandas_does() -> None:
    frame = readable(pd.DataFrame({"answer": [f"answer {i}" for i in range(200)]}))
    with pd.option_context("display.max_rows", 20, "display.min_rows", 6):
        page = frame._repr_html_()
    assert page.count("<tr>") == 1 + 6 + 1  # header, 3 + 3 rows, the gap
    assert "… 194 more rows …" in page and "answer 199" in page and "answer 3" not in page


# --- MLflow's UI: the store used, a command that works as printed, the port ----------------------


def settings(uri: str) -> TrackingSettings:
    return TrackingSettings(True, uri, "orchlab/cmp/dev", Path("/tmp/spool"))


def test_ui_command_names_the_store_in_use_and_this_venvs_mlflow(tmp_path: Path) -> None:
    command = server_command(settings(f"sqlite:///{tmp_path}/elsewhere.db"))
    assert command == (
        f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {Path(sys.executable).parent / 'mlflow'} server "
        f"--backend-store-uri sqlite:///{tmp_path}/elsewhere.db --workers 1 --host 127.0.0.1 --port 5000"
    )
    assert server_command(settings("http://mlflow.internal:5000")) is None
    hint = repr(ui_hint(settings("http://mlflow.internal:5000")))
    assert hint.endswith("its UI: http://mlflow.internal:5000")


def test_ui_port_comes_from_the_argument_then_orch_mlflow_port(
    client: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = orchlab.compare(PROMPTS[:1], TARGETS[:1], client=client, progress=False)
    assert result.ui_url().startswith("http://127.0.0.1:5000/#/compare-runs?runs=")
    monkeypatch.setenv("ORCH_MLFLOW_PORT", "5123")
    assert result.ui_url().startswith("http://127.0.0.1:5123/#/")
    assert result.ui_url(port=5400).startswith("http://127.0.0.1:5400/#/")
    assert server_command(settings("sqlite:////x/m.db")).endswith("--port 5123")  # type: ignore[union-attr]
    monkeypatch.setenv("ORCH_MLFLOW_PORT", "http")
    with pytest.raises(ConfigValidationError, match="ORCH_MLFLOW_PORT='http': expected a TCP port"):
        result.ui_url()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.server
def test_the_printed_command_starts_a_ui_on_the_store(store: Path, tmp_path: Path) -> None:
    hint = ui_hint(settings(f"sqlite:///{store}"), port=free_port())
    assert hint.command is not None
    proc = subprocess.Popen(
        ["bash", "-c", hint.command],  # as a user pastes it into a terminal
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"the printed command exited with {proc.returncode}"
            try:
                with urllib.request.urlopen(
                    f"{hint.url}/api/2.0/mlflow/experiments/search?max_results=5"
                ) as r:
                    assert b'"experiments"' in r.read()
                    break
            except OSError:
                assert time.monotonic() < deadline, "no UI after 90 s"
                time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_urn_is_a_compare_target_answered_as_run_answers_it(client: Orchestrator) -> None:
    urn = "urn:orchlab:fallback:candidates=fake:big,fake:mid"
    result = orchlab.compare(PROMPTS, ["mid", urn], client=client, progress=False, warmup=False)
    assert result.answers.loc[("0", PROMPTS[0]), urn] == "2 + 2 =\n4"  # the fallback's first candidate
    assert result.answers.loc[("0", PROMPTS[0]), "mid"] == "it is four, I think"
    with pytest.raises(orchlab.ConfigError, match="fallbak"):
        orchlab.compare(PROMPTS, ["urn:orchlab:fallbak:candidates=fake:big"], client=client, progress=False)
