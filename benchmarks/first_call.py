"""A one-shot script's first call, tracking off: orchlab vs the raw ``openai`` SDK, fresh processes.

    .venv/bin/python benchmarks/first_call.py [--runs 9]

Each run starts a fresh interpreter that imports its library, builds its client and makes one
chat completion against the same loopback OpenAI-wire server (tests/servers/openai_wire.py, in
its own process). orchlab: ``import orchlab; get_llm_client(yaml).run(role, messages)`` with
``ORCH_TRACKING=0``; raw: ``from openai import OpenAI; OpenAI(...).chat.completions.create()``.
Runs alternate (raw first, then orchlab first), medians, after one warm-up run each (which also
fills orchlab's genai-prices and YAML caches, in a temp dir, as any earlier run of the script on the
machine would; ``--yaml-off`` also times orchlab with that cache off, as the first run of a new
config file finds it).
Printed: the time from the first import to the answer inside the process (what the library
costs), the same as CPU time of the process (less disturbed by other work on a shared machine),
the whole process's wall time (what a user waits for, interpreter start-up included), and
orchlab's split into import / client / run. Last, what orchlab itself adds, with less noise: the
same two calls in processes that import ``openai`` (and build one client) before the clock starts,
so what both sides load anyway is not counted (CPU time, min and median).
Target (issue 13): orchlab ≤ 1.1× raw.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ORCH_CACHE", "off")  # a measurement is never a replay of the response cache
MODEL = "gpt-4o-mini"
KEY = "sk-bench-0000000000000000"
MESSAGES = [{"role": "user", "content": "Say hello to the benchmark in five words."}]
TARGET = 1.1
ROWS = (
    ("s", "first import to answer"),
    ("cpu", "first import to answer (CPU)"),
    ("wall", "whole process (wall)"),
)

_SERVER = """
import sys
sys.path.insert(0, sys.argv[1])
from tests.servers.openai_wire import OpenAIWireServer
server = OpenAIWireServer(nodelay=True).start()
print(server.base_url, flush=True)
sys.stdin.read()  # until the parent closes our stdin
server.stop()
"""

_ORCHLAB = """
import time
t0, c0 = time.perf_counter(), time.process_time()
import json, sys
import orchlab
t1 = time.perf_counter()
client = orchlab.get_llm_client(sys.argv[1])
t2 = time.perf_counter()
r = client.run("llm.bench", json.loads(sys.argv[2]))
t3 = time.perf_counter()
assert r.content, r
cpu = time.process_time() - c0
print(json.dumps({"s": t3 - t0, "cpu": cpu, "import": t1 - t0, "client": t2 - t1, "run": t3 - t2}))
"""

_RAW = """
import time
t0, c0 = time.perf_counter(), time.process_time()
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[3])
r = client.chat.completions.create(
    model=sys.argv[4], messages=json.loads(sys.argv[2]), temperature=0, max_tokens=16
)
assert r.choices[0].message.content, r
print(json.dumps({"s": time.perf_counter() - t0, "cpu": time.process_time() - c0}))
"""


# what orchlab itself adds: ``openai`` imported (and one client built) before the clock starts
_OWN = """
import json, sys, time
import openai
openai.OpenAI(base_url=sys.argv[3], api_key="sk-x")
c0 = time.process_time()
if sys.argv[1] == "raw":
    client = openai.OpenAI(base_url=sys.argv[3], api_key=sys.argv[4])
    r = client.chat.completions.create(
        model=sys.argv[5], messages=json.loads(sys.argv[2]), temperature=0, max_tokens=16
    )
    assert r.choices[0].message.content, r
else:
    import orchlab
    r = orchlab.get_llm_client(sys.argv[1]).run("llm.bench", json.loads(sys.argv[2]))
    assert r.content, r
