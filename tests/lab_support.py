"""Driving JupyterLab in headless Chromium: shared by the browser tests
(tests/test_browser_notebooks.py) and the README's screenshot (scripts/screenshot_notebook.py)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

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
