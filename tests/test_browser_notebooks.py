"""The tutorial notebooks in a real browser: headless Chromium drives JupyterLab 4, Run All twice in
a row on each notebook (the same kernel, as a user re-running it), then reads what was saved.

Marked ``browser`` (left out of a plain ``pytest``): ``pytest -m browser tests/test_browser_notebooks.py``.
Needs the distribution's Chromium (``apt-get install chromium fonts-noto-color-emoji``; another
binary: ``CHROMIUM=/path``) and the ``playwright`` package of the dev extra, whose driver runs that
Chromium; nothing is downloaded. ``.ci/run`` runs it when Chromium is installed.

The notebooks run in copies, in a temp dir, with their own Jupyter, IPython and JupyterLab settings
folders, so nothing of the user's (or the repository's notebooks) is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab_support import CHROMIUM_FLAGS, STATE_JS, chromium, launch_lab

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("0*.ipynb"))
RUN_TIMEOUT_S = 300.0


class Lab:
    """A JupyterLab server on loopback over a folder of notebook copies."""

    def __init__(self, base: str, token: str, folder: Path) -> None:
        self.base, self.token, self.folder = base, token, folder

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(
            f"{self.base}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def saved(self, name: str) -> dict[str, Any]:
        return json.loads((self.folder / name).read_text(encoding="utf-8"))

    def shut_down_kernels(self) -> None:
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("jupyterlab")
    folder = home / "notebooks"
    folder.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / name, folder / name)
    proc, base, token = launch_lab(home, folder)
    server = Lab(base, token, folder)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"jupyter lab exited: {(home / 'server.log').read_text()[-2000:]}"
            try:
                server.api("status")
                break
            except OSError:
                assert time.monotonic() < deadline, "jupyter lab did not answer within 120 s"
                time.sleep(0.25)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def wait_until_done(page: Any, timeout: float = RUN_TIMEOUT_S) -> list[str]:
    """Until no cell is queued or running and the kernel is idle (three checks in a row)."""
    deadline, calm, state = time.monotonic() + timeout, 0, {}
    while time.monotonic() < deadline:
        state = page.evaluate(STATE_JS)
        busy = not state["prompts"] or any("*" in p for p in state["prompts"]) or state["status"] != "idle"
        calm = 0 if busy else calm + 1
        if calm >= 3:
            return list(state["prompts"])
        page.wait_for_timeout(500)
    raise TimeoutError(f"the notebook did not finish within {timeout:.0f} s: {state}")


def run_all(page: Any) -> list[str]:
    """Run All Cells from the menu; the prompts once the run has started *and* ended (on a loaded
    machine the page may take seconds to start it: until then it looks done, with the last run's
    prompts)."""
    before = page.evaluate(STATE_JS)["prompts"]
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    deadline = time.monotonic() + 60
    while (prompts := page.evaluate(STATE_JS)["prompts"]) == before:
        assert time.monotonic() < deadline, f"Run All did not start within 60 s: {prompts}"
        page.wait_for_timeout(250)
    return wait_until_done(page)


def save(page: Any, lab: Lab, name: str) -> dict[str, Any]:
    before = lab.api(f"contents/{name}?content=0")["last_modified"]
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 60
    while True:
        try:
            model = lab.api(f"contents/{name}?type=notebook")
        except urllib.error.HTTPError as exc:
            # 400 "unreadable notebook": the server read the file while it was being written;
            # the save is under way, so ask again (anything else is a failure)
            if exc.code != 400:
                raise
            model = None
        if model is not None and model["last_modified"] != before:
            return dict(model["content"])  # the server's reading of the saved file
        assert time.monotonic() < deadline, f"{name} was not saved"
        page.wait_for_timeout(250)


def problems(notebook: dict[str, Any]) -> list[str]:
    """Errors, and code cells that did not run, in a saved notebook."""
    found = []
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("execution_count") is None:
            found.append(f"cell {i} did not run: {''.join(cell['source'])[:80]!r}")
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                found.append(f"cell {i}: {out['ename']}: {out['evalue'][:300]}")
            elif out["output_type"] == "stream" and out["name"] == "stderr":
                found.append(f"cell {i} wrote to stderr: {''.join(out['text'])[:300]!r}")
    return found


def run_new_cell(page: Any, code: str, until: str) -> str:
    """Add a cell at the end of the visible notebook, run it, and return its output once it shows
    ``until``."""
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    notebook.locator(".jp-Cell").last.click(position={"x": 5, "y": 5})
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # a new cell below, selected
    page.keyboard.press("Enter")  # edit it
    page.keyboard.insert_text(code)  # as typed, without the editor's auto-closed brackets
    page.keyboard.press("Shift+Enter")
    output = notebook.locator(".jp-Cell").filter(has_text=until).last.locator(".jp-OutputArea-output")
    output.filter(has_text=until).first.wait_for(timeout=RUN_TIMEOUT_S * 1000)
    return str(output.filter(has_text=until).first.inner_text())


def rate_in_the_compare_view(page: Any) -> tuple[str, str]:
    """Click 5★ under llm.answer's answer in notebook 05's compare view; then, in the notebook,
    ``orchlab.flush()``. The store and the run of that answer's comparison, as the kernel has them."""
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    view = notebook.locator(".jp-CodeCell").filter(has_text="widgets.compare_view(").first
    view.locator(".jupyter-widgets button", has_text="5★").first.click()  # llm.answer's column
    view.locator(".jupyter-widgets", has_text="saved").first.wait_for(timeout=30_000)
    text = run_new_cell(
        page,
        'import json; print("RUN=" + json.dumps([orchlab.flush(timeout=120), '
        'client.tracking.settings.tracking_uri, view.last[0].comparison.runs["llm.answer"]]))',
        until="RUN=",
    )
    flushed, uri, run_id = json.loads(text.partition("RUN=")[2].strip())
    assert flushed is True
    return uri, run_id


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_run_all_twice_in_a_row_without_an_error(lab: Lab, browser: Any, name: str) -> None:
    original = lab.saved(name)
    code_cells = sum(c["cell_type"] == "code" for c in original["cells"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{lab.base}/lab/tree/{name}?reset&token={lab.token}")
        page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell", timeout=60_000)
        wait_until_done(page, timeout=60)
        for run in (1, 2):
            prompts = run_all(page)
            saved = save(page, lab, name)
            assert problems(saved) == [], f"Run All #{run} of {name}"
            assert len(prompts) == code_cells
            # no cell was added by the run (an inserted answer would be run by the next Run All)
            assert len(saved["cells"]) == len(original["cells"]), f"Run All #{run} of {name}"
            counts = [c["execution_count"] for c in saved["cells"] if c["cell_type"] == "code"]
            assert counts == sorted(counts) and (run == 1 or min(counts) > code_cells)
            shown = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")
            assert "Error displaying widget" not in " ".join(shown.all_inner_texts())
            if name.startswith("04_"):
                plots = page.locator(
                    ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img[src^='data:image/png']"
                )
                assert plots.count() == 1  # result.plot() draws: a picture, not "<Figure size ...>"
                assert plots.first.evaluate("img => img.naturalWidth") == 1100
                # the prompt link is written by the drain after the trace (issue 11 item 5)
                assert "could not link" not in " ".join(shown.all_inner_texts())
            if name.startswith("05_"):
                buttons = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jupyter-widgets button")
                assert buttons.count() >= 7 and buttons.filter(has_text="👍").count() >= 1
        if name.startswith("05_"):
            uri, run_id = rate_in_the_compare_view(page)
            import mlflow

            run = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)
            assert run.data.metrics["mean_rating"] == 5.0 and run.data.metrics["rated"] >= 1
    finally:
        page.close()
        lab.shut_down_kernels()
