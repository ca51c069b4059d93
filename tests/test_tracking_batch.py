"""The drain's batched trace writes (one ``log_spans`` per batch) against real MLflow SQLite stores.

A trace written batched must read back, through MLflow's public reading API, as the same trace the
public tracing API writes; a burst must land exactly once; a record the store refuses must not
take the rest of its batch with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchlab.calls import CallContext, CallRecord
from orchlab.tracking.drain import MAX_BATCH, NICE, REJECTED_FILE, STATUS_FILE
from orchlab.tracking.journal import Journal, Progress, journals
from orchlab.tracking.mlflow_writes import PUBLIC_ONLY_METADATA, MlflowWriter
from orchlab.tracking.records import feedback_payload, new_trace_id, trace_payload
from orchlab.tracking.settings import TrackingSettings
from orchlab.types import Attempt, Decision, LLMResponse, Message, Usage
from tests.tracking_support import (  # noqa: F401  (the *_fixture names register fixtures)
    mlflow_client,
    template_db_fixture,
    tracking_on_fixture,
    wait_until,
)

EXPERIMENT = "trk/batch"


@pytest.fixture(autouse=True)
def drain_like(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A writer in this process sets what the drain process sets: undone after each test."""
    import mlflow

    for name in (
        "MLFLOW_USE_DEFAULT_TRACER_PROVIDER",
        "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING",
        "ORCH_TRACKING_BATCH",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_MODEL_CATALOG_URI", "")
    uri = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(uri)


def settings_for(folder: Path, template_db: Path) -> TrackingSettings:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template_db, folder / "mlflow.db")
    return TrackingSettings(
        enabled=True,
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
        experiment=EXPERIMENT,
        spool_dir=folder / "spool",
    )


def a_record(i: int, *, t0: float = 1_800_000_000.0) -> dict[str, Any]:
    """A fallback call: a failed attempt with an error event, then a priced answer with tokens."""
    t = t0 + i
    failed = Attempt(
        "loop", "big", "error", 0.25, stage="fallback 1", started_at=t, error="HTTP 500",
        error_type="ProviderUnavailableError", params={"temperature": 0},
    )  # fmt: skip
    ok = Attempt(
        "loop", "cheap", "ok", 0.5, Usage(13, 7), cost_usd=0.0000164, stage="fallback 2",
        started_at=t + 0.25, output=f"answer {i}", params={"temperature": 0},
    )  # fmt: skip
    ctx = CallContext(role="safe", strategy="fallback", messages=(Message("user", f"question {i}?"),))
    ctx.started_at, ctx.attempts = t, [failed, ok]
    decision = Decision("fallback", attempts=tuple(ctx.attempts), winner="loop:cheap", rationale="r")
    response = LLMResponse(
        f"answer {i}", "loop", "cheap", usage=Usage(13, 7), cost_usd=0.0000164, decision=decision
    )
    return trace_payload(
        CallRecord(ctx, response, None, t + 0.8), new_trace_id(), link=None,
        base_tags={"orchlab.project": "trk"}, provider_kinds={"loop": "openai"}, secrets=(),
    )  # fmt: skip


def read_back(uri: str, trace_id: str) -> dict[str, Any]:
    """What MLflow's public reading API says about a trace (span ids, random per write, left out)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    trace = mlflow.get_trace(trace_id)
    assert trace is not None
    info = trace.info
    (found,) = [
        t
        for t in mlflow.search_traces(
            locations=[info.experiment_id], filter_string=f"trace.request_id = '{trace_id}'",
            return_type="list",
        )
    ]  # fmt: skip
    assert found.info.tags == info.tags and found.info.trace_metadata == info.trace_metadata
    tags = dict(info.tags)
    location = tags.pop("mlflow.artifactLocation")
    assert location.endswith(f"/traces/{trace_id}/artifacts")
    spans = []
    for span in trace.data.spans:
        d = dict(span.to_dict())
        d.pop("span_id"), d.pop("parent_span_id")
        spans.append(d)
    return {
        "tags": tags,
        "metadata": dict(info.trace_metadata),
        "token_usage": info.token_usage,
        "cost": info.trace_metadata.get("mlflow.trace.cost"),
        "state": info.state,
        "request_time": info.request_time,
        "execution_duration": info.execution_duration,
        "request_preview": info.request_preview,
        "response_preview": info.response_preview,
        "assessments": [
            (a.name, a.value, a.source.source_type, a.source.source_id, a.rationale, a.metadata)
            for a in info.assessments
        ],
        "spans": spans,
    }


WRITE = """
import json, sys
from pathlib import Path
from orchlab.tracking.mlflow_writes import MlflowWriter
from orchlab.tracking.settings import TrackingSettings
uri, folder, given = sys.argv[1:]
records, rating = json.loads(Path(given).read_text())
writer = MlflowWriter(TrackingSettings(True, uri, "trk/batch", Path(folder)))
print(json.dumps({"batched": writer.batch_store is not None,
                  "failed": list(writer.write_traces(records, "trk/batch"))}))
