"""MLflow's UI on the store a client writes to: which store, the command that starts a UI on it
(as printed, it works), and the UI's address.

The port: the ``port`` argument, else ``ORCH_MLFLOW_PORT``, else 5000. A client tracking into an
MLflow server (``http(s)://``) needs no command: its UI is that server.

For example:

    %llm mlflow                     # in a notebook: flushes, then prints the store and the command
    print(ui_hint(client.tracking.settings))
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from orchlab.errors import ConfigValidationError
from orchlab.tracking.settings import TrackingSettings

ENV_PORT = "ORCH_MLFLOW_PORT"
DEFAULT_PORT = 5000
HOST = "127.0.0.1"


def ui_port(port: int | None = None) -> int:
    """``port``, else ``ORCH_MLFLOW_PORT``, else 5000."""
    source = "port"
    if port is None:
        raw = os.environ.get(ENV_PORT, "").strip()
        if not raw:
            return DEFAULT_PORT
        source = ENV_PORT
        try:
            port = int(raw)
        except ValueError:
            port = -1
    if not 0 < port < 65536:
        raise ConfigValidationError(
            f"{source}={port if source == 'port' else os.environ[ENV_PORT]!r}: "
            "expected a TCP port number (1-65535)",
            problems=[(source, "not a port number")],
        )
    return port


def ui_base(settings: TrackingSettings, port: int | None = None) -> str:
    """The UI's address: the tracking server itself, else a local UI on ``ui_port(port)``."""
    if settings.is_http:
        return settings.tracking_uri
    return f"http://{HOST}:{ui_port(port)}"


def mlflow_executable() -> str:
    """The ``mlflow`` script of the interpreter running orchlab (a venv's own), else ``mlflow``."""
    folder = Path(sys.executable).parent
    for name in ("mlflow", "mlflow.exe"):
        if (folder / name).is_file():
            return str(folder / name)
    return "mlflow"


def server_command(settings: TrackingSettings, port: int | None = None) -> str | None:
    """A shell command that starts a light MLflow UI on this store (None: the store is a server).

    One worker and no job runner (MLflow's default starts ~15 processes and ~3 GiB), on loopback."""
    if settings.is_http:
        return None
    return " ".join(
        [
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false",
            shlex.quote(mlflow_executable()),
            "server",
            "--backend-store-uri",
            shlex.quote(settings.tracking_uri),
            "--workers 1",
            f"--host {HOST}",
            f"--port {ui_port(port)}",
        ]
    )


@dataclass(frozen=True)
class UiHint:
    """Where the traces are and how to look at them (displays itself as text)."""

    settings: TrackingSettings
    command: str | None
    url: str

    def __repr__(self) -> str:
        s = self.settings
        if not s.enabled:
            return (
                "tracking is off for this client (ORCH_TRACKING=0 or tracking.enabled: false): "
                "nothing is written to MLflow"
            )
        lines = [f"MLflow store: {s.tracking_uri}  (experiment {s.experiment!r})"]
        if self.command is None:
            lines.append(f"its UI: {self.url}")
        else:
            lines += [
                "start its UI in a terminal:",
                f"  {self.command}",
                f"then open {self.url}  (another port: --port, and {ENV_PORT} for orchlab's links)",
            ]
        return "\n".join(lines)


def ui_hint(settings: TrackingSettings, port: int | None = None) -> UiHint:
    return UiHint(settings, server_command(settings, port), ui_base(settings, port))
