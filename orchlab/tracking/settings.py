"""Where a client's traces go: the YAML ``tracking:`` section, with environment overrides.

Resolved once, when the client is built; relative SQLite paths become absolute then, so a later
``os.chdir`` (a notebook moving around) does not start a second store.

Precedence, highest first:

- ``ORCH_TRACKING`` (``0``/``false``/``off`` or ``1``/``true``/``on``) over ``tracking.enabled``;
- ``ORCH_TRACKING_URI``, then ``tracking.tracking_uri`` (relative to the YAML file), then
  ``MLFLOW_TRACKING_URI``, then ``sqlite:///mlflow.db`` in the working directory;
- ``ORCH_EXPERIMENT``, then ``tracking.experiment``, then ``MLFLOW_EXPERIMENT_NAME``, then
  ``<project> · <env>`` (no ``/``: MLflow's header and lists show a name after its last ``/``);
- ``ORCH_TRACKING_SPOOL``, then ``tracking.spool_dir``, then ``.orchlab/spool`` in the working
  directory: the journal of calls not yet in the store, and the drain's log (see `journal`);
- ``ORCH_TRACKING_FSYNC``, then ``tracking.fsync`` (default off): fsync the journal per record;
- ``ORCH_TRACKING_SPOOL_MAX_MB``, then ``tracking.spool_max_mb`` (default 256): the journal's cap
  per store;
- ``ORCH_TRACKING_DRAIN_IDLE`` (seconds, default 15): how long the drain process waits for new
  records before it exits.
"""

from __future__ import annotations

import hashlib
import math
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
ENV_FSYNC = "ORCH_TRACKING_FSYNC"
ENV_SPOOL_MAX = "ORCH_TRACKING_SPOOL_MAX_MB"
ENV_DRAIN_IDLE = "ORCH_TRACKING_DRAIN_IDLE"

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_SPOOL = ".orchlab/spool"
DEFAULT_DRAIN_IDLE_S = 15.0
MIB = 1024 * 1024
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_REMOTE_SCHEMES = {"http", "https"}


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    """A resolved tracking destination: a store (``tracking_uri``) and an experiment in it."""

    enabled: bool
    tracking_uri: str
    experiment: str
    spool_dir: Path
    fsync: bool = False
    max_spool_bytes: int = 256 * MIB
    drain_idle_s: float = DEFAULT_DRAIN_IDLE_S

    @property
    def key(self) -> str:
        return f"{self.tracking_uri}#{self.experiment}"

    @property
    def store_id(self) -> str:
        """A file-name-safe id of the store, shared by every process that uses it."""
        return hashlib.sha1(self.tracking_uri.encode()).hexdigest()[:16]

    @property
    def store_dir(self) -> Path:
        """This store's folder in the spool: journals, the drain's lock, log and progress."""
        return self.spool_dir / self.store_id

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


def default_experiment(project: str, env: str) -> str:
    """``<project> · <env>``: the distinguishing part first, and no ``/`` (MLflow's header and
    experiment lists show only what follows the last ``/``, so ``orchlab/a/dev`` and
    ``orchlab/b/dev`` both read "dev")."""
    return f"{project} · {env}"


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

    enabled = _flag(ENV_ENABLED, config.enabled)

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
        or default_experiment(project, env)
    )

    if os.environ.get(ENV_SPOOL, "").strip():
        spool = Path(os.environ[ENV_SPOOL].strip()).expanduser()
        spool = spool if spool.is_absolute() else cwd / spool
    elif config.spool_dir:
        spool = Path(config.spool_dir).expanduser()
        spool = spool if spool.is_absolute() else yaml_dir / spool
    else:
        spool = cwd / DEFAULT_SPOOL

    fsync = _flag(ENV_FSYNC, config.fsync)
    max_mb = _number(ENV_SPOOL_MAX, config.spool_max_mb, "a number of MiB")
    idle = _number(ENV_DRAIN_IDLE, DEFAULT_DRAIN_IDLE_S, "a number of seconds", minimum=0.0)
    return TrackingSettings(enabled, uri, experiment, spool.resolve(), fsync, max(1, int(max_mb * MIB)), idle)


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in _TRUE | _FALSE:
        raise ConfigValidationError(
            f"{name}={raw!r}: expected one of 1/true/on or 0/false/off", problems=[(name, "not a boolean")]
        )
    return raw in _TRUE


def _number(name: str, default: float, what: str, minimum: float | None = None) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < (minimum if minimum is not None else math.ulp(0.0)):
        raise ConfigValidationError(f"{name}={raw!r}: expected {what}", problems=[(name, f"not {what}")])
    return value


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
