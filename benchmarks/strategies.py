"""What the strategies cost in time: the race against its fastest candidate alone, and the
orchestration overhead of each strategy over one direct ``Dispatch.attempt``.

Run::

    .venv/bin/python benchmarks/strategies.py            # --n 200 calls per row
    .venv/bin/python benchmarks/strategies.py --n 50 --race-n 20

Everything runs against `orchlab.testing.TestProvider` (a test double with fixed latencies), so
the numbers are the orchestration itself, not a model:

- **race**: three candidates answering after 20 / 50 / 100 ms; the race's wall time against the
  20 ms candidate called alone (the same client, the same path), interleaved.
- **overhead**: candidates that answer at once (latency 0). Each strategy's wall time per call,
  minus a direct ``dispatch.attempt`` (one provider call recorded in a `CallContext`, no strategy) measured
  in the same run. "per call" divides that by the provider calls the strategy made.
- **classifier**: the AUTO rule classifier over a set of prompts (short questions, code, a
  traceback, a 40 kB paste).

Tracking (MLflow) is off, so its cost is not in these figures (see benchmarks/tracking.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("ORCH_CACHE", "off")  # a measurement is never a replay of the response cache

CONFIG = """
project: bench
tracking: {enabled: false}
providers:
  f20: {type: test, options: {models: {m: {reply: "4", latency_s: 0.020}}}}
  f50: {type: test, options: {models: {m: {reply: "4", latency_s: 0.050}}}}
  f100: {type: test, options: {models: {m: {reply: "4", latency_s: 0.100}}}}
  z1: {type: test, options: {models: {m: {reply: "4"}, judge: {reply: "1"}}}}
  z2: {type: test, options: {models: {m: {reply: "4"}}}}
  z3: {type: test_local, options: {models: {m: {reply: "4"}}}}
routing:
  default: plain
roles:
  fast_alone: {provider: f20, model: m}
  race: {provider: f100, model: m, strategy: parallel, candidates: ["f50:m", "f20:m"]}
  plain: {provider: z1, model: m}
  chain: {provider: z1, model: m, fallbacks: ["z2:m", "z3:m"]}
  local_first: {provider: z1, model: m, strategy: local_first, candidates: ["z2:m", "z3:m"]}
  cloud_first: {provider: z1, model: m, strategy: cloud_first, candidates: ["z2:m", "z3:m"]}
  local: {provider: z1, model: m, strategy: local, candidates: ["z2:m", "z3:m"]}
  cloud: {provider: z1, model: m, strategy: cloud, candidates: ["z2:m", "z3:m"]}
  parallel: {provider: z1, model: m, strategy: parallel, candidates: ["z2:m", "z3:m"]}
  cascade:
    provider: z1
    model: m
    strategy: cascade
    candidates: ["z2:m", "z3:m"]
    cascade: {scorer: regex, pattern: "4", threshold: 1}
  vote: {provider: z1, model: m, strategy: ensemble, candidates: ["z2:m", "z3:m"]}
  chain_mode:
    provider: z1
    model: m
    strategy: ensemble
    candidates: ["z2:m", "z3:m"]
    ensemble: {mode: chain}
  judge:
    provider: z1
    model: m
    strategy: ensemble
    candidates: ["z2:m", "z3:m"]
    ensemble: {mode: judge, judge: "z1:judge"}
  fuse:
    provider: z1
    model: m
    strategy: ensemble
    candidates: ["z2:m", "z3:m"]
    ensemble: {mode: fuse, aggregator: "z2:m"}
  auto: {provider: z1, model: m, strategy: auto}
