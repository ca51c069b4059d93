"""Opening an MLflow store: a first-time setup that is never half done, and a clear error for a
store that is.

Only the drain process and explicit reads (history, compare, rating another session's trace,
prompts) open a store; a calling process never does so to write a trace.

A new SQLite store is set up in a temporary file next to it (``.<name>.setup-<pid>-<n>``) and put
in place with ``os.link`` only once MLflow has created its whole schema (never over a store that
another process made meanwhile), so an interrupted setup leaves no store rather than a broken one.
An existing store that MLflow cannot open (an out-of-date or half-migrated schema, not a database)
is a `TrackingError` that names the file and says how to repair it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orchlab.errors import TrackingError
from orchlab.tracking.settings import TrackingSettings

HEALTH_TIMEOUT_S = 2.0
TRACE_ID = re.compile(r"tr-[0-9a-f]{32}")
SEARCH_PAGE = 500
_setup_seq = itertools.count()
_opened: set[str] = set()
_opened_lock = threading.Lock()

# MLflow error codes that mean "this record is wrong", not "the store is away".
RECORD_ERRORS = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "BAD_REQUEST",
        "INVALID_STATE",
        "NOT_FOUND",
    }
)
_SCHEMA_SIGNS = (
    "out-of-date database schema",
    "already exists",
    "no such table",
    "no such column",
    "can't locate revision",
    "file is not a database",
    "database disk image is malformed",
)


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


def import_mlflow() -> Any:
    """``mlflow``, or a `TrackingError` that says how to install it."""
    os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")  # no 6-7 s offline catalogue stall
    try:
        import mlflow
    except ImportError as exc:
        raise TrackingError(
            f"MLflow is not installed ({exc}); install it with pip install 'orchlab[tracking]'"
        ) from None
    return mlflow


def open_client(settings: TrackingSettings) -> Any:
    """An ``mlflow.MlflowClient`` on the store (a new SQLite store is set up first)."""
    mlflow = import_mlflow()
    if not store_reachable(settings):
        raise TrackingError(
            f"no MLflow server answers at {settings.tracking_uri}/health; start it (or fix "
            "ORCH_TRACKING_URI / tracking.tracking_uri) and try again"
        )
    uri = settings.tracking_uri
    db = settings.sqlite_path
    if db is not None and not db.exists():
        create_sqlite_store(db)
    try:
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)  # opens it, checks its schema
        if uri not in _opened:
            client.search_experiments(max_results=1)
    except Exception as exc:
        problem = store_problem(settings, exc)
        if problem is not None:
            raise problem from None
        raise
    with _opened_lock:
        _opened.add(uri)
    return client


def create_sqlite_store(db: Path) -> None:
    """Set up MLflow's schema in a temporary file, then link it in place (if still missing)."""
    import_mlflow()
    from mlflow import MlflowClient

    db.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_setups(db)
    tmp = db.with_name(f".{db.name}.setup-{os.getpid()}-{next(_setup_seq)}")
    try:
        MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments(max_results=1)
        with contextlib.closing(sqlite3.connect(tmp)) as con:
            (check,) = con.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise TrackingError(f"setting up the MLflow store {db} failed: SQLite reports {check!r}")
        with contextlib.suppress(FileExistsError):  # another process set it up meanwhile: use theirs
            os.link(tmp, db)
    finally:
        for leftover in (tmp, *(tmp.with_name(tmp.name + s) for s in ("-journal", "-wal", "-shm"))):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _remove_abandoned_setups(db: Path) -> None:
    """Temporary setup files of processes that died during a setup (``kill -9``)."""
    for path in db.parent.glob(f".{db.name}.setup-*"):
        try:
            pid = int(path.name.rsplit(".setup-", 1)[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            with contextlib.suppress(OSError):
                path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def store_problem(settings: TrackingSettings, exc: BaseException) -> TrackingError | None:
    """The `TrackingError` for a store MLflow cannot use as it is (None: some other failure)."""
    reason = f"{type(exc).__name__}: {exc}".strip()
    text = reason.lower()
    if not any(sign in text for sign in _SCHEMA_SIGNS):
        return None
    reason = reason.splitlines()[0].split(". ")[0][:400]  # MLflow's own advice follows; ours is below
    db = settings.sqlite_path
    if db is None:
        return TrackingError(
            f"the MLflow server at {settings.tracking_uri} cannot use its database ({reason}); whoever "
            "runs it must back the database up and run `mlflow db upgrade <its backend store URI>`"
        )
    return TrackingError(
        f"the MLflow store {db} cannot be used: {reason}. If an older MLflow made it, back it up and "
        f"run `mlflow db upgrade sqlite:///{db}`. If that fails too (for example 'table ... already "
        f"exists': a first-time setup was interrupted), move the file away (`mv {db} {db}.broken`; its "
        f"traces stay in it): orchlab then sets up a new store there and writes the calls still waiting "
        f"in {settings.store_dir} into it"
    )


def experiment_id(client: Any, settings: TrackingSettings, *, create: bool = True) -> str | None:
    """The experiment's id (created, with its artifacts next to a SQLite store, if missing)."""
    return experiment_id_by_name(client, settings.experiment, settings.sqlite_path, create=create)


def experiment_id_by_name(client: Any, name: str, db: Path | None, *, create: bool = True) -> str | None:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        if not create:
            return None
        artifact_location = (db.parent / "mlruns").as_uri() if db is not None else None
        try:
            return str(client.create_experiment(name, artifact_location=artifact_location))
        except Exception:
            exp = client.get_experiment_by_name(name)  # created meanwhile elsewhere
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return str(exp.experiment_id)


def search_trace_infos(
    client: Any,
    experiment_ids: list[str],
    *,
    filter_string: str | None = None,
    limit: int | None = None,
    run_id: str | None = None,
    order_by: list[str] | None = None,
) -> list[Any]:
    """Trace infos (no spans), through every page, at most ``limit``."""
    out: list[Any] = []
    token = None
    while limit is None or len(out) < limit:
        page = client.search_traces(
            locations=experiment_ids,
            filter_string=filter_string or None,
            max_results=SEARCH_PAGE if limit is None else min(SEARCH_PAGE, limit - len(out)),
            order_by=order_by,
            page_token=token,
            run_id=run_id,
            include_spans=False,
        )
        out.extend(t.info for t in page)
        token = page.token
        if not token:
            break
    return out


def trace_infos_by_id(client: Any, experiment_ids: list[str], trace_ids: Iterable[str]) -> dict[str, Any]:
    """The stored traces among ``trace_ids`` (their infos, by id)."""
    ids = sorted({t for t in trace_ids if TRACE_ID.fullmatch(t)})
    found: dict[str, Any] = {}
    for i in range(0, len(ids), 100):
        chunk = ids[i : i + 100]
        quoted = ", ".join(f"'{t}'" for t in chunk)
        for info in search_trace_infos(
            client, experiment_ids, filter_string=f"trace.request_id IN ({quoted})", limit=len(chunk)
        ):
            found[info.trace_id] = info
    return found


def get_trace_info(client: Any, trace_id: str) -> Any | None:
    """One trace's info, from any experiment of the store (None: no such trace)."""
    try:
        return client.get_trace(trace_id, display=False).info
    except Exception as exc:
        if getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return None
        raise
