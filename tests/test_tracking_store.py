"""Tracking against a real MLflow SQLite store and real calls on the loopback server.

The module's tests share one store (an experiment each) and so one drain process.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import orchlab
from orchlab.calls import CallContext, CallRecord
from orchlab.errors import OrchlabWarning, PromptError, TrackingError
from orchlab.tracking import observer
from orchlab.tracking.context import untracked
from orchlab.tracking.journal import Journal, Progress
from tests.servers.openai_wire import OpenAIWireServer, Reply, stream_chunks
from tests.tracking_support import (  # noqa: F401  (the *_fixture names register fixtures)
    API_KEY,
    all_traces,
    experiment_fixture,
    experiment_id,
    loop_config_fixture,
    mlflow_client,
    shared_store_fixture,
    stop_drains,
    template_db_fixture,
    trace_info,
    tracking_on_fixture,
)

ASK = [{"role": "user", "content": "What is 2+2?"}]


def flushed() -> None:
    assert orchlab.flush(timeout=120), orchlab.tracking.api.tracking_status()


def uri_of(client: orchlab.Orchestrator) -> str:
    return client.tracking.settings.tracking_uri


def test_every_call_is_a_trace_with_its_tokens_and_cost(loop_config: Path, experiment: str) -> None:
    client = orchlab.get_llm_client(loop_config)
    responses = [client.run("chat", [{"role": "user", "content": f"question {i}"}]) for i in range(5)]
    assert all(r.trace_id and r.trace_id.startswith("tr-") for r in responses)
    flushed()

    traces = {t.info.trace_id: t for t in all_traces(uri_of(client), experiment)}
    assert set(traces) == {r.trace_id for r in responses}
    for r in responses:
        info = traces[r.trace_id].info
        assert info.token_usage == {
            "input_tokens": r.usage.input_tokens,
            "output_tokens": r.usage.output_tokens,
            "total_tokens": r.usage.total_tokens,
        }
        # 2 words in, 3 out at $1 / $2 per million tokens: orchlab's cost, stored as MLflow's
        assert r.cost_usd == pytest.approx((2 * 1.0 + 3 * 2.0) / 1e6)
        assert json.loads(info.trace_metadata["mlflow.trace.cost"])["total_cost"] == pytest.approx(r.cost_usd)
        assert info.tags["orchlab.role"] == "chat" and info.tags["orchlab.model"] == "cheap"
        assert info.request_preview == r.content.removeprefix("echo: ")
        assert info.response_preview == r.content
        assert info.state.value == "OK"

    full = mlflow_client(uri_of(client)).get_trace(responses[0].trace_id, display=False)
    root, attempt = full.data.spans
    assert root.parent_id is None and attempt.parent_id == root.span_id
    assert attempt.span_type == "CHAT_MODEL" and attempt.name == "loop:cheap"
    recorded = responses[0].decision.attempts[0]
    assert attempt.start_time_ns == int(recorded.started_at * 1e9)
    assert attempt.end_time_ns == int((recorded.started_at + recorded.latency_s) * 1e9)
    assert attempt.get_attribute("mlflow.chat.tokenUsage")["output_tokens"] == 3
    assert attempt.get_attribute("mlflow.llm.cost") == {"total_cost": pytest.approx(responses[0].cost_usd)}
    assert attempt.get_attribute("orchlab.params") == {"temperature": 0}
    assert attempt.inputs["messages"] == [{"role": "user", "content": "question 0"}]
    assert root.get_attribute("orchlab.decision")["winner"] == "loop:cheap"


def test_a_rating_given_at_once_is_stored_with_a_human_source(loop_config: Path, experiment: str) -> None:
    client = orchlab.get_llm_client(loop_config)
    first = client.run("chat", ASK)
    stored = client.feedback(first, 5, comment="spot on", user="ann")  # before any flush
    second = client.run("chat", ASK)
    client.feedback(second.trace_id, "down")
    assert stored.queued and (stored.name, stored.value, stored.user) == ("rating", 5, "ann")
    flushed()

    info = trace_info(uri_of(client), first.trace_id)
    (rating,) = info.assessments
    assert (rating.name, rating.value, rating.rationale) == ("rating", 5, "spot on")
    assert rating.source.source_type == "HUMAN" and rating.source.source_id == "ann"
    thumbs = trace_info(uri_of(client), second.trace_id).assessments
    assert [(a.name, a.value, a.source.source_type) for a in thumbs] == [("thumbs", False, "HUMAN")]
    good = all_traces(uri_of(client), experiment, filter_string="feedback.rating >= 4")
    assert [t.info.trace_id for t in good] == [first.trace_id]


def test_ratings_of_earlier_sessions_are_checked_against_the_store(
    loop_config: Path, experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = orchlab.get_llm_client(loop_config)
    old = client.run("chat", ASK)
    flushed()
    monkeypatch.setattr(observer, "_known", observer.OrderedDict())  # as if another process made it
    stored = client.feedback(old.trace_id, 2)
    assert stored.queued  # checked against the store, then journaled
    flushed()
    assert [a.value for a in trace_info(uri_of(client), old.trace_id).assessments] == [2]
    with pytest.raises(TrackingError, match=r"no trace tr-0+1 in"):
        client.feedback("tr-" + "0" * 31 + "1", 3)


def test_attempts_of_a_fallback_are_child_spans(
    loop_config: Path, openai_server: OpenAIWireServer, experiment: str
) -> None:
    client = orchlab.get_llm_client(loop_config)
    openai_server.push(Reply.error(500, "the big model is down"))
    r = client.run("safe", ASK)
    assert r.model == "cheap" and r.decision is not None and r.decision.strategy == "fallback"
    flushed()

    trace = mlflow_client(uri_of(client)).get_trace(r.trace_id, display=False)
    root, *attempts = trace.data.spans
    assert [s.name.split()[-1] for s in attempts] == ["loop:big", "loop:cheap"]
    failed, ok = attempts
    assert failed.status.status_code == "ERROR" and "the big model is down" in failed.status.description
    assert failed.get_attribute("orchlab.error_type") == "ProviderUnavailableError"
    assert failed.get_attribute("orchlab.outcome") == "error"
    assert ok.get_attribute("orchlab.outcome") == "ok"
    assert root.get_attribute("orchlab.strategy") == "fallback"
    assert root.get_attribute("orchlab.decision")["winner"] == "loop:cheap"
    assert root.get_attribute("orchlab.decision")["rationale"] == r.decision.rationale
    assert trace.info.tags["orchlab.strategy"] == "fallback"
    assert json.loads(trace.info.trace_metadata["mlflow.trace.cost"])["total_cost"] == pytest.approx(
        r.cost_usd
    )


def test_failed_calls_and_streams_are_traced_too(
    loop_config: Path, openai_server: OpenAIWireServer, experiment: str
) -> None:
    client = orchlab.get_llm_client(loop_config)
    openai_server.push(Reply.error(400, "bad request"))
    with pytest.raises(orchlab.ProviderError) as info:
        client.run("chat", ASK)
    failed_id = info.value.trace_id  # type: ignore[attr-defined]
    openai_server.push(Reply(stream_chunks=stream_chunks(["one ", "two"], model="cheap", prompt_tokens=4)))
    stream = client.stream("chat", ASK)
    assert stream.text() == "one two"
    assert stream.response is not None
    flushed()

    failed = trace_info(uri_of(client), failed_id)
    assert failed.state.value == "ERROR" and failed.tags["orchlab.status"] == "error"
    streamed = trace_info(uri_of(client), stream.response.trace_id)
    assert streamed.token_usage["input_tokens"] == 4 and streamed.token_usage["output_tokens"] == 2


def test_calls_marked_not_to_log_are_not_traced(loop_config: Path, experiment: str) -> None:
    client = orchlab.get_llm_client(loop_config)
    kept = client.run("chat", ASK)
    with untracked():
        skipped = client.run("chat", ASK)
    ctx = CallContext(role="chat", strategy="single", messages=(), log=False)
    response = orchlab.LLMResponse("x", "loop", "cheap")
    client.tracking.call_finished(CallRecord(ctx, response, None, ctx.started_at))
    assert skipped.trace_id is None and response.trace_id is None
    flushed()
    assert [t.info.trace_id for t in all_traces(uri_of(client), experiment)] == [kept.trace_id]


def test_no_api_key_reaches_the_store(
    write_config: Callable[[str], Path],
    openai_server: OpenAIWireServer,
    monkeypatch: pytest.MonkeyPatch,
    shared_store: Path,
    experiment: str,
) -> None:
    monkeypatch.setenv("ORCH_AUTH_LOOP_API_KEY", API_KEY)
    path = write_config(
        f"""
        project: trk
        providers:
          loop: {{type: openai, api_base: "{openai_server.base_url}", auth_profile: loop}}
        roles:
          chat:
            provider: loop
            model: cheap
            params: {{extra: {{api_key: "{API_KEY}", user: "u1"}}}}
        """
    )
    client = orchlab.get_llm_client(path)
    r = client.run("chat", [{"role": "user", "content": f"my key is {API_KEY}"}])
    client.feedback(r, 4, comment=f"oops {API_KEY}")
    openai_server.push(Reply.error(401, f"Incorrect API key provided: {API_KEY}"))
    with pytest.raises(orchlab.ProviderError):
        client.run("chat", ASK)
    flushed()
    sent = {k.lower(): v for k, v in openai_server.requests[0].headers.items()}
    assert sent["authorization"] == f"Bearer {API_KEY}"  # the key was really used

    rows = 0
    with sqlite3.connect(shared_store / "mlflow.db") as db:
        tables = [n for (n,) in db.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            for row in db.execute(f'select * from "{table}"'):
                rows += 1
                assert API_KEY not in repr(row), f"the API key is stored in table {table}: {row!r}"
    assert rows > 20  # the traces, spans, tags and the rating were searched
    assert len(all_traces(uri_of(client), experiment)) == 2


def test_traces_belong_to_the_users_active_mlflow_run(loop_config: Path, experiment: str) -> None:
    import mlflow

    client = orchlab.get_llm_client(loop_config)
    uri = uri_of(client)
    own = mlflow_client(uri).create_experiment("my-experiment")
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=own) as run:
            inside = client.run("chat", ASK)
        outside = client.run("chat", ASK)
    finally:
        mlflow.set_tracking_uri(None)
    flushed()
    linked = mlflow_client(uri).search_traces(locations=[own], run_id=run.info.run_id)
    assert [t.info.trace_id for t in linked] == [inside.trace_id]
    assert [t.info.trace_id for t in all_traces(uri, experiment)] == [outside.trace_id]


def test_registered_prompts_are_versioned_and_recorded_on_the_trace(
    loop_config: Path, experiment: str
) -> None:
    client = orchlab.get_llm_client(loop_config)
    v1 = orchlab.register_prompt("greet", "Say hello to {{name}}.", commit_message="first")
    v2 = orchlab.register_prompt(
        "greet",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Greet {{name}}."}],
        alias="prod",
    )
    assert (v1.version, v2.version) == (1, 2) and v2.aliases == ("prod",)
    assert orchlab.load_prompt("greet@1").template == "Say hello to {{name}}."
    assert orchlab.load_prompt("greet@prod").version == 2
    assert orchlab.load_prompt("greet").version == 2
    with pytest.raises(PromptError, match="needs name"):
        v2.render()
    with pytest.raises(PromptError, match="could not load prompt 'nothing@1'"):
        orchlab.load_prompt("nothing@1")

    messages = orchlab.load_prompt("greet@prod").render(name="Ann")
    assert [(m.role, m.content) for m in messages] == [("system", "Be brief."), ("user", "Greet Ann.")]
    r = client.run("chat", messages)
    assert r.content == "echo: Greet Ann."
    flushed()
    info = trace_info(uri_of(client), r.trace_id)
    assert (info.tags["orchlab.prompt"], info.tags["orchlab.prompt_version"]) == ("greet", "2")
    assert json.loads(info.tags["mlflow.linkedPrompts"]) == [{"name": "greet", "version": "2"}]
    assert orchlab.history(prompt_name="greet")["trace_id"].tolist() == [r.trace_id]


def test_a_prompt_is_linked_only_to_traces_already_stored(loop_config: Path, experiment: str) -> None:
    """Notebook 04's red box, "could not link prompt capital/1 to trace ... not found", came from
    linking before the trace was written. The drain links a batch's prompts only after it has
    looked the batch's traces up in the store, so calls made the moment the prompt exists, rated
    at once, are all linked, and the drain never logs a failed link."""
    client = orchlab.get_llm_client(loop_config)
    orchlab.register_prompt("capital", "What is the capital of {{country}}?")
    prompt = orchlab.load_prompt("capital@1")
    responses = [client.run("chat", prompt.render(country=c)) for c in ("France", "Peru", "Chad") * 10]
    for r in responses:
        client.feedback(r, 4)
    flushed()
    uri = uri_of(client)
    for r in responses:
        info = trace_info(uri, r.trace_id)
        assert json.loads(info.tags["mlflow.linkedPrompts"]) == [{"name": "capital", "version": "1"}]
    log = client.tracking.settings.store_dir / "drain.log"
    assert "could not link" not in log.read_text(encoding="utf-8")


def test_history_and_usage_read_the_store_back(
    loop_config: Path, openai_server: OpenAIWireServer, experiment: str
) -> None:
    import datetime as dt

    client = orchlab.get_llm_client(loop_config)
    a = client.run("chat", ASK)
    b = client.run("chat", [{"role": "user", "content": "second"}])
    openai_server.push(Reply.error(500, "down"))
    c = client.run("safe", ASK)
    client.feedback(a, 5)
    client.feedback(b, 2)
    client.feedback(c, True)

    frame = orchlab.history()  # flushes first: the calls of a moment ago are there
    assert frame["trace_id"].tolist() == [c.trace_id, b.trace_id, a.trace_id]
    row = frame.set_index("trace_id").loc[b.trace_id]
    assert (row["role"], row["model"], row["rating"], row["answer"]) == ("chat", "cheap", 2, "echo: second")
    assert row["cost_usd"] == pytest.approx(b.cost_usd) and row["input_tokens"] == 1
    assert orchlab.history(min_rating=4)["trace_id"].tolist() == [a.trace_id]
    assert orchlab.history(role="safe")["strategy"].tolist() == ["fallback"]
    assert orchlab.history(thumbs=True)["trace_id"].tolist() == [c.trace_id]
    assert orchlab.history(since=dt.timedelta(minutes=5), limit=2)["trace_id"].tolist() == [
        c.trace_id,
        b.trace_id,
    ]
    assert orchlab.history(until=dt.datetime(2000, 1, 1)).empty

    usage = orchlab.usage_history(by="role").set_index("role")
    assert usage.loc["chat", "calls"] == 2 and usage.loc["safe", "calls"] == 1
    assert usage.loc["chat", "cost_usd"] == pytest.approx(a.cost_usd + b.cost_usd)
    assert usage.loc["chat", "mean_rating"] == 3.5
    assert usage.loc["safe", "input_tokens"] == c.usage.input_tokens


def test_compare_logs_one_run_per_target_with_its_traces(loop_config: Path, experiment: str) -> None:
    client = orchlab.get_llm_client(loop_config)
    prompts = Path(__file__).resolve().parents[1] / "data" / "prompts_small.jsonl"
    result = orchlab.compare(prompts, ["chat", "safe", "loop:big"], client=client, progress=False)

    answers = result.answers
    assert list(answers.columns) == ["chat", "safe", "loop:big"] and len(answers) == 6
    assert answers.loc[("arithmetic", "What is 2+2?"), "loop:big"] == "echo: What is 2+2?"
    summary = result.summary
    assert summary["success_rate"].tolist() == [1.0, 1.0, 1.0]
    assert summary.loc["chat", "total_cost_usd"] == pytest.approx(
        result.results.query("target == 'chat'")["cost_usd"].sum()
    )
    assert summary.loc["loop:big", "mean_cost_usd"] > summary.loc["chat", "mean_cost_usd"]

    result.rate("arithmetic", "chat", 4)
    result.rate(1, "chat", 2, comment="meh")
    client.feedback(result.results.query("target == 'safe'")["trace_id"].iloc[0], 5)  # rated elsewhere
    refreshed = result.refresh_ratings()
    assert refreshed.loc["chat", "mean_rating"] == 3.0 and refreshed.loc["safe", "mean_rating"] == 5.0
    flushed()

    uri = uri_of(client)
    mc = mlflow_client(uri)
    for target, run_id in result.runs.items():
        run = mc.get_run(run_id)
        assert run.info.status == "FINISHED" and run.info.experiment_id == experiment_id(uri, experiment)
        assert run.data.params["target"] == target
        metrics = run.data.metrics
        assert metrics["success_rate"] == 1.0 and metrics["prompts"] == 6
        assert metrics["total_cost_usd"] == pytest.approx(summary.loc[target, "total_cost_usd"])
        assert metrics["latency_p50_s"] == pytest.approx(summary.loc[target, "latency_p50_s"])
        assert metrics["output_tokens"] == summary.loc[target, "output_tokens"]
        linked = mc.search_traces(locations=[run.info.experiment_id], run_id=run_id)
        assert len(linked) == 6
        assert {t.info.tags["orchlab.compare_target"] for t in linked} == {target}
    assert mc.get_run(result.runs["chat"]).data.metrics["mean_rating"] == 3.0
    assert mc.get_run(result.runs["safe"]).data.params["strategy"] == "fallback"
    assert mc.get_run(result.runs["loop:big"]).data.params["model"] == "big"
    assert result.ui_url().startswith("http://127.0.0.1:5000/#/compare-runs?runs=[%22")

    fig = result.plot()
    quality_ax, _latency_ax = fig.axes
    assert [t.get_text() for t in quality_ax.texts] == [
        "chat",
        "safe",
        "not shown (unrated or unpriced): loop:big",
    ]
    fig.savefig(Path.cwd() / "compare.png")
    assert (Path.cwd() / "compare.png").stat().st_size > 10_000


def test_a_record_the_store_rejects_is_kept_and_reported_once(
    loop_config: Path, shared_store: Path, experiment: str
) -> None:
    client = orchlab.get_llm_client(loop_config)
    ok = client.run("chat", ASK)
    ghost = "tr-" + "f" * 32
    record = {"kind": "feedback", "id": "x1", "trace_id": ghost, "name": "rating", "value": 3, "user": "u"}
    client.tracking.journal.append(record)  # a rating of a trace no store has: MLflow refuses it
    with pytest.warns(OrchlabWarning, match=rf"rejected a feedback record for {ghost} 5 times"):
        assert orchlab.flush(timeout=60)
    kept = (client.tracking.settings.store_dir / "rejected.jsonl").read_text().splitlines()
    assert [json.loads(line)["record"]["trace_id"] for line in kept] == [ghost]
    assert trace_info(uri_of(client), ok.trace_id).trace_id == ok.trace_id
    later = client.run("chat", ASK)
    assert orchlab.flush(timeout=60)  # reported once: no second warning (warnings are errors here)
    assert trace_info(uri_of(client), later.trace_id).trace_id == later.trace_id


def test_a_batch_a_crashed_drain_left_pending_is_not_stored_twice(
    loop_config: Path, shared_store: Path, experiment: str
) -> None:
    client = orchlab.get_llm_client(loop_config)
    calls = [client.run("chat", [{"role": "user", "content": f"q{i}"}]) for i in range(3)]
    client.feedback(calls[0], 4)
    flushed()
    # As a drain killed after writing the batch and before recording it leaves the journal:
    stop_drains(shared_store / "spool")
    (journal,) = client.tracking.journal.written
    header_end = len(journal.read_bytes().splitlines(keepends=True)[0])
    Progress(header_end, journal.stat().st_size).write(journal)

    flushed()  # a new drain writes the pending batch again, looking first
    assert sorted(t.info.trace_id for t in all_traces(uri_of(client), experiment)) == sorted(
        r.trace_id for r in calls
    )
    assert [a.value for a in trace_info(uri_of(client), calls[0].trace_id).assessments] == [4]


def test_a_failing_tracker_never_fails_the_call(
    loop_config: Path, monkeypatch: pytest.MonkeyPatch, experiment: str
) -> None:
    client = orchlab.get_llm_client(loop_config)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("journal exploded")

    monkeypatch.setattr(Journal, "append", broken)
    with pytest.warns(OrchlabWarning, match="journal exploded"):
        r = client.run("chat", ASK)
    assert r.content == "echo: What is 2+2?"
    assert client.run("chat", ASK).content == "echo: What is 2+2?"  # warned once, still answering


def test_a_key_only_in_a_key_file_is_masked_before_its_provider_is_used(
    write_config: Callable[[str], Path],
    openai_server: OpenAIWireServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    shared_store: Path,
    experiment: str,
) -> None:
    file_key = "sk-file-only-7f3a9c2e5b1d4f60"
    (tmp_path / "other.key").write_text(file_key + "\n", encoding="utf-8")
    monkeypatch.setenv("ORCH_AUTH_LOOP_API_KEY", API_KEY)
    client = orchlab.get_llm_client(
        write_config(
            f"""
            project: trk
            providers:
              loop: {{type: openai, api_base: "{openai_server.base_url}", auth_profile: loop}}
              other: {{type: openai, api_base: "{openai_server.base_url}", key_file: other.key}}
              nokey: {{type: openai, api_base: "{openai_server.base_url}"}}
            roles:
              chat: {{provider: loop, model: cheap}}
            """
        )
    )
    r = client.run("chat", [{"role": "user", "content": f"the other key is {file_key}"}])  # 'other' unused
    assert r.content == f"echo: the other key is {file_key}"  # the provider saw it; the store must not
    flushed()
    trace = mlflow_client(uri_of(client)).get_trace(r.trace_id, display=False)
    root, attempt = trace.data.spans
    assert root.inputs["messages"][0]["content"] == "the other key is **********"
    assert attempt.outputs["choices"][0]["message"]["content"] == "echo: the other key is **********"
    with sqlite3.connect(shared_store / "mlflow.db") as db:
        for table in [n for (n,) in db.execute("select name from sqlite_master where type='table'")]:
            for row in db.execute(f'select * from "{table}"'):
                assert file_key not in repr(row), f"the key-file key is stored in table {table}"


def test_a_race_records_the_winner_and_the_cancelled_losers(
    write_config: Callable[[str], Path], experiment: str
) -> None:
    # The scripted test provider (a test double) stands in for models here: what is checked is
    # how a strategy's decision trail lands in MLflow, not what a model answers.
    client = orchlab.get_llm_client(
        write_config(
            """
            project: trk
            providers:
              quick:
                type: test
                options: {models: {m: {reply: "fast answer", latency_s: 0.02,
                                       input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}}
              slow:
                type: test
                options: {models: {m: {reply: "w1 w2 w3 w4 w5 w6 w7 w8", latency_s: 0.01, tokens_per_s: 20}}}
            roles:
              race: {provider: slow, model: m, strategy: parallel, candidates: ["quick:m"]}
            """
        )
    )
    r = client.run("race", ASK)
    assert r.target == "quick:m"
    flushed()

    trace = mlflow_client(uri_of(client)).get_trace(r.trace_id, display=False)
    root, *attempts = trace.data.spans
    outcomes = {s.get_attribute("orchlab.provider"): s.get_attribute("orchlab.outcome") for s in attempts}
    assert outcomes == {"quick": "ok", "slow": "cancelled"}
    loser = next(s for s in attempts if s.get_attribute("orchlab.provider") == "slow")
    # not an error; MLflow's public span API ends a span OK or ERROR (no UNSET), so the attribute says it
    assert loser.status.status_code == "OK" and loser.get_attribute("orchlab.outcome") == "cancelled"
    assert root.get_attribute("orchlab.strategy") == "parallel"
    assert root.get_attribute("orchlab.decision")["winner"] == "quick:m"
    assert trace.info.tags["orchlab.strategy"] == "parallel"
    # the loser has no price, so orchlab's total is unknown; MLflow sums the priced attempts only
    winner = next(a for a in r.decision.attempts if a.outcome == "ok")
    assert r.cost_usd is None and r.cost_note
    assert winner.cost_usd == pytest.approx((3 * 1.0 + 2 * 2.0) / 1e6)  # 3 words in, 2 out
    assert json.loads(trace.info.trace_metadata["mlflow.trace.cost"])["total_cost"] == winner.cost_usd
    assert root.get_attribute("orchlab.cost_note") == r.cost_note
