"""The background writer: the caller's path only appends to a queue; one daemon thread writes.

What it guarantees:

- **Never block**: `submit` is a deque append. ``import mlflow`` (about 2 s), the first
  experiment on a fresh store (about 2 s more) and every write happen on the writer thread.
- **Never lose**: a record leaves memory only once MLflow has stored it. While a store is
  unreachable the writer backs off (0.5 s doubling to 30 s) and keeps records in memory; past
  `MAX_IN_MEMORY` per store, and at interpreter exit, the oldest go to a spool file
  (``<spool_dir>/<store id>.<pid>.<n>.jsonl``) that the next writer for that store replays
  first, so order is kept (a rating still lands after its trace). A record MLflow rejects
  `MAX_FAILURES` times while the store is up goes to ``rejected.jsonl`` in the spool folder
  with the error, and orchlab warns once.
- **Order**: one FIFO per store; a rating queued after its call is written after its trace.
- `flush` waits until everything queued so far is stored; it runs at interpreter exit with
  ``ORCH_TRACKING_EXIT_TIMEOUT`` (default 10 s) before the rest is spooled.

Traces are written straight to the store (`TracingClient.log_spans`, up to `MAX_BATCH` traces
per transaction), not through MLflow's tracer, whose asynchronous exporter drops a trace when the
store is down and is too late for an immediate rating ("Trace ... not found").
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import sys
import threading
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchlab.errors import OrchlabWarning, TrackingError
from orchlab.tracking.settings import TrackingSettings

log = logging.getLogger("orchlab.tracking")

MAX_BATCH = 100
MAX_IN_MEMORY = 10_000
MAX_FAILURES = 5
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
HEALTH_TIMEOUT_S = 2.0
KNOWN_TRACES = 200_000

# MLflow error codes that mean "this record is wrong", not "the store is away".
_RECORD_ERRORS = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_DOES_NOT_EXIST",
    "RESOURCE_ALREADY_EXISTS",
    "BAD_REQUEST",
    "INVALID_STATE",
    "NOT_FOUND",
}


@dataclass
class Job:
    """Work that needs the store's MLflow handles (creating runs, checking a trace), run in order."""

    fn: Callable[[Destination], Any]
    future: Future[Any] = field(default_factory=Future)


@dataclass
class CallItem:
    build: Callable[[], dict[str, Any]]
    """Builds the trace payload; runs on the writer thread."""


Item = dict[str, Any] | Job | CallItem


