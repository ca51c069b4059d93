"""The command line's own cost, interleaved so every side sees the same machine load:

- start-up: ``orchlab --help`` against a bare interpreter (``python -c pass``); target ≤ 0.3 s;
- ``orchlab run llm.preprocess "What is 2+2?"`` on the embedded default (the real local model)
  against **the model on its own in a fresh process**: a ``python -c`` that imports llama_cpp,
  loads the same GGUF with the settings orchlab uses (n_ctx, n_threads, seed, no extra buffer
  types: read from the embedded config and `LlamaCppOptions`) and generates the same completion
  for the same prompt (the same ``Q: ...\\nA:`` text, max tokens, temperature 0, stop). A one-shot
  process must load the model, so this is the honest "model's own time"; target: ``orchlab run``
  ≤ that + 0.5 s. ``orchlab run`` runs as a user gets it (tracking on: a journal line, the drain
  is a separate process) and with ``ORCH_TRACKING=off``. The loaded model's per-call
  ``latency_s`` (in this process, model already loaded) is printed too, for scale.

Every child process: a fresh temp working directory (the default store and tracking files go
there), the response cache off (``ORCH_CACHE=off``: every call really generates), and byte code
cached in a temp ``PYTHONPYCACHEPREFIX`` (``PYTHONDONTWRITEBYTECODE`` dropped: an installed
orchlab has its ``.pyc`` files; recompiling ~70 modules per run would be a cost of this checkout,
not of orchlab). One untimed warm-up of each side first.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/cli.py [--rounds 15] [--run-rounds 7] [--only help|run]``
(``--also DIR``: time ``orchlab run`` from another checkout in the same rounds, e.g. the last commit's
``git archive`` in a temp folder, for a before/after under the same load)
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

PROMPT = "What is 2+2?"
ROLE = "llm.preprocess"
MESSAGES = [{"role": "user", "content": PROMPT}]  # what `orchlab run` sends


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall time, CPU time (user + system, the child and the descendants it waited for: not the
    tracking drain, which runs in its own session) and stdout of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def bench_help(rounds: int, tmp: str) -> None:
    bare, cli = [], []
    env = child_env(tmp)
    timed([sys.executable, "-m", "orchlab", "--help"], env)  # warm the file cache, write byte code
    for _ in range(rounds):
        bare.append(timed([sys.executable, "-c", "pass"], env)[0])
        cli.append(timed([sys.executable, "-m", "orchlab", "--help"], env)[0])
    b, c = statistics.median(bare), statistics.median(cli)
    print(f"python -c pass       median {b * 1000:7.1f} ms")
    print(f"orchlab --help       median {c * 1000:7.1f} ms  ({c / b:.1f}x bare, +{(c - b) * 1000:.0f} ms)")
    print(f"target ≤ 300 ms: {'met' if c <= 0.3 else 'NOT met'}   ({load()})")


BASELINE = """\
import sys
import llama_cpp.llama_cpp as lowlevel
from llama_cpp import Llama

default_params = lowlevel.llama_model_default_params


def model_params():
    params = default_params()
    params.use_extra_bufts = {extra_buffers!r}
    return params


lowlevel.llama_model_default_params = model_params
llama = Llama(model_path={path!r}, n_ctx={n_ctx!r}, n_threads={n_threads!r}, seed={seed!r}, verbose=False)
lowlevel.llama_model_default_params = default_params
out = llama.create_completion(
    {prompt!r}, max_tokens={max_tokens!r}, temperature={temperature!r}, top_p=0.95, stop={stop!r}
)
print(out["choices"][0]["text"].strip())
"""
"""The model on its own: what orchlab's llamacpp provider does for this call, minus orchlab."""


def baseline_script(client: object) -> str:
    """`BASELINE` filled in from the role's binding and its provider's options, as orchlab loads them."""
    from orchlab.providers.llamacpp import LlamaCppOptions, completion_prompt, default_model_path
    from orchlab.types import Message

    binding = client.binding(ROLE)  # type: ignore[attr-defined]
    provider = client.config.providers[binding.provider]  # type: ignore[attr-defined]
    assert provider.type == "llamacpp", provider
    options = LlamaCppOptions.model_validate(provider.options)
    assert options.model_path is None and options.prompt_format == "auto", options
    params = binding.params
    return BASELINE.format(
        extra_buffers=options.extra_buffers,
        path=str(default_model_path().resolve()),
        n_ctx=options.n_ctx,
        n_threads=options.n_threads,
        seed=options.seed,
        prompt=completion_prompt((Message(role="user", content=PROMPT),), "qa"),
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        stop=[*(params.stop or ()), "\nQ:"],
    )


