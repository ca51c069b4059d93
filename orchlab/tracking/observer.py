"""The hook that makes every orchestrated call a trace: one `Tracking` per client.

`attach` is called from ``Orchestrator.__init__``; it resolves the settings (microseconds, no
mlflow) and registers `Tracking` as a call observer. ``call_finished`` runs on the caller's
path: it gives the response its trace id, notes the MLflow run the call belongs to, and queues
the record. Everything else happens on the writer thread.
"""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchlab.calls import CallRecord
from orchlab.providers.registry import kind_of
from orchlab.tracking.context import TraceLink, current_link, is_untracked
from orchlab.tracking.records import env_secrets, new_trace_id, trace_payload
from orchlab.tracking.settings import TrackingSettings, normalize_uri, resolve_settings
from orchlab.tracking.writer import CallItem, warn_problems, writer

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator
    from orchlab.tracking.feedback import Rating

_current: Tracking | None = None


class Tracking:
    """A client's tracking: where its traces go, and the observer that queues them."""

    def __init__(self, settings: TrackingSettings, orchestrator: Orchestrator | None = None) -> None:
        self.settings = settings
        self._resolver = orchestrator.resolver if orchestrator is not None else None
        self._kinds: dict[str, str] = {}
        self._base_tags: dict[str, str] = {}
        if orchestrator is not None:
            config = orchestrator.config
            self._kinds = {name: kind_of(name, p.type) or name for name, p in config.providers.items()}
            self._base_tags = {"orchlab.project": config.project, "orchlab.env": config.env}

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def __repr__(self) -> str:
        return f"Tracking({self.settings!r})"

    # --- the observer (caller's path) ------------------------------------------------------

    def call_finished(self, record: CallRecord) -> None:
        if not record.context.log or is_untracked():
            return
        trace_id = new_trace_id()
        if record.response is not None:
            record.response.trace_id = trace_id
        elif record.error is not None:
            with contextlib.suppress(Exception):
                record.error.trace_id = trace_id  # type: ignore[attr-defined]
        link = current_link()
        w = writer()
        w.submit(self.settings, CallItem(partial(self._payload, record, trace_id, link)), trace_id=trace_id)
        if w.has_new_problems:
            warn_problems()

    # --- the writer thread -----------------------------------------------------------------

    def _payload(self, record: CallRecord, trace_id: str, link: TraceLink | None) -> dict[str, Any]:
        if link is not None and link.tracking_uri is not None and not self._same_store(link.tracking_uri):
            # The active run lives in another store: keep its id as a tag, the trace stays here.
            link = TraceLink(tags={**link.tags, "orchlab.mlflow_run_id": link.run_id or ""})
        return trace_payload(
            record,
            trace_id,
            link=link,
            base_tags=self._base_tags,
            provider_kinds=self._kinds,
            secrets=self._secrets(),
        )

    def _same_store(self, uri: str) -> bool:
        try:
            return normalize_uri(uri, Path.cwd()) == self.settings.tracking_uri
        except Exception:
            return False

    def _secrets(self) -> set[str]:
        found = env_secrets()
        for provider in getattr(self._resolver, "_settings", {}).values():
            key = getattr(provider, "api_key", None)
            if key is not None:
                found.add(key.reveal())
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


def attach(orchestrator: Orchestrator) -> Tracking:
    """Resolve the client's tracking settings and, when on, observe its calls."""
    global _current
    config = orchestrator.config
    base_dir = orchestrator.config_path.parent if orchestrator.config_path is not None else None
    settings = resolve_settings(config.tracking, project=config.project, env=config.env, base_dir=base_dir)
    tracking = Tracking(settings, orchestrator)
    if settings.enabled:
        orchestrator.observers.add(tracking)
        _current = tracking
        writer().replay_if_spooled(settings)
    return tracking


def current_tracking() -> Tracking | None:
    """The most recently built client's tracking (what module-level functions use by default)."""
    return _current
