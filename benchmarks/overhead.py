"""What orchlab adds on top of the raw ``openai`` SDK, and what ``import orchlab`` costs.

Run::

    .venv/bin/python benchmarks/overhead.py            # --n 300 calls per side
    .venv/bin/python benchmarks/overhead.py --n 1000 --strict

One loopback OpenAI-wire server (tests/servers/openai_wire.py, in a child process so it does not
compete with the client for the GIL) answers both sides with the same body. The same request goes
through ``client.run()`` and the raw sync ``OpenAI`` client, interleaved (ABAB..., then BABA... so
neither side always goes first), after a warm-up; then ``await client.arun()`` against the raw
``AsyncOpenAI``. Targets (issue 2): run() adds at most 0.5 ms p50; ``import orchlab`` < 0.3 s with
no SDK, mlflow, pandas or llama_cpp module loaded.

MLflow tracking is off for the engine measurement (``ORCH_TRACKING=0``); ``--tracking`` turns it on
(a SQLite store in a temp dir) to see what tracing adds on top.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ORCH_CACHE", "off")  # a measurement is never a replay of the response cache
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RUN_TARGET_MS = 0.5
IMPORT_TARGET_S = 0.3
HEAVY_MODULES = (
    "openai",
    "anthropic",
    "google.genai",
    "ollama",
    "mlflow",
    "pandas",
    "numpy",
    "llama_cpp",
    "matplotlib",
    "ipywidgets",
    "IPython",
    "tiktoken",
    "genai_prices",
    "httpx",
    "httpx2",
)
MODEL = "bench-model"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the benchmark in five words."},
]
KEY = "sk-bench-0000000000000000"

_SERVER_CODE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.servers.openai_wire import OpenAIWireServer
server = OpenAIWireServer(nodelay=True).start()
print(server.base_url, flush=True)
sys.stdin.read()   # run until the parent closes our stdin
server.stop()
"""


# --- helpers ---------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.3f} ms"