print(json.dumps({"cpu": time.process_time() - c0}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument(
        "--also", metavar="TREE", help="also time the orchlab of another checkout (say, the commit before)"
    )
    parser.add_argument(
        "--yaml-off",
        action="store_true",
        help="also time orchlab, YAML cache off",
    )
    args = parser.parse_args()

    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(ROOT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None and server.stdin is not None
    base_url = server.stdout.readline().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "llm_orchestrator.yaml"
            config.write_text(
                textwrap.dedent(
                    f"""\
                    project: bench
                    providers:
                      openai: {{auth_profile: bench, api_base: "{base_url}"}}
                    roles:
                      llm.bench:
                        {{provider: openai, model: {MODEL}, params: {{temperature: 0, max_tokens: 16}}}}
                    """
                ),
                encoding="utf-8",
            )
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("ORCH_", "MLFLOW_", "PYTHONPROFILE", "PYTHONDONTWRITEBYTECODE"))
            }
            # orchlab's price cache in the temp dir: the warm-up run fills it, as any earlier run would
            env.update(
                ORCH_TRACKING="0",
                ORCH_CACHE="off",  # the ORCH_ filter above dropped it: a warm-up must not answer the runs
                ORCH_AUTH_BENCH_API_KEY=KEY,
                PYTHONPATH=str(ROOT),
                ORCH_CACHE_DIR=str(Path(tmp) / "cache"),
                # bytecode for both sides in the temp dir, written by the warm-up run: an installed
                # package has its .pyc files; without them orchlab's sources were compiled every run
                PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"),
            )
            messages = json.dumps(MESSAGES)
            sides = {
                "raw": [sys.executable, "-c", _RAW, base_url, messages, KEY, MODEL],
                "orchlab": [sys.executable, "-c", _ORCHLAB, str(config), messages],
            }
            if args.also:
                sides["orchlab (--also)"] = sides["orchlab"]
            if args.yaml_off:
                sides["orchlab (--yaml-off)"] = sides["orchlab"]
            own = [sys.executable, "-c", _OWN]
            sides["own: raw"] = [*own, "raw", messages, base_url, KEY, MODEL]
            sides["own: orchlab"] = [*own, str(config), messages, base_url]
            if args.also:
                sides["own: orchlab (--also)"] = sides["own: orchlab"]
            results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}

            def once(name: str) -> None:
                started = time.perf_counter()
                side_env = {**env, "PYTHONPATH": args.also} if name.endswith("(--also)") else env
                if name.endswith("(--yaml-off)"):
                    side_env = {**env, "ORCH_YAML_CACHE": "off"}
                out = subprocess.run(sides[name], capture_output=True, text=True, cwd=tmp, env=side_env)
                wall = time.perf_counter() - started
                if out.returncode:
                    raise SystemExit(f"{name} failed:\n{out.stderr}")
                results[name].append({**json.loads(out.stdout.strip().splitlines()[-1]), "wall": wall})

            for name in sides:  # warm the file cache
                once(name)
            results = {name: [] for name in sides}
            for i in range(args.runs):
                for name in list(sides) if i % 2 == 0 else reversed(list(sides)):
                    once(name)
    finally:
        server.stdin.close()
        server.wait(timeout=10)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    print(f"first call in a fresh process, tracking off, {args.runs} runs each, interleaved (medians)")
    print(f"{'':40} {'raw openai':>11} {'orchlab':>11} {'ratio':>7}")
    for key, label in ROWS:
        raw, ours = median("raw", key), median("orchlab", key)
        print(f"{label:40} {raw * 1e3:8.0f} ms {ours * 1e3:8.0f} ms {ours / raw:7.2f}")
    for option in [o for o in ("--also", "--yaml-off") if f"orchlab ({o})" in results]:
        for key, label in ROWS:
            raw, other = median("raw", key), median(f"orchlab ({option})", key)
            print(f"{label + ', ' + option:40} {raw * 1e3:8.0f} ms {other * 1e3:8.0f} ms {other / raw:7.2f}")
    for name in [n for n in results if n != "raw" and not n.startswith("own: ")]:
        print(
            f"{name} split: "
            + ", ".join(f"{k} {median(name, k) * 1e3:.0f} ms" for k in ("import", "client", "run"))
        )
    raw_cpu = [r["cpu"] for r in results["own: raw"]]
    for name in [n for n in results if n.startswith("own: orchlab")]:
        cpu = [r["cpu"] for r in results[name]]
        added = statistics.median(cpu) - statistics.median(raw_cpu)
        print(
            f"{name[5:]} adds (openai imported first in both): {added * 1e3:+.1f} ms CPU median, "
            f"{(min(cpu) - min(raw_cpu)) * 1e3:+.1f} ms min"
        )
    ratio = median("orchlab", "s") / median("raw", "s")
    print(f"target ≤ {TARGET}×: {'met' if ratio <= TARGET else 'NOT met'} ({ratio:.2f}×)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
