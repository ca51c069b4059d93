"""Driving JupyterLab in headless Chromium: shared by the browser tests
(tests/test_browser_notebooks.py) and the README's screenshot (scripts/screenshot_notebook.py)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--disable-sync",
    "--no-first-run",
]
# every code cell's prompt ("[3]:", "[*]:", "[ ]:") and the kernel status of the visible notebook
STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return {prompts: [], status: null};
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
    .map(e => e.textContent.trim());
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator')
    || document.querySelector('.jp-Notebook-ExecutionIndicator');
  return {prompts, status: indicator && indicator.getAttribute('data-status')};
}"""


def chromium() -> str:
    """The distribution's Chromium (or ``CHROMIUM``); a clear error when there is none."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        raise RuntimeError(
            "the browser tests need Chromium: apt-get install chromium fonts-noto-color-emoji "
            "(or CHROMIUM=/path/to/chrome)"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_lab(home: Path, folder: Path, **env_extra: str) -> tuple[subprocess.Popen[bytes], str, str]:
    """JupyterLab on loopback over ``folder``, every setting and state file of its own under
    ``home`` (no news or update checks: the machine is offline; every cell in the DOM); returns
    (process, base URL, token). Its output goes to ``home/server.log``."""
    settings = home / "lab-settings"
    for plugin, values in {
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "notebook-extension/tracker": {"windowingMode": "none"},
    }.items():
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    for sub in ("workspaces", "data", "runtime", "config", "ipython", "tmp"):
        (home / sub).mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "MLFLOW_", "JUPYTER"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        MLFLOW_MODEL_CATALOG_URI="",  # no remote price catalogue (it stalls offline)
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        IPYTHONDIR=str(home / "ipython"),
        TMPDIR=str(home / "tmp"),  # the notebooks' working directories
        **env_extra,
    )
    port, token = free_port(), secrets.token_hex(16)
    with (home / "server.log").open("wb") as log:  # the server writes to its own copy of the file
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={token}", f"--ServerApp.root_dir={folder}"],
            cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}", token