writer.write_feedback(rating, maybe_stored=False)
"""


def write_in_a_drain_process(settings: TrackingSettings, given: Path, *, batch: bool) -> dict[str, Any]:
    """Write as the drain does, in a process of its own (MLflow's tracing keeps one store per
    process: a second store in a process would reset the tracer provider the public path uses)."""
    env = {**os.environ, "ORCH_TRACKING_BATCH": "1" if batch else "0"}
    done = subprocess.run(
        [sys.executable, "-c", WRITE, settings.tracking_uri, str(settings.spool_dir), str(given)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return out


def test_a_trace_reads_back_the_same_batched_or_through_the_public_api(
    tmp_path: Path, template_db: Path
) -> None:
    records = [a_record(i) for i in range(3)]
    rating = feedback_payload(
        records[1]["trace_id"], "rating", 4, comment="good", user="ana", time_ms=1_800_000_001_000
    )
    given = tmp_path / "records.json"
    given.write_text(json.dumps([records, rating]))
    read = {}
    for way in ("public", "batched"):
        settings = settings_for(tmp_path / way, template_db)
        result = write_in_a_drain_process(settings, given, batch=way == "batched")
        assert result == {"batched": way == "batched", "failed": []}
        read[way] = [read_back(settings.tracking_uri, r["trace_id"]) for r in records]

    for public, batched in zip(read["public"], read["batched"], strict=True):
        only_public = set(public["metadata"]) - set(batched["metadata"])
        assert only_public <= PUBLIC_ONLY_METADATA, only_public  # pinned: nothing else may differ
        assert {k: v for k, v in public["metadata"].items() if k not in only_public} == batched["metadata"]
        public.pop("metadata"), batched.pop("metadata")
        assert public == batched
    first = read["batched"][0]
    assert first["tags"]["orchlab.role"] == "safe" and first["tags"]["mlflow.traceName"] == "safe → fallback"
    assert first["token_usage"] == {"input_tokens": 13, "output_tokens": 7, "total_tokens": 20}
    assert json.loads(first["cost"])["total_cost"] == pytest.approx(0.0000164)
    assert [s["name"] for s in first["spans"]] == ["safe", "fallback 1 loop:big", "fallback 2 loop:cheap"]
    assert first["spans"][1]["events"][0]["attributes"]["exception.message"] == "HTTP 500"
    assert read["batched"][1]["assessments"] == [
        ("rating", 4, "HUMAN", "ana", "good", {"orchlab.record_id": rating["id"]})
    ]


def test_a_batch_is_one_store_call_and_an_untested_mlflow_takes_the_public_path(
    tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    writer = MlflowWriter(settings_for(tmp_path / "a", template_db))
    calls: list[int] = []
    log_spans = writer.batch_store.log_spans

    def counted(location: str, spans: list[Any]) -> Any:
        calls.append(len(spans))
        return log_spans(location, spans)

    monkeypatch.setattr(writer.batch_store, "log_spans", counted)
    records = [a_record(i) for i in range(20)]
    assert writer.write_traces(records, EXPERIMENT) == {}
    assert calls == [60]  # 20 traces of 3 spans, one call

    monkeypatch.setattr(mlflow, "__version__", "3.18.0")  # the public path (read back above)
    assert MlflowWriter(writer.settings).batch_store is None


def run_drain(store_dir: Path) -> None:
    """One drain process until it has written everything and gone idle."""
    done = subprocess.run(
        [sys.executable, "-m", "orchlab.tracking.drain", str(store_dir), "--idle", "0.5"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def stored_trace_ids(settings: TrackingSettings) -> list[str]:
    client = mlflow_client(settings.tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    ids, token = [], None
    while True:
        page = client.search_traces(
            locations=[exp.experiment_id], max_results=500, page_token=token, include_spans=False
        )
        ids += [t.info.trace_id for t in page]
        token = page.token
        if not token:
            return ids


def test_a_burst_written_in_batches_ends_with_every_trace_exactly_once(
    tmp_path: Path, template_db: Path
) -> None:
    settings = settings_for(tmp_path, template_db)
    journal = Journal(settings)
    records = [a_record(i) for i in range(2 * MAX_BATCH + 17)]
    half = len(records) // 2
    for record in records[:half]:
        journal.append(record)
    # As a drain killed after writing a batch and before recording it leaves the journal:
    (path,) = journals(settings.store_dir)
    header_end = len(path.read_bytes().splitlines(keepends=True)[0])
    writer = MlflowWriter(settings)
    assert writer.write_traces(records[:MAX_BATCH], EXPERIMENT) == {}
    Progress(header_end, path.stat().st_size).write(path)
    for record in records[half:]:
        journal.append(record)
    journal.close()

    run_drain(settings.store_dir)

    ids = stored_trace_ids(settings)
    assert len(ids) == len(records)  # none twice
    assert set(ids) == {r["trace_id"] for r in records}  # none lost
    status = json.loads((settings.store_dir / STATUS_FILE).read_text())
    assert status["written"] == len(records) and status["rejected"] == 0


def test_a_record_the_store_refuses_fails_alone_and_the_rest_of_its_batch_is_stored(
    tmp_path: Path, template_db: Path
) -> None:
    settings = settings_for(tmp_path, template_db)
    journal = Journal(settings)
    records = [a_record(i) for i in range(30)]
    poison = records[12]
    poison["tags"]["mlflow.traceName"] = "x" * 5000  # MLflow refuses a trace name this long
    for record in records:
        journal.append(record)
    journal.close()

    run_drain(settings.store_dir)

    ids = stored_trace_ids(settings)
    assert sorted(ids) == sorted(r["trace_id"] for r in records if r is not poison)
    (kept,) = (settings.store_dir / REJECTED_FILE).read_text().splitlines()
    assert json.loads(kept)["record"]["trace_id"] == poison["trace_id"]
    assert "Trace name" in json.loads(kept)["error"]
    status = json.loads((settings.store_dir / STATUS_FILE).read_text())
    assert status["written"] == len(records) - 1 and status["rejected"] == 1
    assert not journals(settings.store_dir)  # all written or put aside: the journal is gone


def test_a_record_that_is_not_a_trace_the_drain_can_build_fails_alone(
    tmp_path: Path, template_db: Path
) -> None:
    writer = MlflowWriter(settings_for(tmp_path, template_db))
    records = [a_record(i) for i in range(4)]
    del records[2]["spans"][1]["name"]
    failed = writer.write_traces(records, EXPERIMENT)
    assert list(failed) == [records[2]["trace_id"]] and isinstance(failed[records[2]["trace_id"]], KeyError)
    assert sorted(stored_trace_ids(writer.settings)) == sorted(
        r["trace_id"] for r in records if r is not records[2]
    )


def test_the_drain_runs_below_its_callers_cpu_priority(tmp_path: Path, template_db: Path) -> None:
    settings = settings_for(tmp_path, template_db)
    journal = Journal(settings)
    journal.append(a_record(0))
    journal.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchlab.tracking.drain", str(settings.store_dir), "--idle", "30"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: (settings.store_dir / STATUS_FILE).exists(), 60, "the drain's status")
        expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICE)
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == expected
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_the_drain_waits_for_a_burst_of_calls_then_writes_it_all(tmp_path: Path, template_db: Path) -> None:
    """Records appended every 20 ms for ~3 s (a burst, under MAX_DEFER_S): the drain writes none of
    them while they keep coming, and all of them once they stop."""
    from orchlab.tracking.drain import MAX_DEFER_S, QUIET_S

    settings = settings_for(tmp_path, template_db)
    journal = Journal(settings)
    records = [a_record(0)]
    journal.append(records[0])
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchlab.tracking.drain", str(settings.store_dir), "--idle", "30"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    status_file = settings.store_dir / STATUS_FILE
    try:
        wait_until(status_file.exists, 60, "the drain's status")  # it is up and watching
        burst = min(3.0, MAX_DEFER_S - 1.0)
        started, written_during = time.monotonic(), []
        while time.monotonic() - started < burst:
            records.append(a_record(len(records)))
            journal.append(records[-1])
            time.sleep(QUIET_S / 12)
            written_during.append(json.loads(status_file.read_text())["written"])
        assert set(written_during) == {0}  # nothing written while the calls kept coming
        journal.close()
        done = len(records)
        wait_until(lambda: json.loads(status_file.read_text())["written"] == done, 120, "the burst written")
        assert sorted(stored_trace_ids(settings)) == sorted(r["trace_id"] for r in records)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
