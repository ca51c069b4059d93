"""Where a client's traces go: the YAML ``tracking:`` section, with environment overrides.

Resolved once, when the client is built; relative SQLite paths become absolute then, so a later
``os.chdir`` (a notebook moving around) does not start a second store.

Precedence, highest first:

- ``ORCH_TRACKING`` (``0``/``false``/``off`` or ``1``/``true``/``on``) over ``tracking.enabled``;
- ``ORCH_TRACKING_URI``, then ``tracking.tracking_uri`` (relative to the YAML file), then
  ``MLFLOW_TRACKING_URI``, then ``sqlite:///mlflow.db`` in the working directory;
- ``ORCH_EXPERIMENT``, then ``tracking.experiment``, then ``MLFLOW_EXPERIMENT_NAME``, then
  ``orchlab/<project>/<env>``;
- ``ORCH_TRACKING_SPOOL``, then ``tracking.spool_dir``, then ``.orchlab/spool`` in the working
  directory;
- ``ORCH_TRACKING_EXIT_TIMEOUT`` (seconds, default 10): how long interpreter exit waits for the
  store before the rest goes to the spool.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchlab.config.schema import TrackingConfig
from orchlab.errors import ConfigValidationError

ENV_ENABLED = "ORCH_TRACKING"
ENV_URI = "ORCH_TRACKING_URI"
ENV_EXPERIMENT = "ORCH_EXPERIMENT"
ENV_SPOOL = "ORCH_TRACKING_SPOOL"
ENV_EXIT_TIMEOUT = "ORCH_TRACKING_EXIT_TIMEOUT"

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_SPOOL = ".orchlab/spool"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_REMOTE_SCHEMES = {"http", "https"}


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    """A resolved tracking destination. ``key`` identifies it (one writer queue per key)."""

    enabled: bool
    tracking_uri: str
    experiment: str
    spool_dir: Path
    exit_timeout_s: float = 10.0

    @property
    def key(self) -> str:
        return f"{self.tracking_uri}#{self.experiment}"

    @property
    def spool_name(self) -> str:
        """A file-name-safe id of this destination, shared by every process that uses it."""
        return hashlib.sha1(self.key.encode()).hexdigest()[:16]

    @property
    def is_http(self) -> bool:
        return urlsplit(self.tracking_uri).scheme in _REMOTE_SCHEMES

    @property
    def sqlite_path(self) -> Path | None:
        if not self.tracking_uri.startswith("sqlite:///"):
            return None
        return Path(self.tracking_uri.removeprefix("sqlite:///"))

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"TrackingSettings({state}, uri={self.tracking_uri!r}, experiment={self.experiment!r})"


def resolve_settings(
    config: TrackingConfig | None,
    *,
    project: str,
    env: str,
    base_dir: Path | None = None,
) -> TrackingSettings:
    """The settings for one client; ``base_dir`` is the YAML file's folder (None: embedded default)."""
    config = config or TrackingConfig()
    cwd = Path.cwd()
    yaml_dir = base_dir or cwd

    enabled = config.enabled
    raw_enabled = os.environ.get(ENV_ENABLED, "").strip().lower()
    if raw_enabled:
        if raw_enabled not in _TRUE | _FALSE:
            raise ConfigValidationError(
                f"{ENV_ENABLED}={raw_enabled!r}: expected one of 1/true/on or 0/false/off",
                problems=[(ENV_ENABLED, "not a boolean")],
            )
        enabled = raw_enabled in _TRUE

    if os.environ.get(ENV_URI, "").strip():
        uri = normalize_uri(os.environ[ENV_URI].strip(), cwd, source=ENV_URI)
    elif config.tracking_uri:
        uri = normalize_uri(config.tracking_uri, yaml_dir, source="tracking.tracking_uri")
    elif os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        uri = normalize_uri(os.environ["MLFLOW_TRACKING_URI"].strip(), cwd, source="MLFLOW_TRACKING_URI")
    else:
        uri = normalize_uri(DEFAULT_URI, cwd, source="the default tracking URI")

    experiment = (
        os.environ.get(ENV_EXPERIMENT, "").strip()
        or config.experiment
        or os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip()
        or f"orchlab/{project}/{env}"
    )

    if os.environ.get(ENV_SPOOL, "").strip():
        spool = Path(os.environ[ENV_SPOOL].strip()).expanduser()
        spool = spool if spool.is_absolute() else cwd / spool
    elif config.spool_dir:
        spool = Path(config.spool_dir).expanduser()
        spool = spool if spool.is_absolute() else yaml_dir / spool
    else:
        spool = cwd / DEFAULT_SPOOL

    exit_timeout = 10.0
    raw_timeout = os.environ.get(ENV_EXIT_TIMEOUT, "").strip()
    if raw_timeout:
        try:
            exit_timeout = max(0.0, float(raw_timeout))
        except ValueError:
            raise ConfigValidationError(
                f"{ENV_EXIT_TIMEOUT}={raw_timeout!r}: expected a number of seconds",
                problems=[(ENV_EXIT_TIMEOUT, "not a number")],
            ) from None
    return TrackingSettings(enabled, uri, experiment, spool.resolve(), exit_timeout)


def normalize_uri(uri: str, base_dir: Path, *, source: str = "tracking_uri") -> str:
    """Absolute SQLite paths, no trailing slash on servers; MLflow's file store is refused."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:3] in (":\\", ":/")):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() == "true":
            return uri
        raise ConfigValidationError(
            f"{source}: {uri!r} is a file store; MLflow 3 refuses it and it cannot filter traces by "
            "rating. Use a SQLite store (sqlite:///mlflow.db) or a server (http://host:5000)",
            problems=[(source, "file stores are not supported; use sqlite:///PATH or http(s)://HOST")],
        )
    if scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise ConfigValidationError(
                f"{source}: {uri!r} names no database file; use sqlite:///mlflow.db or sqlite:////abs/path.db",
                problems=[(source, "an in-memory SQLite store would lose every trace")],
            )
        p = Path(path).expanduser()
        if not p.is_absolute():
            p = base_dir / p
        return f"sqlite:///{p.resolve()}"
    if scheme in _REMOTE_SCHEMES:
        return uri.rstrip("/")
    return uri
