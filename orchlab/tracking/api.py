"""Module-level tracking functions: `flush`, and which store a reading function looks at."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchlab.errors import TrackingError
from orchlab.tracking.observer import current_tracking
from orchlab.tracking.settings import TrackingSettings, normalize_uri, resolve_settings
from orchlab.tracking.writer import Destination, warn_problems, writer

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator

READ_FLUSH_TIMEOUT_S = 60.0


def flush(timeout: float | None = None) -> bool:
    """Wait until every trace, rating and run record queued so far is in MLflow.

    Returns True when everything is stored, False when ``timeout`` (seconds) ran out first; the
    rest stays queued (and is spooled at exit). Problems met in the background are reported here
    as `OrchlabWarning`, once each. Runs at interpreter exit, bounded by
    ``ORCH_TRACKING_EXIT_TIMEOUT``.
    """
    done = writer().flush(timeout)
    warn_problems()
    return done


def tracking_status() -> dict[str, Any]:
    """What the writer holds: records waiting, rejected, and each store's state."""
    return writer().status()


def settings_for(
    client: Orchestrator | None = None,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> TrackingSettings:
    """The store to read: ``client``'s, else the last client's, else the defaults; then overrides."""
    if client is not None:
        settings = client.tracking.settings
    else:
        tracking = current_tracking()
        if tracking is not None:
            settings = tracking.settings
        else:
            from orchlab.config.loader import load_config

            default = load_config()
            settings = resolve_settings(default.tracking, project=default.project, env=default.env)
    if tracking_uri is not None:
        settings = dataclasses.replace(settings, tracking_uri=normalize_uri(tracking_uri, Path.cwd()))
    if experiment is not None:
        settings = dataclasses.replace(settings, experiment=experiment)
    return settings


def connected(settings: TrackingSettings, timeout: float = READ_FLUSH_TIMEOUT_S) -> Destination:
    """Flush what is queued, then the store's live handles (for reading on the caller's thread)."""
    done = writer().flush(timeout)
    warn_problems()
    status = writer().status()["stores"].get(settings.key) or {}
    if not done and status.get("down_since_s") is not None:
        raise TrackingError(
            f"the tracking store {settings.tracking_uri} is unreachable ({status['last_error'][:300]}); "
            "records made meanwhile are kept and written when it is back"
        )
    return writer().call(settings, _connected, timeout)


def _connected(dest: Destination) -> Destination:
    dest.connect()
    return dest
