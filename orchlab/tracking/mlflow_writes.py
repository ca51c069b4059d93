"""Journal records into MLflow, through MLflow's public API only (this runs in the drain process).

- **Traces**: ``MlflowClient.start_trace`` / ``start_span`` / ``end_span`` / ``end_trace`` with the
  recorded start and end times. MLflow names a trace ``tr-<its OpenTelemetry trace id>``; so that
  the stored trace keeps the id the caller got, the drain installs an OpenTelemetry SDK
  ``TracerProvider`` whose id generator hands out that id (MLflow's unified provider mode,
  ``MLFLOW_USE_DEFAULT_TRACER_PROVIDER=false``, adds MLflow's span processors to a provider that
  is already set). MLflow's exporter reports a failed write only in a log line, so every batch is
  looked up in the store before (already stored: skipped, which makes a re-run after a crash
  harmless) and after (missing: failed).
- **Prompt links** (``link_prompt_versions_to_trace``) only for the traces of a batch that the
  lookup after writing found in the store: a link can never name a trace MLflow does not have yet
  (what "could not link prompt ... to trace ... not found" was, when the caller linked at once).
- **Ratings**: ``mlflow.log_assessment`` with a HUMAN-source `Feedback`; the record's id is kept in
  the feedback's metadata, so a rating is never stored twice.
- **Run records** (`orchlab.compare`): ``MlflowClient.log_batch`` (metrics at the record's step:
  a later value of a metric, e.g. ``mean_rating`` after a rating, takes a higher one) and
  ``set_terminated``.

The drain serves one store, so it may set MLflow's global tracking URI (``log_assessment`` uses it).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from orchlab.tracking.settings import TrackingSettings
from orchlab.tracking.store import (
    RECORD_ERRORS,
    experiment_id_by_name,
    get_trace_info,
    import_mlflow,
    open_client,
    store_reachable,
    trace_infos_by_id,
)

log = logging.getLogger("orchlab.tracking.drain")

RECORD_ID_KEY = "orchlab.record_id"


class TraceIdMismatch(RuntimeError):
    """MLflow stored a trace under another id than orchlab's: writing stops rather than go on."""


class NotStored(RuntimeError):
    """MLflow's exporter did not store a trace (its reason is in the drain's log)."""