def child_env(tmp: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "ORCH_CACHE": "off", "PYTHONPYCACHEPREFIX": os.path.join(tmp, "pycache"), **extra}


def bench_run(rounds: int, tmp: str, also: list[str]) -> None:
    import orchlab

    cmd = [sys.executable, "-m", "orchlab", "run", ROLE, PROMPT, "--no-stream"]
    client = orchlab.get_llm_client()  # the embedded default, as `orchlab run` loads it
    base_cmd = [sys.executable, "-c", baseline_script(client)]
    on, off = child_env(tmp), child_env(tmp, ORCH_TRACKING="off")
    sides = {"model alone": (base_cmd, on), "orchlab run": (cmd, on), "orchlab run, tracking off": (cmd, off)}
    for path in also:  # another checkout's orchlab (e.g. the previous commit), same rounds
        env = {**on, "PYTHONPATH": os.pathsep.join([path, os.environ.get("PYTHONPATH", "")])}
        sides[f"orchlab run from {path}"] = (cmd, env)
    try:
        first = client.run(ROLE, MESSAGES)  # loads the model: not the model's per-call time
        print(f"answer (in-process) {first.content.strip()!r}")
        for name, (argv, env) in sides.items():  # warm-up: file cache, byte code
            answer = timed(argv, env)[2].strip()
            print(f"answer ({name}) {answer!r}")
            assert answer == first.content.strip(), "not the same completion: not the same call"
        wall: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        loaded, loads = [], [os.getloadavg()[0]]
        names = list(sides)
        for i in range(rounds):
            # rotate the order, so no side always runs right after another's drain or page-ins
            for name in names[i % len(names) :] + names[: i % len(names)]:
                w, c, _ = timed(*sides[name])
                wall[name].append(w)
                cpu[name].append(c)
            loaded.append(client.run(ROLE, MESSAGES).latency_s)
            loads.append(os.getloadavg()[0])
    finally:
        client.close()
    print(
        f"{rounds} rounds, interleaved (order rotated); 1-min load average {min(loads):.1f}-{max(loads):.1f}"
    )
    print(f"{'':34s} {'wall median':>12s} {'(min-max)':>13s} {'CPU median':>11s}")
    for name in names:
        w, c = wall[name], cpu[name]
        print(
            f"{name:34s} {statistics.median(w):10.2f} s  ({min(w):.2f}-{max(w):.2f}) "
            f"{statistics.median(c):8.2f} s"
        )
    print(f"{'model loaded, per call (latency_s)':34s} {statistics.median(loaded):10.2f} s")
    base_w, base_c = statistics.median(wall["model alone"]), statistics.median(cpu["model alone"])
    for name in names[1:]:
        # per round, so the load of that round cancels out
        over = statistics.median(x - y for x, y in zip(wall[name], wall["model alone"], strict=True))
        over_cpu = statistics.median(cpu[name]) - base_c
        print(
            f"  {name}: {over:+.2f} s wall over the model alone (median of per-round differences; "
            f"{statistics.median(wall[name]) / base_w:.2f}x), {over_cpu:+.2f} s CPU "
            f"-> target ≤ +0.5 s {'met' if over <= 0.5 else 'NOT met'}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15, help="rounds of --help")
    ap.add_argument("--run-rounds", type=int, default=7, help="rounds of orchlab run")
    ap.add_argument("--only", choices=["help", "run"])
    ap.add_argument("--also", action="append", default=[], help="time orchlab run from this checkout too")
    args = ap.parse_args()
    os.environ["ORCH_CACHE"] = "off"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="orchlab-bench-cli-") as tmp:
        os.chdir(tmp)
        if args.only != "run":
            bench_help(args.rounds, tmp)
        if args.only != "help":
            bench_run(args.run_rounds, tmp, [os.path.abspath(p) for p in args.also])


if __name__ == "__main__":
    main()