class Destination:
    """One (store, experiment): its MLflow handles, its pending records, its backoff."""

    def __init__(self, settings: TrackingSettings, writer: Writer) -> None:
        self.settings = settings
        self.writer = writer
        self.pending: deque[dict[str, Any] | Job] = deque()
        self.client: Any = None
        self.tracing: Any = None
        self.experiment_id: str | None = None
        self.retry_at = 0.0
        self.backoff = BACKOFF_MIN_S
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.isolate = 0
        self.spill_seq = itertools.count()
        self.replay_due = True
        """Spool files may hold older records for this store (another process's, or ours)."""
        self.own_spills: set[str] = set()
        """Spool files this process wrote while running: their records still count as outstanding."""
        self._prompt_versions: dict[tuple[str, str], Any] = {}

    @property
    def ready(self) -> bool:
        return self.experiment_id is not None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    # --- connecting ------------------------------------------------------------------------

    def reachable(self) -> bool:
        return store_reachable(self.settings)

    def connect(self) -> None:
        if self.ready:
            return
        os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")  # no 6-7 s offline catalogue stall
        if not self.reachable():
            raise ConnectionError(f"no MLflow server answers at {self.settings.tracking_uri}/health")
        from mlflow.tracing.client import TracingClient
        from mlflow.tracking import MlflowClient

        db = self.settings.sqlite_path
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        uri = self.settings.tracking_uri
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.experiment_id = ensure_experiment(client, self.settings)
        self.client, self.tracing = client, TracingClient(uri)

    # --- writing ---------------------------------------------------------------------------

    def write_pending(self, force: bool) -> None:
        """Write until the queue is empty, the store fails, or a record needs a pause."""
        now = time.monotonic()
        if not self.pending or (self.retry_at > now and not force):
            return
        try:
            if self.down and not self.reachable():
                raise ConnectionError(f"no MLflow server answers at {self.settings.tracking_uri}/health")
            self.connect()
        except Exception as exc:
            self._went_down(exc)
            return
        if self.replay_due:
            self.replay_due = False
            self.replay_spool()
        while self.pending:
            head = self.pending[0]
            if isinstance(head, Job):
                self._run_job(head)
                continue
            batch = [head]
            if head["kind"] == "trace" and not self.isolate:
                for p in itertools.islice(self.pending, 1, MAX_BATCH):
                    if not isinstance(p, dict) or p["kind"] != "trace":
                        break
                    batch.append(p)
            try:
                self._write(batch)
            except Exception as exc:
                if not self._record_problem(exc):
                    self._went_down(exc)
                    return
                if len(batch) > 1:
                    self.isolate = len(batch)  # find the bad one: write one at a time for a while
                    continue
                head["_failures"] = head.get("_failures", 0) + 1
                if head["_failures"] >= MAX_FAILURES:
                    self.pending.popleft()
                    self.writer.reject(self, head, exc)
                    continue
                self.retry_at = time.monotonic() + 0.5 * head["_failures"]
                return
            for _ in batch:
                self.pending.popleft()
            self.isolate = max(0, self.isolate - len(batch))
            self.writer.done(len(batch))
            self._came_back()

    def _run_job(self, job: Job) -> None:
        self.pending.popleft()
        if job.future.set_running_or_notify_cancel():
            try:
                job.future.set_result(job.fn(self))
            except BaseException as exc:
                job.future.set_exception(exc)
        self.writer.done(1)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        kind = batch[0]["kind"]
        if kind == "trace":
            self._write_traces(batch)
        elif kind == "feedback":
            self.write_feedback(batch[0])
        elif kind == "run":
            self._write_run(batch[0])
        else:
            raise ValueError(f"unknown tracking record kind {kind!r}")

    def _write_traces(self, batch: list[dict[str, Any]]) -> None:
        from mlflow.entities import Span

        started = time.perf_counter()
        by_experiment: dict[str, list[Any]] = {}
        for payload in batch:
            exp = payload.get("experiment_id") or self.experiment_id
            by_experiment.setdefault(str(exp), []).extend(Span.from_dict(s) for s in payload["spans"])
        for exp, spans in by_experiment.items():
            self.tracing.log_spans(exp, spans)
        by_run: dict[str, list[str]] = {}
        for payload in batch:
            if payload.get("run_id"):
                by_run.setdefault(payload["run_id"], []).append(payload["trace_id"])
        for run_id, trace_ids in by_run.items():
            try:
                for i in range(0, len(trace_ids), 100):  # MLflow links at most 100 per request
                    self.client.link_traces_to_run(trace_ids[i : i + 100], run_id)
            except Exception as exc:
                if not self._record_problem(exc):
                    raise
                # The traces are stored (and tagged); only the link to a run MLflow refused is missing.
                log.warning("orchlab: could not link %d trace(s) to run %s: %s", len(trace_ids), run_id, exc)
        for payload in batch:
            for prompt in payload.get("prompts", ()):
                self._link_prompt(payload["trace_id"], prompt["name"], prompt["version"])
        log.debug("wrote %d trace(s) in %.3f s", len(batch), time.perf_counter() - started)

    def _link_prompt(self, trace_id: str, name: str, version: str) -> None:
        try:
            pv = self._prompt_versions.get((name, version))
            if pv is None:
                pv = self._prompt_versions[(name, version)] = self.client.get_prompt_version(name, version)
            self.client.link_prompt_versions_to_trace([pv], trace_id)
        except Exception as exc:
            # The trace itself is stored and tagged with the prompt; only MLflow's link is missing.
            log.warning("orchlab: could not link prompt %s/%s to trace %s: %s", name, version, trace_id, exc)

    def write_feedback(self, p: dict[str, Any]) -> None:
        from mlflow.entities import AssessmentSource, AssessmentSourceType, Feedback

        feedback = Feedback(
            name=p["name"],
            value=p["value"],
            source=AssessmentSource(AssessmentSourceType.HUMAN, p["user"]),
            rationale=p.get("comment"),
            create_time_ms=p.get("time_ms"),
            last_update_time_ms=p.get("time_ms"),
        )
        self.tracing.log_assessment(p["trace_id"], feedback)

    def _write_run(self, p: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        ts = int(p.get("time_ms") or time.time() * 1000)
        metrics = [Metric(k, float(v), ts, 0) for k, v in p.get("metrics", {}).items() if v is not None]
        params = [Param(k, str(v)) for k, v in p.get("params", {}).items()]
        tags = [RunTag(k, str(v)) for k, v in p.get("tags", {}).items()]
        if metrics or params or tags:
            self.client.log_batch(p["run_id"], metrics=metrics, params=params, tags=tags)
        if p.get("status"):
            self.client.set_terminated(p["run_id"], status=p["status"])

    # --- failures --------------------------------------------------------------------------

    def _record_problem(self, exc: BaseException) -> bool:
        """True when the store is up and rejected this record; False when the store is away."""
        code = getattr(exc, "error_code", None)
        if code in _RECORD_ERRORS or isinstance(exc, TypeError | ValueError | KeyError):
            return self.reachable()
        return False

    def _went_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.down_since is None:
            self.down_since = now
            self.backoff = BACKOFF_MIN_S
            log.warning(
                "orchlab: the tracking store %s is unreachable (%s); %d record(s) are kept and will "
                "be written when it is back",
                self.settings.tracking_uri,
                self.last_error[:300],
                len(self.pending),
            )
        else:
            self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)
        self.retry_at = now + self.backoff

    def _came_back(self) -> None:
        if self.down_since is not None:
            log.warning("orchlab: the tracking store %s is back", self.settings.tracking_uri)
        self.down_since = None
        self.backoff = BACKOFF_MIN_S
        self.retry_at = 0.0

    # --- spool -----------------------------------------------------------------------------

    def spill(self, keep: int) -> int:
        """Move the oldest records (not jobs) past ``keep`` to this process's spool file."""
        records = [p for p in self.pending if isinstance(p, dict)]
        n = len(records) - keep
        if n <= 0:
            return 0
        out = records[:n]
        name = f"{self.settings.spool_name}.{os.getpid()}.{next(self.spill_seq)}.jsonl"
        path = self.settings.spool_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "kind": "destination",
            "tracking_uri": self.settings.tracking_uri,
            "experiment": self.settings.experiment,
        }
        with open(path, "w", encoding="utf-8") as f:
            for line in [header, *out]:
                f.write(json.dumps(line, default=str) + "\n")
        moved = {id(p) for p in out}
        self.pending = deque(p for p in self.pending if id(p) not in moved)
        self.replay_due = True
        self.own_spills.add(name)
        return n

    def replay_spool(self) -> None:
        """Put spooled records (older than anything in memory) back in front of the queue."""
        folder = self.settings.spool_dir
        if not folder.is_dir():
            return
        files = sorted(folder.glob(f"{self.settings.spool_name}.*.jsonl"), key=_spool_order)
        loaded: list[dict[str, Any]] = []
        counted = 0
        for path in files:
            claimed = path.with_name(f"{path.name}.claimed-{os.getpid()}")
            try:
                path.rename(claimed)  # another process replaying the same store skips it
            except OSError:
                continue
            try:
                with open(claimed, encoding="utf-8") as f:
                    lines = [json.loads(line) for line in f if line.strip()]
            except (OSError, ValueError) as exc:
                log.warning("orchlab: cannot read spool file %s: %s", claimed, exc)
                continue
            records = [p for p in lines if p.get("kind") != "destination"]
            loaded.extend(records)
            if path.name in self.own_spills:
                self.own_spills.discard(path.name)
                counted += len(records)
            claimed.unlink(missing_ok=True)
        if loaded:
            self.pending.extendleft(reversed(loaded))
            self.writer.added(len(loaded) - counted)
            log.info("orchlab: replaying %d spooled record(s) into %s", len(loaded), self.settings.key)


