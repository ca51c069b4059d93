"""``orchlab ui``: MLflow's UI on the configured store, on loopback (`orchlab.tracking.ui`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Annotated

import typer

from orchlab.cli.common import ConfigOpt, EnvOpt, client, options


def ui(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="default: ORCH_MLFLOW_PORT, else 5000")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
) -> None:
    """Start MLflow's UI on the config's tracking store; Ctrl-C stops it and its workers."""
    from orchlab.tracking.ui import server_command, ui_base

    settings = client(options(ctx, config, env)).tracking.settings
    command = server_command(settings, port)
    url = ui_base(settings, port)
    if command is None:  # the store is an MLflow server: its UI is already there
        print(url)
        return
    print(f"MLflow UI on {settings.tracking_uri}: {url}  (Ctrl-C stops it)", file=sys.stderr, flush=True)
    # its own process group: Ctrl-C here stops the server and every worker it started
    proc = subprocess.Popen(command, shell=True, start_new_session=True)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    if code:
        raise typer.Exit(1)