class MlflowWriter:
    """The drain's handles on one store; ``write_*`` raise on failure (see `record_problem`)."""

    def __init__(self, settings: TrackingSettings) -> None:
        os.environ["MLFLOW_USE_DEFAULT_TRACER_PROVIDER"] = "false"
        os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
        self.settings = settings
        self.mlflow = import_mlflow()
        self.client = open_client(settings)
        self.mlflow.set_tracking_uri(settings.tracking_uri)
        self.ids = _install_trace_ids()
        self._experiments: dict[str, str] = {}
        self._prompt_versions: dict[tuple[str, str], Any] = {}

    # --- traces ----------------------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        exp = self._experiments.get(name)
        if exp is None:
            exp = experiment_id_by_name(self.client, name, self.settings.sqlite_path)
            assert exp is not None
            self._experiments[name] = exp
        return exp

    def write_traces(self, records: list[dict[str, Any]], experiment: str) -> dict[str, BaseException]:
        """Write the traces not yet stored; the ones that failed, by trace id, with the error."""
        default = self.experiment_id(experiment)
        locations = sorted({str(r.get("experiment_id") or default) for r in records})
        stored = set(trace_infos_by_id(self.client, locations, (r["trace_id"] for r in records)))
        failed: dict[str, BaseException] = {}
        written = []
        for record in records:
            if record["trace_id"] in stored:
                continue
            try:
                self._write_trace(record, str(record.get("experiment_id") or default))
            except TraceIdMismatch:
                raise
            except Exception as exc:
                failed[record["trace_id"]] = exc
            else:
                written.append(record)
        if written:
            now_stored = set(trace_infos_by_id(self.client, locations, (r["trace_id"] for r in written)))
            for record in written:
                if record["trace_id"] not in now_stored:
                    failed[record["trace_id"]] = NotStored(
                        f"MLflow did not store trace {record['trace_id']} (its reason is logged above)"
                    )
        ok = [r for r in records if r["trace_id"] not in failed]
        self._link(ok)
        return failed

    def _write_trace(self, record: dict[str, Any], experiment_id: str) -> None:
        from mlflow.entities import SpanStatus

        trace_id = record["trace_id"]
        root, *children = record["spans"]
        self.ids.next_trace_id = int(trace_id.removeprefix("tr-"), 16)
        span = self.client.start_trace(
            root["name"],
            span_type=root["type"],
            inputs=root["inputs"],
            attributes=root["attributes"],
            tags=record.get("tags") or {},
            experiment_id=experiment_id,
            start_time_ns=root["start_ns"],
            run_id=record.get("run_id"),
        )
        self.ids.next_trace_id = None
        if span.trace_id != trace_id:
            self.client.end_trace(span.trace_id, end_time_ns=root["end_ns"])
            raise TraceIdMismatch(
                f"MLflow {self.mlflow.__version__} stored a trace as {span.trace_id} instead of {trace_id}: "
                "orchlab stops writing traces (they stay in the journal) rather than store them under ids "
                "that no response carries; please report this"
            )
        try:
            for child in children:
                s = self.client.start_span(
                    child["name"],
                    trace_id=trace_id,
                    parent_id=span.span_id,
                    span_type=child["type"],
                    inputs=child["inputs"],
                    attributes=child["attributes"],
                    start_time_ns=child["start_ns"],
                )
                _add_error_event(s, child)
                self.client.end_span(
                    trace_id,
                    s.span_id,
                    outputs=child["outputs"],
                    status=SpanStatus(child["status"], _description(child)),
                    end_time_ns=child["end_ns"],
                )
            _add_error_event(span, root)
        finally:
            self.client.end_trace(
                trace_id,
                outputs=root["outputs"],
                status=SpanStatus(root["status"], _description(root)),
                end_time_ns=root["end_ns"],
            )

    def _link(self, records: list[dict[str, Any]]) -> None:
        by_run: dict[str, list[str]] = {}
        for record in records:
            if record.get("run_id"):
                by_run.setdefault(record["run_id"], []).append(record["trace_id"])
        for run_id, trace_ids in by_run.items():
            try:
                for i in range(0, len(trace_ids), 100):  # MLflow links at most 100 per request
                    self.client.link_traces_to_run(trace_ids[i : i + 100], run_id)
            except Exception as exc:
                # The traces are stored (and tagged); only the link to a run MLflow refused is missing.
                log.warning("could not link %d trace(s) to run %s: %s", len(trace_ids), run_id, exc)
        for record in records:
            for prompt in record.get("prompts", ()):
                self._link_prompt(record["trace_id"], prompt["name"], prompt["version"])

    def _link_prompt(self, trace_id: str, name: str, version: str) -> None:
        try:
            pv = self._prompt_versions.get((name, version))
            if pv is None:
                pv = self._prompt_versions[(name, version)] = self.client.get_prompt_version(name, version)
            self.client.link_prompt_versions_to_trace([pv], trace_id)
        except Exception as exc:
            # The trace itself is stored and tagged with the prompt; only MLflow's link is missing.
            log.warning("could not link prompt %s/%s to trace %s: %s", name, version, trace_id, exc)

    # --- ratings and runs -------------------------------------------------------------------

    def write_feedback(self, record: dict[str, Any], *, maybe_stored: bool) -> None:
        """``maybe_stored``: a crashed drain may have written it; look before writing again."""
        from mlflow.entities import AssessmentSource, AssessmentSourceType, Feedback

        record_id = str(record.get("id", ""))
        if maybe_stored and record_id:
            info = get_trace_info(self.client, record["trace_id"])
            if info is not None and any(
                (a.metadata or {}).get(RECORD_ID_KEY) == record_id for a in info.assessments or ()
            ):
                return
        feedback = Feedback(
            name=record["name"],
            value=record["value"],
            source=AssessmentSource(AssessmentSourceType.HUMAN, record["user"]),
            rationale=record.get("comment"),
            metadata={RECORD_ID_KEY: record_id} if record_id else None,
            create_time_ms=record.get("time_ms"),
            last_update_time_ms=record.get("time_ms"),
        )
        self.mlflow.log_assessment(record["trace_id"], feedback)

    def write_run(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        ts = int(record.get("time_ms") or time.time() * 1000)
        step = int(record.get("step") or 0)  # later logs of a run's metric take higher steps
        metrics = [
            Metric(k, float(v), ts, step) for k, v in record.get("metrics", {}).items() if v is not None
        ]
        params = [Param(k, str(v)) for k, v in record.get("params", {}).items()]
        tags = [RunTag(k, str(v)) for k, v in record.get("tags", {}).items()]
        if metrics or params or tags:
            self.client.log_batch(record["run_id"], metrics=metrics, params=params, tags=tags)
        if record.get("status"):
            self.client.set_terminated(record["run_id"], status=record["status"])

    def record_problem(self, exc: BaseException) -> bool:
        """True when the store is up and refused this record; False when the store is away."""
        code = getattr(exc, "error_code", None)
        if code in RECORD_ERRORS or isinstance(exc, TypeError | ValueError | KeyError | NotStored):
            return store_reachable(self.settings)
        return False


def _description(span: dict[str, Any]) -> str:
    error = span.get("error")
    return str(error["message"]) if error else ""


def _add_error_event(span: Any, recorded: dict[str, Any]) -> None:
    from mlflow.entities import SpanEvent

    error = recorded.get("error")
    if error:
        attributes: dict[str, Any] = {
            "exception.type": str(error["type"]),
            "exception.message": str(error["message"]),
        }
        event: Any = SpanEvent  # a dataclass; its abstract from_proto confuses mypy
        span.add_event(event("exception", timestamp=recorded["end_ns"], attributes=attributes))


class _TraceIds(RandomIdGenerator):
    """An OpenTelemetry id generator that hands out the trace id set in `next_trace_id`."""

    def __init__(self) -> None:
        self.next_trace_id: int | None = None

    def generate_trace_id(self) -> int:
        value, self.next_trace_id = self.next_trace_id, None
        return value if value is not None else super().generate_trace_id()


def _install_trace_ids() -> _TraceIds:
    """Make MLflow's spans come from a provider whose trace ids orchlab chooses (once per process).

    Called after ``mlflow.set_tracking_uri``, which resets MLflow's provider.
    """
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    global _ids
    if _ids is None:
        _ids = _TraceIds()
        # An empty resource, as MLflow's own provider has (no service.* tags on every trace).
        trace.set_tracer_provider(TracerProvider(resource=Resource.get_empty(), id_generator=_ids))
    return _ids


_ids: _TraceIds | None = None