def store_reachable(settings: TrackingSettings) -> bool:
    """A cheap check (a server's ``/health``) that avoids MLflow's minutes-long HTTP retry loop."""
    if not settings.is_http:
        return True
    import urllib.request

    try:
        with urllib.request.urlopen(f"{settings.tracking_uri}/health", timeout=HEALTH_TIMEOUT_S) as r:
            return bool(200 <= r.status < 300)
    except Exception:
        return False


def _spool_records(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    except OSError:
        return []


def _spool_order(path: Path) -> tuple[float, str]:
    try:
        return (path.stat().st_mtime, path.name)
    except OSError:
        return (0.0, path.name)


def ensure_experiment(client: Any, settings: TrackingSettings) -> str:
    """The experiment's id, created (with its artifacts next to a SQLite store) if missing."""
    exp = client.get_experiment_by_name(settings.experiment)
    if exp is None:
        artifact_location = None
        db = settings.sqlite_path
        if db is not None:
            artifact_location = (db.parent / "mlruns").as_uri()
        try:
            return str(client.create_experiment(settings.experiment, artifact_location=artifact_location))
        except Exception:
            exp = client.get_experiment_by_name(settings.experiment)  # created meanwhile elsewhere
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return str(exp.experiment_id)


class Writer:
    """The one background writer of this process (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inbox: deque[tuple[TrackingSettings, Item]] = deque()
        self._dests: dict[str, Destination] = {}
        self._outstanding = 0
        self._force = False
        self._rounds = 0
        self._thread: threading.Thread | None = None
        self._busy = threading.Lock()
        self._stop = threading.Event()
        self._atexit = False
        self._known: OrderedDict[str, None] = OrderedDict()
        """Trace ids queued by this process (newest last): a rating of one can simply queue behind it."""
        self._problems: list[str] = []
        self._warned_problems = 0
        self.rejected = 0

    # --- the caller's side -----------------------------------------------------------------

    def submit(self, settings: TrackingSettings, item: Item, *, trace_id: str | None = None) -> None:
        with self._cond:
            self._inbox.append((settings, item))
            self._outstanding += 1
            if trace_id is not None:
                self._known[trace_id] = None
                if len(self._known) > KNOWN_TRACES:
                    self._known.popitem(last=False)
            if self._thread is None:
                self._start()
            self._cond.notify()

    def call(
        self, settings: TrackingSettings, fn: Callable[[Destination], Any], timeout: float | None
    ) -> Any:
        """Run ``fn(destination)`` on the writer thread, after everything queued before it."""
        job = Job(fn)
        self.submit(settings, job)
        with self._cond:
            self._force = True
            self._cond.notify()
        try:
            return job.future.result(timeout)
        except FutureTimeout:
            job.future.cancel()
            dest = self._dests.get(settings.key)
            why = f" ({dest.last_error})" if dest is not None and dest.last_error else ""
            raise TrackingError(
                f"the tracking store {settings.tracking_uri} did not answer within {timeout:g}s{why}; "
                "start it (or fix ORCH_TRACKING_URI / tracking.tracking_uri) and try again"
            ) from None

    def replay_if_spooled(self, settings: TrackingSettings) -> bool:
        """If an earlier process left records for this store, write them now (in the background)."""
        folder = settings.spool_dir
        if not folder.is_dir() or not any(folder.glob(f"{settings.spool_name}.*.jsonl")):
            return False
        self.submit(settings, Job(lambda dest: None))  # connecting replays the spool first
        return True

    def knows(self, trace_id: str) -> bool:
        with self._cond:
            return trace_id in self._known

    def flush(self, timeout: float | None = None, *, give_up_when_down: bool = False) -> bool:
        """Wait until nothing waits to be written; True if so, False on timeout.

        ``give_up_when_down``: return as soon as every store with records waiting has failed a
        fresh attempt (interpreter exit does not wait for a server that is down).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._thread is None:
                return self._outstanding == 0
            self._force = True
            start_round = self._rounds
            self._cond.notify()
            while self._outstanding > 0:
                if give_up_when_down and self._rounds > start_round + 1 and self._all_waiting_down():
                    break
                wait = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if wait <= 0:
                    break
                self._cond.wait(wait)
            return self._outstanding == 0

    @property
    def has_new_problems(self) -> bool:
        return len(self._problems) > self._warned_problems

    def take_problems(self) -> list[str]:
        """Problems not yet reported to the user (each reported once)."""
        with self._cond:
            new = self._problems[self._warned_problems :]
            self._warned_problems = len(self._problems)
            return new

    def status(self) -> dict[str, Any]:
        with self._cond:
            return {
                "outstanding": self._outstanding,
                "rejected": self.rejected,
                "stores": {
                    key: {
                        "pending": len(d.pending),
                        "connected": d.ready,
                        "down_since_s": None if d.down_since is None else time.monotonic() - d.down_since,
                        "last_error": d.last_error,
                    }
                    for key, d in self._dests.items()
                },
            }

    # --- the writer thread -----------------------------------------------------------------

    def added(self, n: int) -> None:
        with self._cond:
            self._outstanding += n

    def done(self, n: int) -> None:
        with self._cond:
            self._outstanding -= n
            self._cond.notify_all()

    def reject(self, dest: Destination, payload: dict[str, Any], exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        path = dest.settings.spool_dir / "rejected.jsonl"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                entry = {"store": dest.settings.key, "error": message, "record": payload}
                f.write(json.dumps(entry, default=str) + "\n")
            where = f"kept in {path}"
        except OSError as write_exc:
            where = f"and could not be kept ({write_exc})"
        self._problem(
            f"MLflow rejected a {payload.get('kind')} record for {payload.get('trace_id', '?')} "
            f"{MAX_FAILURES} times ({message[:300]}); it is {where}"
        )
        self.rejected += 1
        self.done(1)

    def _problem(self, text: str) -> None:
        log.warning("orchlab: %s", text)
        with self._cond:
            self._problems.append(text)

    def _start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(self._stop,), name="orchlab-tracking", daemon=True
        )
        self._thread.start()
        if not self._atexit:
            self._atexit = True
            atexit.register(self.close)

    def _all_waiting_down(self) -> bool:
        waiting = [d for d in self._dests.values() if d.pending]
        return bool(waiting) and not self._inbox and all(d.down for d in waiting)

    def _next_wake(self) -> float | None:
        times = [d.retry_at for d in self._dests.values() if d.pending]
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _serve(self, stop: threading.Event) -> None:
        while True:
            with self._cond:
                while not self._inbox and not self._force and not stop.is_set():
                    wake = self._next_wake()
                    if wake is not None and wake <= 0:
                        break
                    self._cond.wait(wake)
                if stop.is_set():
                    return
                items = list(self._inbox)
                self._inbox.clear()
                force, self._force = self._force, False
            with self._busy:
                try:
                    self._round(items, force)
                except Exception as exc:  # a bug here must not stop the writer
                    self._problem(f"the tracking writer failed ({type(exc).__name__}: {exc}); it goes on")
                    time.sleep(0.5)
            with self._cond:
                self._rounds += 1
                self._cond.notify_all()

    def _round(self, items: list[tuple[TrackingSettings, Item]], force: bool) -> None:
        for settings, item in items:
            dest = self._dest(settings)
            if isinstance(item, CallItem):
                try:
                    payload = item.build()
                except Exception as exc:
                    self._problem(f"a call could not be turned into a trace ({type(exc).__name__}: {exc})")
                    self.done(1)
                    continue
                dest.pending.append(payload)
            else:
                dest.pending.append(item)
        for dest in list(self._dests.values()):
            dest.write_pending(force)
            if len(dest.pending) > MAX_IN_MEMORY:
                dest.spill(keep=MAX_IN_MEMORY // 2)

    def _dest(self, settings: TrackingSettings) -> Destination:
        dest = self._dests.get(settings.key)
        if dest is None:
            dest = self._dests[settings.key] = Destination(settings, self)
        return dest

    # --- exit ------------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Flush (bounded), then spool what is left; runs at interpreter exit."""
        if self._thread is None:
            return
        if timeout is None:
            timeout = max((d.settings.exit_timeout_s for d in self._dests.values()), default=10.0)
        self.flush(timeout, give_up_when_down=True)
        with self._cond:
            self._stop.set()
            self._cond.notify_all()
            leftovers = list(self._inbox)
            self._inbox.clear()
        got_lock = self._busy.acquire(timeout=2.0)
        try:
            for settings, item in leftovers:
                dest = self._dest(settings)
                if isinstance(item, CallItem):
                    try:
                        dest.pending.append(item.build())
                    except Exception:
                        self.done(1)
                elif isinstance(item, dict):
                    dest.pending.append(item)
                else:
                    item.future.cancel()
                    self.done(1)
            spooled = []
            for dest in self._dests.values():
                for job in [j for j in dest.pending if isinstance(j, Job)]:
                    job.future.cancel()
                # What is on disk goes to the next writer of this store: no longer ours to wait for.
                earlier = sum(len(_spool_records(dest.settings.spool_dir / f)) for f in dest.own_spills)
                try:
                    n = dest.spill(keep=0)
                except OSError as exc:
                    print(f"orchlab: could not spool tracking records: {exc}", file=sys.stderr)
                    continue
                dest.own_spills.clear()
                self.done(n + earlier + sum(1 for j in dest.pending if isinstance(j, Job)))
                n += earlier
                dest.pending.clear()
                if n:
                    spooled.append(f"{n} to {dest.settings.spool_dir} (store {dest.settings.tracking_uri})")
            if spooled:
                print(
                    "orchlab: tracking records not yet written were kept for later: "
                    + "; ".join(spooled)
                    + ". They are written the next time orchlab uses that store.",
                    file=sys.stderr,
                )
        finally:
            if got_lock:
                self._busy.release()
            self._thread = None


_writer: Writer | None = None
_writer_lock = threading.Lock()


def writer() -> Writer:
    global _writer
    if _writer is None:
        with _writer_lock:
            if _writer is None:
                _writer = Writer()
    return _writer


def warn_problems() -> None:
    """Report, once each, what went wrong in the background (on the user's thread)."""
    w = _writer
    if w is None or not w.has_new_problems:
        return
    for text in w.take_problems():
        warnings.warn(f"orchlab tracking: {text}", OrchlabWarning, stacklevel=3)
