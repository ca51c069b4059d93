"""Run the ``openai`` package's own API tests against ``orchlab serve`` (conformance, issue 14 item 6).

The source distribution of the installed ``openai`` version ships the tests its makers generate from
their API spec: ``tests/api_resources/chat/test_completions.py`` and ``tests/api_resources/test_models.py``
call a server at ``TEST_API_BASE_URL`` through the SDK and validate every response strictly against
the SDK's types. This script points them at the gateway:

1. the sdist of ``openai==<installed version>`` is fetched with pip (once; kept, with its unpacked
   ``tests/``, under ``~/.cache/orchlab/openai-sdist/<version>/``, so later runs work offline);
2. a loopback OpenAI-wire upstream starts (``tests/servers/openai_wire.py``, a real HTTP server in a
   thread of this process), then ``python -m orchlab serve --config scripts/openai_conformance.yaml``
   on a free loopback port (the config aliases the tests' model ``gpt-6-astra`` to a role on that
   upstream, with ``drop_params: true``), and waits for ``/readyz``;
3. pytest runs the two files with the sdist's own conftest (their pyproject is not used: ``-c
   /dev/null``, their asyncio settings and ``filterwarnings = error`` given here), deselecting only
   the endpoints the gateway does not offer, listed with their reasons in ``DESELECTED`` below.

Run::

    .venv/bin/python scripts/openai_conformance.py            # exit 0 when every selected test passes
    .venv/bin/python scripts/openai_conformance.py --report out.json -- -x -vv   # extra pytest args

``tests/test_gateway_conformance.py`` runs it in the suite. This module is also the pytest plugin
(``-p openai_conformance``) that deselects the tests and writes the JSON report, so it imports only the
standard library at module level.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = Path(__file__).with_suffix(".yaml")
FILES = ("tests/api_resources/chat/test_completions.py", "tests/api_resources/test_models.py")
REPORT_ENV = "ORCHLAB_CONFORMANCE_REPORT"
UPSTREAM_ENV = "ORCHLAB_CONFORMANCE_UPSTREAM"

_STORED = (
    "stored completions (GET/POST/DELETE /v1/chat/completions/{id}, GET /v1/chat/completions): "
    "the gateway does not store completions"
)
_MODEL_DELETE = "DELETE /v1/models/{id}: the gateway serves roles from its config; nothing to delete"

# Test functions deselected (in the sync and the async class of the file), with the reason. Only
# tests that call an endpoint the gateway does not offer; the ``test_path_params_*`` tests of those
# endpoints stay: the SDK refuses the empty id itself, before any request.
DESELECTED: dict[str, dict[str, str]] = {
    FILES[0]: {
        **{
            f"test_{kind}_{op}": _STORED
            for op in ("retrieve", "update", "list", "delete")
            for kind in ("method", "raw_response", "streaming_response")
        },
        "test_method_list_with_all_params": _STORED,
    },
    FILES[1]: {
        f"test_{kind}_delete": _MODEL_DELETE for kind in ("method", "raw_response", "streaming_response")
    },
}
CLASSES = {FILES[0]: ("TestCompletions", "TestAsyncCompletions"), FILES[1]: ("TestModels", "TestAsyncModels")}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "orchlab" / "openai-sdist"


def sdist_tests(version: str, cache: Path) -> Path:
    """The unpacked sdist root of ``openai==version`` (holding only ``tests/``), fetched if needed."""
    folder = cache / version
    root = folder / f"openai-{version}"
    if (root / FILES[0]).is_file() and (root / FILES[1]).is_file():
        return root
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"openai-{version}.tar.gz"
    if not archive.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        done = subprocess.run([*cmd, f"openai=={version}", "-d", str(folder)], capture_output=True, text=True)
        if done.returncode != 0 or not archive.is_file():
            raise SystemExit(
                f"could not download the source distribution of openai=={version} with pip "
                f"(needed once, then kept in {folder}):\n{done.stderr.strip()[-2000:]}"
            )
    staging = Path(tempfile.mkdtemp(dir=folder, prefix="unpack-"))
    prefix = f"openai-{version}/tests/"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
        tar.extractall(staging, members=members, filter="data")
    if root.exists():
        shutil.rmtree(root)
    (staging / f"openai-{version}").rename(root)
    shutil.rmtree(staging)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"orchlab serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"orchlab serve was not ready at {url} in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def run(report: Path, pytest_args: list[str]) -> int:
    version = importlib.metadata.version("openai")
    root = sdist_tests(version, cache_dir())
    sys.path.insert(0, str(ROOT))
    from tests.servers.openai_wire import OpenAIWireServer

    with OpenAIWireServer() as upstream, tempfile.TemporaryDirectory(prefix="orchlab-conformance-") as tmp:
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
            UPSTREAM_ENV: upstream.base_url,
            "ORCH_AUTH_CONFORMANCE_API_KEY": "sk-conformance-upstream",
            "ORCH_TRACKING": "0",
            "ORCH_CACHE": "off",  # the SDK tests send seeds: every request must reach the upstream
        }
        log = Path(tmp) / "serve.log"
        cmd = [sys.executable, "-m", "orchlab", "serve", "--config", str(CONFIG)]
        with log.open("wb") as out:
            gateway = subprocess.Popen(
                [*cmd, "--host", "127.0.0.1", "--port", str(port)],
                cwd=tmp,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", gateway, log)
            print(f"openai {version} tests from {root}; gateway http://127.0.0.1:{port}/v1", flush=True)
            test_env = {
                k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ORCH_", "PYTHON"))
            }
            test_env.update(
                {
                    "TEST_API_BASE_URL": f"http://127.0.0.1:{port}/v1",
                    "PYTHONPATH": str(Path(__file__).parent),  # this module, as the plugin
                    REPORT_ENV: str(report),
                    "PYTHONDONTWRITEBYTECODE": "1",
                }
            )
            pytest_cmd = [
                *(sys.executable, "-m", "pytest", "-c", os.devnull, "--rootdir", str(root)),
                *("--confcutdir", str(root), "-p", "no:cacheprovider", "-p", "openai_conformance"),
                *("-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=session"),
                *("-W", "error", "-q", "-ra", "--tb=short"),
                *FILES,
                *pytest_args,
            ]
            code = subprocess.call(pytest_cmd, cwd=root, env=test_env)
        finally:
            gateway.terminate()
            try:
                gateway.wait(timeout=20)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait()
        if code != 0:
            print(f"--- orchlab serve log (last lines) ---\n{log.read_text()[-3000:]}", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, help="write the outcomes as JSON here")
    parser.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = args.report or Path(tmp) / "report.json"
        code = run(report.resolve(), args.pytest_args)
        summary = json.loads(report.read_text()) if report.is_file() else None
    if summary is None:
        print("pytest wrote no report", flush=True)
        return code or 1
    counts = {k: len(v) for k, v in summary["outcomes"].items()}
    print(f"conformance: {counts}, deselected {len(summary['deselected'])}", flush=True)
    return code


# --- the pytest plugin (loaded in the pytest process with -p openai_conformance) --------------------

_outcomes: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": [], "error": []}
_deselected: dict[str, str] = {}


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    keep, matched = [], set()
    for item in items:
        path, _, rest = item.nodeid.partition("::")
        cls, _, func = rest.partition("::")
        name = func.split("[", 1)[0]
        reason = DESELECTED.get(path, {}).get(name)
        if reason is not None and cls in CLASSES.get(path, ()):
            _deselected[item.nodeid] = reason
            matched.add((path, name))
        else:
            keep.append(item)
    missing = [f"{p}::{n}" for p, names in DESELECTED.items() for n in names if (p, n) not in matched]
    if missing:
        # the sdist changed: a deselection that matches nothing would hide nothing, say so
        raise RuntimeError(f"deselections that match no test in this openai version: {missing}")
    config.hook.pytest_deselected(items=[i for i in items if i.nodeid in _deselected])
    items[:] = keep


def pytest_runtest_logreport(report: Any) -> None:
    if report.when == "call" or report.outcome != "passed":
        key = "error" if report.when != "call" and report.outcome == "failed" else report.outcome
        if report.nodeid not in _outcomes[key]:
            _outcomes[key].append(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    reasons: dict[str, int] = {}
    for reason in _deselected.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in reasons.items():
        terminalreporter.write_line(f"deselected {n}: {reason}")


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    target = os.environ.get(REPORT_ENV)
    if target:
        body = {"outcomes": _outcomes, "deselected": _deselected, "exitstatus": int(exitstatus)}
        Path(target).write_text(json.dumps(body, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
