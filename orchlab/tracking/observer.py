"""The hook that makes every orchestrated call a trace: one `Tracking` per client.

`attach` is called from ``Orchestrator.__init__``; it resolves the settings (microseconds, no
mlflow) and registers `Tracking` as a call observer. ``call_finished`` runs on the caller's
path: it picks the trace id (returned as a `CallFacts`; the pipeline puts it on the response the
caller gets), builds the trace record (secrets masked) and appends it to the journal before the
call returns, then makes sure a drain process runs (see `journal`, `launch`, `drain`). Without
mlflow installed tracking turns itself off, with one warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from orchlab.calls import CallFacts, CallRecord
from orchlab.errors import OrchlabWarning
from orchlab.providers.registry import kind_of
from orchlab.tracking.context import TraceLink, current_link, is_untracked
from orchlab.tracking.journal import Journal, journal_for, unsupported
from orchlab.tracking.launch import after_write, start_if_waiting
from orchlab.tracking.records import env_secrets, new_trace_id, trace_payload
from orchlab.tracking.settings import TrackingSettings, normalize_uri, resolve_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from orchlab.auth import Secret
    from orchlab.calls import Observers
    from orchlab.config.schema import OrchestratorConfig
    from orchlab.tracking.feedback import Rating

KNOWN_TRACES = 200_000
NO_MLFLOW = (
    "MLflow tracking is off: mlflow is not installed. Install it with pip install 'orchlab[tracking]' "
    "(or set ORCH_TRACKING=0 / tracking.enabled: false to turn tracking off quietly)"
)

_current: Tracking | None = None
_mlflow_missing: bool | None = None
_warned_off: set[str] = set()
_known: OrderedDict[str, None] = OrderedDict()
"""Trace ids this process journaled (newest last): a rating of one can simply follow it."""


class Tracking:
    """A client's tracking: where its traces go, and the observer that journals them."""

    def __init__(
        self,
        settings: TrackingSettings,
        config: OrchestratorConfig | None = None,
        *,
        keys: Callable[[], Iterable[Secret]] = tuple,
        off_reason: str = "",
    ) -> None:
        self.settings = settings
        self.off_reason = off_reason
        self._keys: tuple[Secret, ...] = ()
        self._kinds: dict[str, str] = {}
        self._base_tags: dict[str, str] = {}
        if config is not None:
            self._kinds = {name: kind_of(name, p.type) or name for name, p in config.providers.items()}
            self._base_tags = {"orchlab.project": config.project, "orchlab.env": config.env}
            if settings.enabled:
                self._keys = tuple(keys())
        self._journal: Journal | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            self._journal = journal_for(self.settings)
        return self._journal

    def __repr__(self) -> str:
        return f"Tracking({self.settings!r})"

    # --- the observer (caller's path) ------------------------------------------------------

    def call_finished(self, record: CallRecord) -> CallFacts | None:
        """Journal the call's trace; its trace id is returned, for the response (or error)."""
        if not record.context.log or is_untracked():
            return None
        trace_id = new_trace_id()
        self.journal.append(self._payload(record, trace_id, current_link()))
        remember(trace_id)
        after_write(self.journal)
        return CallFacts(trace_id=trace_id)

    def _payload(self, record: CallRecord, trace_id: str, link: TraceLink | None) -> dict[str, object]:
        if link is not None and link.tracking_uri is not None and not self._same_store(link.tracking_uri):
            # The active run lives in another store: keep its id as a tag, the trace stays here.
            link = TraceLink(tags={**link.tags, "orchlab.mlflow_run_id": link.run_id or ""})
        return trace_payload(
            record,
            trace_id,
            link=link,
            base_tags=self._base_tags,
            provider_kinds=self._kinds,
            secrets=self.secrets(),
        )

    def _same_store(self, uri: str) -> bool:
        try:
            return normalize_uri(uri, Path.cwd()) == self.settings.tracking_uri
        except Exception:
            return False

    def secrets(self) -> set[str]:
        """Every key the config can reach (resolved when the client was built) and credential-looking
        environment variables (read now): masked wherever they appear in a record."""
        found = env_secrets()
        found.update(key.reveal() for key in self._keys)
        return found

    # --- user API --------------------------------------------------------------------------

    def feedback(
        self,
        response_or_trace_id: object,
        rating: object,
        comment: str | None = None,
        user: str | None = None,
    ) -> Rating:
        from orchlab.tracking.feedback import give_feedback

        return give_feedback(self, response_or_trace_id, rating, comment=comment, user=user)


def remember(trace_id: str) -> None:
    _known[trace_id] = None
    if len(_known) > KNOWN_TRACES:
        with contextlib.suppress(KeyError):
            _known.popitem(last=False)


def journaled_here(trace_id: str) -> bool:
    """Whether this process journaled that trace (a rating of it can follow it in the journal)."""
    return trace_id in _known


def mlflow_missing() -> bool:
    """mlflow cannot be imported (checked once per process, without importing it)."""
    global _mlflow_missing
    if _mlflow_missing is None:
        try:
            _mlflow_missing = importlib.util.find_spec("mlflow") is None
        except (ImportError, ValueError):
            _mlflow_missing = True
        if _mlflow_missing:
            warnings.warn(f"orchlab: {NO_MLFLOW}", OrchlabWarning, stacklevel=4)
    return _mlflow_missing


def attach(
    config: OrchestratorConfig,
    observers: Observers,
    *,
    base_dir: Path | None,
    keys: Callable[[], Iterable[Secret]],
) -> Tracking:
    """Resolve a client's tracking settings and, when on, observe its calls (``keys()``: the
    config's API keys, to mask in records)."""
    global _current
    settings = resolve_settings(config.tracking, project=config.project, env=config.env, base_dir=base_dir)
    off_reason = ""
    if settings.enabled and mlflow_missing():
        off_reason = NO_MLFLOW
    elif settings.enabled and (problem := unsupported()):
        off_reason = problem
        if problem not in _warned_off:
            _warned_off.add(problem)
            warnings.warn(f"orchlab: {problem}", OrchlabWarning, stacklevel=3)
    if off_reason:
        settings = dataclasses.replace(settings, enabled=False)
    tracking = Tracking(settings, config, keys=keys, off_reason=off_reason)
    if settings.enabled:
        observers.add(tracking)
        _current = tracking
        start_if_waiting(settings)
    return tracking


def current_tracking() -> Tracking | None:
    """The most recently built client's tracking (what module-level functions use by default)."""
    return _current
