"""Every Python block the docs promise runs as written does run.

A fenced ```` ```python ```` block preceded by the line ``<!-- run -->`` (invisible on GitHub and in
mkdocs) in README.md or docs/**/*.md runs here in a fresh interpreter, in a temp dir, with the
repository on PYTHONPATH, on the embedded default: no tracking (``ORCH_TRACKING=0``), no response
cache (``ORCH_CACHE=off``), the price cache in the temp dir. A block about tracking says what it needs
in its marker: ``<!-- run ORCH_TRACKING=1 -->`` (``NAME=value`` pairs, set for that block only).
A failure names the file and the line of the block's opening fence, with the block's stderr.

Blocks that need a cloud key or a server are not marked: they are illustrations.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180.0
MARKER = re.compile(r"^\s*<!--\s*run((?:\s+[A-Z_][A-Z0-9_]*=\S*)*)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


@dataclass(frozen=True)
class Block:
    file: str  # relative to the repository
    line: int  # the opening fence, 1-based
    code: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def extract(text: str, file: str) -> tuple[list[Block], list[str]]:
    """The runnable blocks of a Markdown text, and the markers that precede no Python block."""
    lines = text.splitlines()
    blocks, problems = [], []
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        if marker is None:
            i += 1
            continue
        env = dict(pair.split("=", 1) for pair in marker.group(1).split())
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        fence = FENCE.match(lines[j]) if j < len(lines) else None
        if fence is None or fence.group(3) not in ("python", "py"):
            problems.append(f"{file}:{i + 1}: <!-- run --> is not followed by a ```python block")
            i = j
            continue
        indent, ticks = fence.group(1), fence.group(2)
        body, k = [], j + 1
        while k < len(lines) and not lines[k].strip().startswith(ticks):
            body.append(lines[k][len(indent) :] if lines[k].startswith(indent) else lines[k].lstrip())
            k += 1
        if k == len(lines):
            problems.append(f"{file}:{j + 1}: the ```python block is never closed")
        blocks.append(Block(file, j + 1, textwrap.dedent("\n".join(body)) + "\n", env))
        i = k + 1
    return blocks, problems


def doc_files() -> list[Path]:
    """README.md and every page under docs/ (whichever exist in this checkout)."""
    docs = ROOT / "docs"
    return [ROOT / "README.md", *(sorted(docs.rglob("*.md")) if docs.is_dir() else [])]


def all_blocks() -> tuple[list[Block], list[str]]:
    blocks, problems = [], []
    for path in doc_files():
        found, wrong = extract(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
        blocks += found
        problems += wrong
    return blocks, problems


def block_env(tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "ORCHLAB_", "MLFLOW_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        ORCH_TRACKING="0",
        ORCH_CACHE="off",
        ORCH_CACHE_DIR=str(tmp / "orchlab-cache"),
        ORCH_TRACKING_DRAIN_IDLE="2",  # a block with tracking on: its drain does not outlive the test long
        MLFLOW_MODEL_CATALOG_URI="",  # no remote price catalogue (it stalls offline)
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_block(block: Block, tmp: Path) -> None:
    """Run the block as a script in ``tmp``; on failure, `pytest.fail` with its file, line and stderr."""
    script = tmp / "block.py"
    script.write_text(block.code, encoding="utf-8")
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp,
            env=block_env(tmp, block.env),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.id}: the block did not finish within {TIMEOUT_S:.0f} s\n{exc.stderr or ''}")
    if done.returncode != 0:
        pytest.fail(
            f"{block.id}: the block failed (exit {done.returncode})\n"
            f"--- stderr ---\n{done.stderr[-4000:]}\n--- stdout ---\n{done.stdout[-1000:]}",
            pytrace=False,
        )


BLOCKS, PROBLEMS = all_blocks()


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_the_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    run_block(block, tmp_path)


def test_every_run_marker_precedes_a_python_block() -> None:
    assert PROBLEMS == []


def test_the_readme_quickstart_is_found() -> None:
    readme = [b for b in BLOCKS if b.file == "README.md"]
    assert readme, "no <!-- run --> block found in README.md"
    text = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert text[readme[0].line - 2].strip() == "<!-- run -->"
    assert "orchlab.get_llm_client()" in readme[0].code


def test_extract_reads_blocks_lines_indents_and_markers() -> None:
    text = textwrap.dedent(
        """\
        # Title

        <!-- run -->
        ```python
        print(1)
        ```

        ```python
        print("not marked")
        ```

        !!! note
            <!-- run ORCH_TRACKING=1 ORCH_ENV=dev -->

            ```python
            if True:
                print(2)
            ```
        <!-- run -->
        ```bash
        echo no
        ```
        """
    )
    blocks, problems = extract(text, "x.md")
    assert [(b.id, b.code, b.env) for b in blocks] == [
        ("x.md:4", "print(1)\n", {}),
        ("x.md:15", "if True:\n    print(2)\n", {"ORCH_TRACKING": "1", "ORCH_ENV": "dev"}),
    ]
    assert problems == ["x.md:19: <!-- run --> is not followed by a ```python block"]


def test_a_failing_block_names_its_file_line_and_stderr(tmp_path: Path) -> None:
    block = Block("docs/x.md", 12, "import sys\nprint('to stderr', file=sys.stderr)\nraise SystemExit(3)\n")
    with pytest.raises(pytest.fail.Exception) as failed:
        run_block(block, tmp_path)
    message = str(failed.value)
    assert message.startswith("docs/x.md:12: the block failed (exit 3)")
    assert "--- stderr ---\nto stderr" in message


def test_a_block_runs_in_its_temp_dir_on_the_embedded_default(tmp_path: Path) -> None:
    code = (
        "import os\n"
        "assert os.path.realpath(os.getcwd()) == os.path.realpath(os.environ['EXPECT_CWD'])\n"
        "assert os.environ['ORCH_TRACKING'] == '0' and os.environ['ORCH_CACHE'] == 'off'\n"
        "import orchlab\n"
        "assert orchlab.__file__.startswith(os.environ['EXPECT_ROOT']), orchlab.__file__\n"
    )
    run_block(Block("x.md", 1, code, {"EXPECT_CWD": str(tmp_path), "EXPECT_ROOT": str(ROOT)}), tmp_path)
