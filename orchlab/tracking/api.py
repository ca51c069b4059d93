"""Module-level tracking functions: `flush`, `tracking_status`, and which store a reading function
looks at (`settings_for`, `reading_client`)."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchlab.errors import OrchlabWarning, TrackingError
from orchlab.tracking import launch
from orchlab.tracking.journal import all_journals
from orchlab.tracking.observer import current_tracking
from orchlab.tracking.settings import TrackingSettings, normalize_uri, resolve_settings

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator

READ_FLUSH_TIMEOUT_S = 60.0


def flush(timeout: float | None = None) -> bool:
    """Wait until every trace, rating and run record this process made is in MLflow.

    The records are on disk already (the journal); a drain process writes them to MLflow, and is
    started here if none runs. Returns True when everything is stored, False when ``timeout``
    (seconds) ran out first or the store cannot be used; nothing is lost then, the drain goes on
    (later, or in the next orchlab process). Problems the drain met are reported here as
    `OrchlabWarning`, once each. Nothing waits at interpreter exit.
    """
    return launch.wait_written(timeout=timeout)


def tracking_status() -> dict[str, Any]:
    """Per store this process wrote to: its drain's state, counts, and what of ours still waits."""
    return launch.status()


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


def reading_client(settings: TrackingSettings, timeout: float = READ_FLUSH_TIMEOUT_S) -> Any:
    """An ``MlflowClient`` on the store, once this process's records for it are written there."""
    from orchlab.tracking.store import open_client

    mine = [j for j in all_journals() if j.settings.tracking_uri == settings.tracking_uri]
    if mine and not launch.wait_written(mine, timeout):
        status = launch.control_for(settings).read_status(force=True)
        if status.get("state") in ("broken", "down") and status.get("error"):
            raise TrackingError(
                f"the tracking store {settings.tracking_uri} cannot be written to ({status['error'][:400]}); "
                f"the calls made meanwhile wait in {settings.store_dir}"
            )
        warnings.warn(
            f"orchlab tracking: some calls of this process are not in {settings.tracking_uri} yet "
            f"(the drain did not finish within {timeout:g}s); what is read may miss them",
            OrchlabWarning,
            stacklevel=3,
        )
    return open_client(settings)


def stored_trace_infos(settings: TrackingSettings, trace_ids: list[str]) -> dict[str, Any]:
    """The infos (assessments included) of those traces in the settings' experiment, by id."""
    from orchlab.tracking.store import experiment_id, trace_infos_by_id

    client = reading_client(settings)
    exp = experiment_id(client, settings, create=False)
    return {} if exp is None else trace_infos_by_id(client, [exp], trace_ids)
