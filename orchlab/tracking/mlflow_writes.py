"""Journal records into MLflow (this runs in the drain process).

**Traces, two ways.** MLflow has no public call that writes a whole trace in one transaction:
its public tracing API (``MlflowClient.start_trace`` / ``start_span`` / ``end_span`` /
``end_trace``) costs one ``log_spans`` transaction per span plus one ``start_trace`` per trace,
about 30 traces/s into SQLite (2 shared cores; ``start_trace`` alone ~12 ms). So:

- **Batched** (the default on a tested MLflow, `BATCH_MLFLOW`): the spans of a whole batch (up to
  `drain.MAX_BATCH` traces) go to the store in **one** ``log_spans(experiment_id, spans)`` call:
  MLflow's OTLP ingestion, which creates each trace from its spans (trace tags from the root
  span's ``mlflow.traceTag.<key>`` attributes, as MLflow's own OTLP exporter sends them; token
  usage and cost summed from the spans). Against an ``mlflow server`` that call is a POST of the
  batch to its OpenTelemetry endpoint ``/v1/traces``; into a SQL store it is
  ``SqlAlchemyStore.log_spans``, the function that endpoint calls, in one transaction. Both are
  reached through ``mlflow.tracing.client.TracingClient(uri).store``, which is not public API:
  hence the version range, outside which (or with ``ORCH_TRACKING_BATCH=0``, or when a server
  answers that it cannot ingest spans) the public path below is used. The spans themselves are
  MLflow ``LiveSpan`` entities made as the public API makes them (see `_spans`), on a tracer of
  orchlab's own that exports nothing.
- **Public** (the fallback): the four calls above, with the recorded start and end times. MLflow
  names a trace ``tr-<its OpenTelemetry trace id>``; so that the stored trace keeps the id the
  caller got, the drain installs an OpenTelemetry SDK ``TracerProvider`` whose id generator hands
  out that id (MLflow's unified provider mode, ``MLFLOW_USE_DEFAULT_TRACER_PROVIDER=false``, adds
  MLflow's span processors to a provider that is already set).

A trace reads back the same either way through ``get_trace`` / ``search_traces`` (its spans, tags,
token usage, cost, previews, state, times, assessments): ``tests/test_tracking_batch.py`` pins
it. Only trace metadata that ``start_trace`` adds about the *writing* process is missing from a
batched trace (`PUBLIC_ONLY_METADATA`: the drain's script name, user and git fields, MLflow's size
statistics, copies of the root span's inputs and outputs, ``mlflow.sourceRun``; a trace's run
is found through its link to the run, which both ways make).

Either way every batch is looked up in the store before (already stored: skipped, which makes a
re-run after a crash harmless) and after (missing: failed; MLflow's exporter reports a failed
write only in a log line). A batch the store refuses is written again one trace at a time, so a
bad record fails alone (the drain's rules for a rejected record apply to it).

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

import json
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
BATCH_MLFLOW = ("3.17", "3.18")
"""MLflow versions [from, to) whose ``store.log_spans`` the batched path is tested with."""
BATCH_ENV = "ORCH_TRACKING_BATCH"
PUBLIC_ONLY_METADATA = frozenset(
    {
        "mlflow.source.name",
        "mlflow.source.type",
        "mlflow.source.git.branch",
        "mlflow.source.git.commit",
        "mlflow.source.git.repoURL",
        "mlflow.user",
        "mlflow.sourceRun",
        "mlflow.trace_schema.version",
        "mlflow.trace.infoFinalized",
        "mlflow.trace.sizeBytes",
        "mlflow.trace.sizeStats",
        "mlflow.traceInputs",
        "mlflow.traceOutputs",
    }
)
"""Trace metadata only ``start_trace`` (the public path) writes."""


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
        self.batch_store = _batch_store(self.mlflow, settings)
        """The store whose ``log_spans`` writes a batch (None: the public path)."""
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
        todo = [r for r in records if r["trace_id"] not in stored]
        if self.batch_store is not None:
            failed = self._write_batch(todo, default)
        else:
            failed = {}
            for record in todo:
                try:
                    self._write_trace(record, str(record.get("experiment_id") or default))
                except TraceIdMismatch:
                    raise
                except Exception as exc:
                    failed[record["trace_id"]] = exc
        written = [r for r in todo if r["trace_id"] not in failed]
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

    def _write_batch(self, records: list[dict[str, Any]], default: str) -> dict[str, BaseException]:
        """Each experiment's share of ``records`` in one ``log_spans``; a refused one trace by trace."""
        failed: dict[str, BaseException] = {}
        by_experiment: dict[str, list[tuple[str, list[Any]]]] = {}
        for record in records:
            experiment_id = str(record.get("experiment_id") or default)
            try:
                spans = _spans(record, experiment_id)
            except Exception as exc:  # a record that is not what the journal writes
                failed[str(record.get("trace_id"))] = exc
                continue
            by_experiment.setdefault(experiment_id, []).append((record["trace_id"], spans))
        for experiment_id, traces in by_experiment.items():
            try:
                self._log_spans(experiment_id, [s for _, spans in traces for s in spans])
            except NotImplementedError:  # a server without span ingestion (MLflow < 3.4)
                log.warning("the store cannot ingest spans; writing traces one call at a time")
                self.batch_store = None
                for trace_id, _ in traces:
                    record = next(r for r in records if r["trace_id"] == trace_id)
                    try:
                        self._write_trace(record, experiment_id)
                    except TraceIdMismatch:
                        raise
                    except Exception as exc:
                        failed[trace_id] = exc
            except Exception as exc:
                if len(traces) == 1:
                    failed[traces[0][0]] = exc
                    continue
                if not self.record_problem(exc):
                    raise  # the store is away: the drain retries the whole batch later
                log.info("the store refused a batch of %d traces (%s); one by one", len(traces), exc)
                for trace_id, spans in traces:
                    try:
                        self._log_spans(experiment_id, spans)
                    except Exception as one_exc:
                        failed[trace_id] = one_exc
        return failed

    def _log_spans(self, experiment_id: str, spans: list[Any]) -> None:
        assert self.batch_store is not None
        self.batch_store.log_spans(experiment_id, spans)

    def _write_trace(self, record: dict[str, Any], experiment_id: str) -> None:
        from mlflow.entities import SpanStatus

        trace_id = record["trace_id"]
        root, *children = record["spans"]
        self.ids.next_trace_id = int(trace_id.removeprefix("tr-"), 16)
        span = self.client.start_trace(
            root["name"],
            span_type=root["type"],
            inputs=root["inputs"],
            attributes={**root["attributes"], **_tag_attributes(record)},
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


def _batch_store(mlflow: Any, settings: TrackingSettings) -> Any | None:
    """The store to write batches to, or None (the public path) with the reason logged."""
    from packaging.version import Version

    if os.environ.get(BATCH_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        log.info("%s is off: traces are written with MLflow's public tracing API", BATCH_ENV)
        return None
    low, high = BATCH_MLFLOW
    if not Version(low) <= Version(mlflow.__version__) < Version(high):
        log.info(
            "MLflow %s is outside the versions orchlab's batched writes are tested with (%s to %s, "
            "exclusive): traces are written with MLflow's public tracing API (slower)",
            mlflow.__version__,
            low,
            high,
        )
        return None
    try:
        from mlflow.tracing.client import TracingClient

        store = TracingClient(settings.tracking_uri).store
    except Exception as exc:
        log.info("no batched writes (%s): MLflow's public tracing API is used", exc)
        return None
    return store if callable(getattr(store, "log_spans", None)) else None


def _tag_attributes(record: dict[str, Any]) -> dict[str, str]:
    """The trace's tags as the root span attributes MLflow's OTLP ingestion reads them from
    (``mlflow.traceTag.<key>``), without the ones MLflow does not let a trace set (the user)."""
    from mlflow.tracing.constant import SpanAttributeKey
    from mlflow.tracing.utils import exclude_immutable_tags

    tags = exclude_immutable_tags(dict(record.get("tags") or {}))
    return {f"{SpanAttributeKey.TRACE_TAG_PREFIX}{k}": str(v) for k, v in tags.items()}


def _spans(record: dict[str, Any], experiment_id: str) -> list[Any]:
    """The record's spans as MLflow ``Span`` entities, made as ``MlflowClient.start_trace`` /
    ``start_span`` / ``end_span`` / ``end_trace`` make them in `MlflowWriter._write_trace` (the
    same attributes, events, status and times), on a tracer that exports nothing."""
    from mlflow.entities import LiveSpan, SpanStatus
    from mlflow.tracing.constant import SpanAttributeKey
    from opentelemetry import trace

    trace_id = record["trace_id"]
    root, *children = record["spans"]
    tracer, ids = _batch_tracer()

    def start(recorded: dict[str, Any], parent: Any, attributes: dict[str, Any]) -> Any:
        # What MLflow's provider sets on a span it starts with an explicit start time.
        otel_attributes = {SpanAttributeKey.START_TIME_NS: json.dumps(recorded["start_ns"])}
        if parent is None:
            otel_attributes[SpanAttributeKey.EXPERIMENT_ID] = json.dumps(experiment_id)
            ids.next_trace_id = int(trace_id.removeprefix("tr-"), 16)
        otel_span = tracer.start_span(
            recorded["name"],
            context=trace.set_span_in_context(parent._span) if parent is not None else None,
            attributes=otel_attributes,
            start_time=recorded["start_ns"],
        )
        ids.next_trace_id = None
        span = LiveSpan(otel_span, trace_id, recorded["type"])
        span.set_inputs(recorded["inputs"])
        span.set_attributes(attributes)
        return span

    def end(span: Any, recorded: dict[str, Any]) -> None:
        _add_error_event(span, recorded)
        span.end(
            outputs=recorded["outputs"],
            status=SpanStatus(recorded["status"], _description(recorded)),
            end_time_ns=recorded["end_ns"],
        )

    root_span = start(root, None, {**root["attributes"], **_tag_attributes(record)})
    if root_span.trace_id != trace_id or f"tr-{root_span._span.context.trace_id:032x}" != trace_id:
        raise ValueError(f"not an MLflow v3 trace id: {trace_id!r}")
    live = [root_span]
    for child in children:
        span = start(child, root_span, child["attributes"])
        end(span, child)
        live.append(span)
    end(root_span, root)
    return [span.to_immutable_span() for span in live]


_batch: tuple[Any, _TraceIds] | None = None


def _batch_tracer() -> tuple[Any, _TraceIds]:
    """A tracer of orchlab's own (not the global provider: its spans go to no processor)."""
    global _batch
    if _batch is None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        ids = _TraceIds()
        provider = TracerProvider(resource=Resource.get_empty(), id_generator=ids)
        _batch = (provider.get_tracer("orchlab.tracking"), ids)
    return _batch


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
