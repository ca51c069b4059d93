"""The command line's own cost, interleaved so both sides see the same machine load:

- start-up: ``orchlab --help`` against a bare interpreter (``python -c pass``); target ≤ 0.3 s;
- ``orchlab run llm.preprocess "What is 2+2?"`` on the embedded default (the real local model):
  its wall time against the model's own time for the same call measured in-process
  (``client.run(...).latency_s``, model already loaded); target ≤ model time + 0.5 s.

Both run in a fresh temp directory (the default store and tracking files go there) with the
response cache off (``ORCH_CACHE=off``), so every call really generates.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/cli.py [--rounds 15] [--run-rounds 7] [--only help|run]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

PROMPT = "What is 2+2?"
MESSAGES = [{"role": "user", "content": PROMPT}]  # what `orchlab run` sends


def timed(cmd: list[str], **kwargs: object) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - start, out.stdout


def bench_help(rounds: int) -> None:
    bare, cli = [], []
    timed([sys.executable, "-m", "orchlab", "--help"])  # warm the file cache
    for _ in range(rounds):
        bare.append(timed([sys.executable, "-c", "pass"])[0])
        cli.append(timed([sys.executable, "-m", "orchlab", "--help"])[0])
    b, c = statistics.median(bare), statistics.median(cli)
    print(f"python -c pass       median {b * 1000:7.1f} ms")
    print(f"orchlab --help       median {c * 1000:7.1f} ms  ({c / b:.1f}x bare, +{(c - b) * 1000:.0f} ms)")
    print(f"target ≤ 300 ms: {'met' if c <= 0.3 else 'NOT met'}")


FRESH = (
    "import json, orchlab\n"
    "c = orchlab.get_llm_client()\n"
    f"r = c.run('llm.preprocess', {MESSAGES!r})\n"
    "print(json.dumps(r.latency_s))\n"
    "c.close()\n"
)
"""The same first call in a fresh process, in-process: its ``latency_s`` includes loading the model,
which a one-shot ``orchlab run`` cannot avoid either."""


def bench_run(rounds: int) -> None:
    import orchlab

    cmd = [sys.executable, "-m", "orchlab", "run", "llm.preprocess", PROMPT, "--no-stream"]
    client = orchlab.get_llm_client()  # the embedded default, as `orchlab run` loads it
    try:
        first = client.run("llm.preprocess", MESSAGES)  # loads the model: not the model's per-call time
        wall_first, printed = timed(cmd)
        print(f"answer (in-process)  {first.content.strip()!r}")
        print(f"answer (orchlab run) {printed.strip()!r}  (first run, file cache cold: {wall_first:.2f} s)")
        walls, model, fresh = [], [], []
        for _ in range(rounds):
            walls.append(timed(cmd)[0])
            model.append(client.run("llm.preprocess", MESSAGES).latency_s)
            fresh.append(float(timed([sys.executable, "-c", FRESH])[1]))
    finally:
        client.close()
    w, m, f = statistics.median(walls), statistics.median(model), statistics.median(fresh)
    print(f"orchlab run wall          median {w:6.2f} s  (min {min(walls):.2f}, max {max(walls):.2f})")
    print(f"model time, loaded        median {m:6.2f} s  (min {min(model):.2f}, max {max(model):.2f})")
    print(f"model time, fresh process median {f:6.2f} s  (min {min(fresh):.2f}, max {max(fresh):.2f})")
    print("  (the first call of a fresh process, in-process: loading the model included)")
    print(f"{rounds} rounds, interleaved. orchlab run over the model's time:")
    print(f"  loaded model: {w - m:+.2f} s -> target ≤ +0.5 s {'met' if w <= m + 0.5 else 'NOT met'}")
    print(f"  fresh process: {w - f:+.2f} s -> target ≤ +0.5 s {'met' if w <= f + 0.5 else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15, help="rounds of --help")
    ap.add_argument("--run-rounds", type=int, default=7, help="rounds of orchlab run")
    ap.add_argument("--only", choices=["help", "run"])
    args = ap.parse_args()
    os.environ["ORCH_CACHE"] = "off"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="orchlab-bench-cli-") as tmp:
        os.chdir(tmp)
        if args.only != "run":
            bench_help(args.rounds)
        if args.only != "help":
            bench_run(args.run_rounds)


if __name__ == "__main__":
    main()