def start_server(in_process: bool) -> tuple[str, Callable[[], None]]:
    if in_process:
        from tests.servers.openai_wire import OpenAIWireServer

        server = OpenAIWireServer(nodelay=True).start()
        return server.base_url, server.stop
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER_CODE, str(ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    base_url = proc.stdout.readline().strip()
    if not base_url.startswith("http"):
        proc.kill()
        raise SystemExit(f"the loopback server did not start (got {base_url!r})")

    def stop() -> None:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return base_url, stop


def write_config(directory: Path, base_url: str) -> Path:
    path = directory / "llm_orchestrator.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            project: bench
            providers:
              openai: {{auth_profile: bench, api_base: "{base_url}"}}
            roles:
              llm.bench: {{provider: openai, model: {MODEL}, params: {{temperature: 0, max_tokens: 16}}}}
            """
        ),
        encoding="utf-8",
    )
    return path


def interleaved(
    n: int, warmup: int, a: Callable[[], Any], b: Callable[[], Any]
) -> tuple[list[float], list[float]]:
    for _ in range(warmup):
        a()
        b()
    ta: list[float] = []
    tb: list[float] = []
    for i in range(n):
        for which in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            fn, out = which
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return ta, tb


async def ainterleaved(
    n: int, warmup: int, a: Callable[[], Awaitable[Any]], b: Callable[[], Awaitable[Any]]
) -> tuple[list[float], list[float]]:
    for _ in range(warmup):
        await a()
        await b()
    ta: list[float] = []
    tb: list[float] = []
    for i in range(n):
        for fn, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            t0 = time.perf_counter()
            await fn()
            out.append(time.perf_counter() - t0)
    return ta, tb


def report(
    title: str, orch: list[float], raw: list[float], orch_label: str, raw_label: str
) -> dict[str, float]:
    o50, o95, r50, r95 = pct(orch, 0.5), pct(orch, 0.95), pct(raw, 0.5), pct(raw, 0.95)
    paired = [o - r for o, r in zip(orch, raw, strict=True)]
    print(f"\n{title}  (n={len(orch)} each, interleaved)")
    print(f"  {raw_label:<28} p50 {ms(r50)}   p95 {ms(r95)}")
    print(f"  {orch_label:<28} p50 {ms(o50)}   p95 {ms(o95)}")
    print(f"  added per call               p50 {ms(o50 - r50)}   p95 {ms(o95 - r95)}")
    print(f"  paired difference (median)       {ms(statistics.median(paired))}")
    print(f"  ratio orchlab / raw          p50 {o50 / r50:8.3f} x   p95 {o95 / r95:8.3f} x")
    return {"added_p50": o50 - r50, "added_p95": o95 - r95, "ratio_p50": o50 / r50}


# --- the measurements ------------------------------------------------------------------------


def bench_sync(config: Path, base_url: str, n: int, warmup: int) -> dict[str, float]:
    import openai

    import orchlab

    client = orchlab.get_llm_client(config)
    raw = openai.OpenAI(api_key=KEY, base_url=base_url, max_retries=0, timeout=60.0)

    def via_orchlab() -> None:
        r = client.run("llm.bench", MESSAGES)
        assert r.content and r.usage.output_tokens > 0

    def via_sdk() -> None:
        r = raw.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            temperature=0,
            max_completion_tokens=16,
        )
        assert r.choices[0].message.content and r.usage and r.usage.completion_tokens > 0

    orch, sdk = interleaved(n, warmup, via_orchlab, via_sdk)
    raw.close()
    client.close()
    return report(
        "sync: client.run() vs OpenAI().chat.completions.create()",
        orch,
        sdk,
        "client.run()",
        "raw OpenAI (sync)",
    )


def bench_async(config: Path, base_url: str, n: int, warmup: int) -> dict[str, float]:
    import openai

    import orchlab

    async def main() -> dict[str, float]:
        client = orchlab.get_llm_client(config)
        raw = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0, timeout=60.0)

        async def via_orchlab() -> None:
            r = await client.arun("llm.bench", MESSAGES)
            assert r.content and r.usage.output_tokens > 0

        async def via_sdk() -> None:
            r = await raw.chat.completions.create(
                model=MODEL,
                messages=MESSAGES,  # type: ignore[arg-type]
                temperature=0,
                max_completion_tokens=16,
            )
            assert r.choices[0].message.content and r.usage and r.usage.completion_tokens > 0

        orch, sdk = await ainterleaved(n, warmup, via_orchlab, via_sdk)
        await raw.close()
        await client.aclose()
        return report(
            "async: await client.arun() vs await AsyncOpenAI().chat.completions.create()",
            orch,
            sdk,
            "await client.arun()",
            "raw AsyncOpenAI",
        )

    return asyncio.run(main())


_IMPORT_CODE = """
import json, sys, time
t0 = time.perf_counter()
import orchlab
elapsed = time.perf_counter() - t0
heavy = [m for m in json.loads(sys.argv[1]) if m in sys.modules]
print(json.dumps({"s": elapsed, "heavy": heavy}))
"""

# Informational: what building the embedded-default client costs (config, resolver, observers), with
# tracking off. The target is on `import orchlab` alone.
_CLIENT_CODE = """
import json, os, sys, time
os.environ["ORCH_TRACKING"] = "0"
t0 = time.perf_counter()
import orchlab
client = orchlab.get_llm_client()
elapsed = time.perf_counter() - t0
heavy = [m for m in json.loads(sys.argv[1]) if m in sys.modules]
print(json.dumps({"s": elapsed, "heavy": heavy}))
"""


def _fresh_processes(code: str, runs: int) -> tuple[float, list[float], list[str]]:
    times: list[float] = []
    heavy: set[str] = set()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPROFILE", "ORCH_"))}
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(HEAVY_MODULES)],
            capture_output=True,
            text=True,
            check=True,
            cwd=tempfile.gettempdir(),
            env={**env, "PYTHONPATH": str(ROOT), "ORCH_CACHE": "off"},  # the ORCH_ filter dropped it
        )
        data = json.loads(out.stdout.strip().splitlines()[-1])
        times.append(data["s"])
        heavy.update(data["heavy"])
    return statistics.median(times), times, sorted(heavy)


def bench_import(runs: int) -> tuple[float, list[str]]:
    median, times, heavy = _fresh_processes(_IMPORT_CODE, runs)
    print(
        f"\nimport orchlab in a fresh process ({runs} runs): median {median * 1000:.1f} ms, "
        f"min {min(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms"
    )
    print(f"  heavy modules loaded by `import orchlab`: {', '.join(heavy) or 'none'}")
    c_median, _, c_heavy = _fresh_processes(_CLIENT_CODE, max(3, runs // 2))
    print(
        f"  (for reference) import + get_llm_client() of the embedded default, tracking off: "
        f"median {c_median * 1000:.1f} ms; heavy modules then: {', '.join(c_heavy) or 'none'}"
    )
    return median, heavy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300, help="measured calls per side (default 300)")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured calls per side first")
    parser.add_argument("--import-runs", type=int, default=7, help="fresh processes for the import time")
    parser.add_argument("--in-process-server", action="store_true", help="run the server in this process")
    parser.add_argument("--skip-async", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--tracking", action="store_true", help="leave MLflow tracking on (default: ORCH_TRACKING=0)"
    )
    args = parser.parse_args(argv)

    import_s, heavy = bench_import(args.import_runs)

    os.environ["ORCH_AUTH_BENCH_API_KEY"] = KEY
    os.environ["ORCH_TRACKING"] = "1" if args.tracking else "0"
    print(f"\nMLflow tracking: {'on' if args.tracking else 'off (ORCH_TRACKING=0)'}")
    base_url, stop = start_server(args.in_process_server)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.tracking:
                os.environ["ORCH_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
                os.environ["ORCH_TRACKING_SPOOL"] = str(Path(tmp) / "spool")
                os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
            config = write_config(Path(tmp), base_url)
            sync = bench_sync(config, base_url, args.n, args.warmup)
            if not args.skip_async:
                bench_async(config, base_url, args.n, args.warmup)
    finally:
        stop()

    run_ok = sync["added_p50"] <= RUN_TARGET_MS / 1000
    import_ok = import_s < IMPORT_TARGET_S and not heavy
    print("\ntargets")
    print(
        f"  run() adds <= {RUN_TARGET_MS} ms p50 over the raw SDK: "
        f"{'met' if run_ok else 'MISSED'} ({sync['added_p50'] * 1000:.3f} ms)"
    )
    print(
        f"  import orchlab < {IMPORT_TARGET_S} s, no heavy module: "
        f"{'met' if import_ok else 'MISSED'} ({import_s * 1000:.1f} ms; heavy: {', '.join(heavy) or 'none'})"
    )
    return 0 if (run_ok and import_ok) or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
