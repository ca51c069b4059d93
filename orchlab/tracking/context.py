"""Which MLflow run a call's trace belongs to, found on the caller's path without importing mlflow.

`orchlab.compare` sets a `TraceLink` for the calls it makes (a context variable, so concurrent
tasks each keep their own). Otherwise, when the user's code has imported mlflow and started a
run in the calling thread (``mlflow.active_run()``), that run is used, as MLflow's own tracing does.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TraceLink:
    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    """The store the run lives in (None: the client's own store)."""
    tags: Mapping[str, str] = field(default_factory=dict)


_link: ContextVar[TraceLink | None] = ContextVar("orchlab_trace_link", default=None)
_off: ContextVar[bool] = ContextVar("orchlab_untracked", default=False)


@contextlib.contextmanager
def untracked() -> Iterator[None]:
    """Calls made inside are not traced (what ``%%llm --no-log`` uses), like ``CallContext.log=False``."""
    token = _off.set(True)
    try:
        yield
    finally:
        _off.reset(token)


def is_untracked() -> bool:
    return _off.get()


@contextlib.contextmanager
def linked(link: TraceLink) -> Iterator[None]:
    """Calls made inside belong to ``link``'s run and carry its tags."""
    token = _link.set(link)
    try:
        yield
    finally:
        _link.reset(token)


def current_link() -> TraceLink | None:
    """The explicit link, else the user's active MLflow run (only if mlflow is imported already).

    ``mlflow.active_run()`` is per thread: a run started in the calling thread is seen by calls
    that finish in that thread (``run``, ``stream``); a strategy's call finishes on orchlab's
    engine thread, where only an explicit `linked` run applies.
    """
    link = _link.get()
    if link is not None:
        return link
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return None
    try:
        run = mlflow.active_run()
        if run is None:
            return None
        return TraceLink(run.info.run_id, run.info.experiment_id, mlflow.get_tracking_uri())
    except Exception:
        # mlflow half-imported (another thread may be importing it right now) or changed.
        return None
