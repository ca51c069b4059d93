"""Evaluate four strategies of the local Gemma 3 270M on Tiny QA Benchmark++ core_en, and what MLflow's
evaluation costs on top.

    python benchmarks/evaluate.py                        # all 52 items (about 10 minutes on 2 cores)
    python benchmarks/evaluate.py --subset 8 --seed 7    # the items and numbers of notebook 07
    python benchmarks/evaluate.py --overhead             # mlflow.genai.evaluate vs a plain loop

The config is the one notebook 07 writes (read from its ``%%writefile strategies.yaml`` cell), the
targets are the notebook's, and the items are ``datasets.sample(items, subset, seed=seed)``: with
the same subset and seed this prints the notebook's table (greedy and seeded sampling on one
thread repeat exactly). ``--overhead`` times 52 items through ``mlflow.genai.evaluate`` against the
same items in a plain loop, with a scripted target that answers at once, so only the evaluation
machinery is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("ORCH_CACHE", "off")  # a measurement is never a replay of the response cache
NOTEBOOK = ROOT / "notebooks" / "07_evaluate_strategies.ipynb"
TARGETS = [
    "qa.greedy",
    {"label": "qa.greedy+context", "target": "qa.greedy", "system": "{context}"},
    "qa.vote5",
    "qa.cascade",
]
SCORERS = ["contains", "exact", "normalised"]
COLUMNS = [
    *("n", "accuracy", "ci_low", "ci_high", "exact", "normalised"),
    *("mean_calls", "escalation_rate", "agreement"),
]


def notebook_config() -> str:
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    for cell in cells:
        source = "".join(cell["source"])
        if source.startswith("%%writefile strategies.yaml"):
            return source.split("\n", 1)[1]
    raise SystemExit(f"{NOTEBOOK}: no %%writefile strategies.yaml cell")


def strategies(subset: int, seed: int, log: bool) -> None:
    import pandas as pd

    import orchlab
    from orchlab import datasets

    Path("strategies.yaml").write_text(notebook_config(), encoding="utf-8")
    client = orchlab.get_llm_client("strategies.yaml")
    items = datasets.load("tqbpp_core_en")
    if subset:
        items = datasets.sample(items, subset, seed=seed)
    started = time.perf_counter()
    result = orchlab.evaluate(items, TARGETS, SCORERS, client=client, concurrency=1, log=log)
    took = time.perf_counter() - started
    pd.set_option("display.width", 200)
    print(f"\n{len(items)} items x {len(TARGETS)} targets in {took:.0f} s on {machine()}")
    print(result.summary[COLUMNS].round(3).to_string())
    print(result.summary[["mean_cost_usd", "total_cost_usd"]].to_string())
    timing = result.summary[["latency_p50_s", "latency_p95_s"]].round(2)
    print(timing.to_string())


def overhead() -> None:
    import orchlab
    from orchlab import datasets

    Path("fake.yaml").write_text(
        "project: overhead\nproviders:\n  fake: {type: test, options: {models: {m: {reply: Paris}}}}\n"
        "roles:\n  r: {provider: fake, model: m}\n",
        encoding="utf-8",
    )
    client = orchlab.get_llm_client("fake.yaml")
    items = datasets.load("tqbpp_core_en")
    t = time.perf_counter()
    orchlab.evaluate(items, ["r"], SCORERS, client=client, concurrency=1, log=False, progress=False)
    plain = time.perf_counter() - t
    t = time.perf_counter()
    import mlflow  # noqa: F401

    imported = time.perf_counter() - t
    runs = []
    for _ in range(2):  # the first one also sets up the store and the experiment
        t = time.perf_counter()
        orchlab.evaluate(items, ["r"], SCORERS, client=client, concurrency=1, progress=False)
        runs.append(time.perf_counter() - t)
    n = len(items)
    print(f"{n} items, 3 scorers, a target that answers at once, on {machine()}")
    per_item = plain / n * 1000
    print(f"  plain loop (log=False):              {plain * 1000:8.1f} ms  ({per_item:.2f} ms per item)")
    print(f"  import mlflow:                       {imported * 1000:8.1f} ms")
    for i, took in enumerate(runs, 1):
        print(
            f"  mlflow.genai.evaluate, run {i}:        {took * 1000:8.1f} ms  ({took / n * 1000:.1f} ms per "
            f"item, {took / plain:.0f}x the plain loop)"
        )


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} logical CPUs, Python {sys.version.split()[0]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=0, help="items drawn from the 52 (0: all)")
    parser.add_argument("--seed", type=int, default=7, help="the draw's seed (notebook 07: 7)")
    parser.add_argument("--no-mlflow", action="store_true", help="no MLflow runs (a plain loop)")
    parser.add_argument("--overhead", action="store_true", help="time MLflow's evaluation machinery only")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    with tempfile.TemporaryDirectory(prefix="orchlab-bench-eval-") as tmp:
        os.chdir(tmp)
        if args.overhead:
            overhead()
        else:
            strategies(args.subset, args.seed, log=not args.no_mlflow)


if __name__ == "__main__":
    main()