"""

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def ms(x: float) -> str:
    return f"{x * 1000:8.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200, help="calls per overhead row")
    parser.add_argument("--race-n", type=int, default=40, help="races (and fastest-alone calls)")
    args = parser.parse_args()

    import orchlab
    from orchlab.calls import CallContext
    from orchlab.loop import run_sync
    from orchlab.strategies import classify

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(CONFIG, encoding="utf-8")
        client = orchlab.get_llm_client(path)

        # --- race vs the fastest alone, interleaved ----------------------------------------
        for _ in range(3):
            client.run("race", MESSAGES)
            client.run("fast_alone", MESSAGES)
        race, alone = [], []
        for i in range(args.race_n):
            pair = [("race", race), ("fast_alone", alone)]
            for role, sink in pair if i % 2 == 0 else reversed(pair):
                started = time.perf_counter()
                r = client.run(role, MESSAGES)
                sink.append(time.perf_counter() - started)
                assert r.target == "f20:m", r.target
        print("race: candidates answering after 20 / 50 / 100 ms (TestProvider), n =", args.race_n)
        print(f"  {'':28}{'p50 ms':>9}{'mean ms':>9}{'max ms':>9}")
        for name, xs in (("fastest (20 ms) alone", alone), ("race of 3", race)):
            print(f"  {name:28}{ms(p50(xs))}{ms(statistics.fmean(xs))}{ms(max(xs))}")
        print(
            f"  race - fastest alone: {ms(p50(race) - p50(alone)).strip()} ms at p50 "
            f"(ratio {p50(race) / p50(alone):.3f})"
        )

        # --- overhead per strategy ------------------------------------------------------------
        async def direct() -> Any:
            resolved = client.resolve("plain")
            request = client._request(resolved, MESSAGES, None)
            ctx = CallContext(role="plain", strategy="single", messages=request.messages)
            return await client.dispatch.attempt(ctx, resolved, request)

        rows: list[tuple[str, Callable[[], Any]]] = [
            ("direct dispatch.attempt", lambda: run_sync(direct())),
            ("run() plain role", lambda: client.run("plain", MESSAGES)),
            ("arun()-path plain (complete)", lambda: client.complete("What is 2+2?", role="plain")),
        ]
        for role in (
            "chain",
            "local_first",
            "cloud_first",
            "local",
            "cloud",
            "parallel",
            "cascade",
            "vote",
            "chain_mode",
            "judge",
            "fuse",
            "auto",
        ):
            rows.append((role, lambda role=role: client.run(role, MESSAGES)))
        results = []
        for name, fn in rows:
            timed(fn, 20)  # warm-up
            xs = timed(fn, args.n)
            calls = 1
            if name not in ("direct dispatch.attempt",):
                r = fn()
                calls = len(r.decision.attempts)
            results.append((name, calls, xs))
        base = p50(results[0][2])
        print(f"\noverhead: candidates answering at once (latency 0), n = {args.n} per row")
        print(f"  {'strategy':30}{'calls':>6}{'p50 ms':>9}{'+ms vs direct':>15}{'+ms per call':>14}")
        for name, calls, xs in results:
            extra = p50(xs) - base
            print(f"  {name:30}{calls:6d}{ms(p50(xs))}{ms(extra):>15}{ms(extra / calls):>14}")

        # --- classifier -------------------------------------------------------------------------
        traceback = "Traceback (most recent call last):\n" + '  File "x.py", line 1\n' * 20 + "KeyError: 1"
        prompts = [
            "What is 2+2?",
            "Write a Python function that parses ISO dates.",
            "Summarize the following notes in two sentences: " + "word " * 200,
            traceback,
            "def f(x):\n    return x\n" * 40,
            "Why is the sky blue? Explain step by step.",
            "lorem ipsum dolor sit amet " * 1500,  # ~40 kB
        ]
        reference = min(timed(lambda: sum(range(1000)), 2000))
        print(
            f"\nAUTO rule classifier (n = 2000 per prompt; this machine: sum(range(1000)) takes "
            f"{reference * 1e6:.1f} µs at best, about 5-8 µs on an idle laptop)"
        )
        print(f"  {'prompt':44}{'chars':>7}{'mean µs':>9}{'max µs':>9}  task")
        for text in prompts:
            xs = timed(lambda text=text: classify(text), 2000)
            label = text[:40].replace("\n", "\\n")
            print(
                f"  {label:44}{len(text):7d}{statistics.fmean(xs) * 1e6:9.1f}{max(xs) * 1e6:9.1f}  "
                f"{classify(text).task_type.value}"
            )
        client.close()


if __name__ == "__main__":
    main()
