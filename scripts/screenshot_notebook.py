"""Make ``docs/assets/notebook.png``: a real screenshot of a tutorial notebook's output in JupyterLab.

A copy of the notebook runs in JupyterLab (Run All) in headless Chromium, the way
``tests/test_browser_notebooks.py`` drives it (the distribution's ``chromium``, driven by the dev
extra's ``playwright``; nothing is downloaded), with its own Jupyter, IPython and JupyterLab settings
folders in a temp dir; then the code cells whose source contains ``--cell`` are photographed together
(from the top of the first to the bottom of the last) and the PNG is reduced to a 256-colour palette
so it stays small. Needs ``pip install -e '.[dev]'`` and Chromium (``apt-get install chromium
fonts-noto-color-emoji``; another binary: ``CHROMIUM=/path``).

Run::

    .venv/bin/python scripts/screenshot_notebook.py                 # notebook 01's --compare cell
    .venv/bin/python scripts/screenshot_notebook.py --notebook 01_quickstart.ipynb \\
        --cell '%%llm\\nWhat is the largest' --out /tmp/first.png   # another cell (a source substring)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab_support import CHROMIUM_FLAGS, STATE_JS, chromium, launch_lab  # noqa: E402


def start_lab(home: Path, notebook: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """JupyterLab on loopback over a folder holding a copy of ``notebook``; (process, base, token)."""
    folder = home / "notebooks"
    folder.mkdir()
    shutil.copy(notebook, folder / notebook.name)
    proc, base, token = launch_lab(
        home,
        folder,
        ORCH_CACHE="off",  # real answers, not replays of an earlier run
        ORCH_TRACKING_DRAIN_IDLE="2",  # the notebook's tracking drain ends soon after the run
    )
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited: {(home / 'server.log').read_text()[-2000:]}")
        try:
            request = urllib.request.Request(
                f"{base}/api/status", headers={"Authorization": f"token {token}"}
            )
            with urllib.request.urlopen(request, timeout=10):
                return proc, base, token
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("jupyter lab did not answer within 120 s") from None
            time.sleep(0.25)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def wait_until_done(page: Any, timeout: float, *, all_ran: bool = False) -> None:
    """Until no cell is queued or running and the kernel is idle (three checks in a row); with
    ``all_ran``, also until every code cell shows an execution count."""
    deadline, calm, state = time.monotonic() + timeout, 0, {}
    while time.monotonic() < deadline:
        state = page.evaluate(STATE_JS)
        prompts = state["prompts"]
        busy = not prompts or any("*" in p for p in prompts) or state["status"] != "idle"
        if all_ran and not all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            busy = True
        calm = 0 if busy else calm + 1
        if calm >= 3:
            return
        page.wait_for_timeout(500)
    raise TimeoutError(f"the notebook did not finish within {timeout:.0f} s: {state}")


def run_all(page: Any) -> None:
    """Run > Run All Cells, again until a cell shows that it is queued or ran (a click made while
    JupyterLab is still settling can be lost)."""
    for _ in range(5):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        for _ in range(40):
            page.wait_for_timeout(500)
            if any(p != "[ ]:" for p in page.evaluate(STATE_JS)["prompts"]):
                return
        page.keyboard.press("Escape")
    raise RuntimeError("Run All Cells did not start the notebook")


def shrink(path: Path) -> None:
    """A 256-colour palette PNG: a screenshot of text and flat widgets loses nothing visible."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", default="01_quickstart.ipynb", help="a file under notebooks/")
    parser.add_argument(
        "--cell",
        action="append",
        help="a substring of a code cell's source (repeat for several; default: the --compare cell)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "assets" / "notebook.png")
    parser.add_argument("--width", type=int, default=1100, help="the browser window's width in pixels")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds Run All may take")
    args = parser.parse_args(argv)
    cells = [c.encode().decode("unicode_escape") for c in (args.cell or ["%%llm --compare"])]
    try:
        browser_path = chromium()
    except RuntimeError as exc:
        print(exc)
        return 1
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="orchlab-shot-") as tmp:
        proc, base, token = start_lab(Path(tmp), ROOT / "notebooks" / args.notebook)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=browser_path, headless=True, args=CHROMIUM_FLAGS)
                try:
                    page = browser.new_page(viewport={"width": args.width, "height": 1600})
                    page.goto(f"{base}/lab/tree/{args.notebook}?reset&token={token}")
                    panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"
                    page.wait_for_selector(f"{panel} .jp-CodeCell", timeout=60_000)
                    wait_until_done(page, timeout=60)
                    run_all(page)
                    wait_until_done(page, timeout=args.timeout, all_ran=True)
                    # the left side bar off, the first cell's frame and cursor out of the picture
                    page.keyboard.press("Control+b")
                    page.locator(f"{panel} .jp-Notebook").first.click(position={"x": 5, "y": 5})
                    page.keyboard.press("Escape")
                    found = page.evaluate(
                        """(texts) => {
                          const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
                          const cells = [...panel.querySelectorAll('.jp-CodeCell')];
                          return cells.map((c, i) => [i, c.querySelector('.jp-InputArea-editor').innerText])
                            .filter(([i, t]) => texts.some(x => t.includes(x))).map(([i]) => i);
                        }""",
                        cells,
                    )
                    if not found:
                        print(f"no code cell of {args.notebook} contains {cells}")
                        return 1
                    code = page.locator(f"{panel} .jp-CodeCell")
                    first, last = code.nth(found[0]), code.nth(found[-1])
                    first.scroll_into_view_if_needed()
                    first.evaluate("e => e.scrollIntoView({block: 'start'})")
                    page.mouse.move(0, 0)
                    page.wait_for_timeout(500)  # widgets finish their layout
                    top, bottom = first.bounding_box(), last.bounding_box()
                    assert top is not None and bottom is not None
                    clip = {
                        "x": top["x"],
                        "y": top["y"],
                        "width": max(top["width"], bottom["width"]),
                        "height": bottom["y"] + bottom["height"] - top["y"],
                    }
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(args.out), clip=clip)
                finally:
                    browser.close()
        finally:
            stop(proc)
    shrink(args.out)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
