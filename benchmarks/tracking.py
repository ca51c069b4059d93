"""What MLflow tracking costs the caller, and whether every call reaches MLflow.

Run::

    .venv/bin/python benchmarks/tracking.py                 # --n 500 per side, --bulk 1000
    .venv/bin/python benchmarks/tracking.py --strict        # exit 1 when a target is missed

1. ``client.run()`` against a loopback OpenAI-wire server (a child process, so it does not compete
   for the GIL) with tracking on and off, interleaved in the same run (ABAB..., then BABA...),
   after a warm-up that has imported mlflow and set up the store. The writer thread is busy
   writing the tracked calls' traces during the whole measurement, as in real use.
   Target (issue 6): tracking adds at most 1 ms p50.
2. ``Tracking.call_finished`` alone: what the observer does on the caller's path.
3. 1,000 tracked calls, then ``orchlab.flush()``: every trace counted in MLflow; flush time printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.overhead import MESSAGES, ms, pct, start_server, write_config  # noqa: E402

TARGET_ADDED_P50_MS = 1.0
KEY = "sk-bench-0000000000000000"


def client_with(config: Path, *, tracking: bool, experiment: str):  # type: ignore[no-untyped-def]
    import orchlab

    os.environ["ORCH_TRACKING"] = "1" if tracking else "0"
    os.environ["ORCH_EXPERIMENT"] = experiment
    try:
        return orchlab.get_llm_client(config)
    finally:
        del os.environ["ORCH_TRACKING"], os.environ["ORCH_EXPERIMENT"]


def bench_overhead(config: Path, n: int, warmup: int) -> float:
    import orchlab

    on = client_with(config, tracking=True, experiment="bench/overhead")
    off = client_with(config, tracking=False, experiment="bench/overhead")
    for _ in range(warmup):
        on.run("llm.bench", MESSAGES)
        off.run("llm.bench", MESSAGES)
    t0 = time.perf_counter()
    assert orchlab.flush(timeout=300)
    print(f"  warm-up: {warmup} tracked calls, then import mlflow + store setup + flush: "
          f"{time.perf_counter() - t0:.2f} s")  # fmt: skip
    t_on: list[float] = []
    t_off: list[float] = []
    for i in range(n):
        pair = ((on, t_on), (off, t_off)) if i % 2 == 0 else ((off, t_off), (on, t_on))
        for client, out in pair:
            t = time.perf_counter()
            r = client.run("llm.bench", MESSAGES)
            out.append(time.perf_counter() - t)
            assert r.content
    assert all(r is not None for r in t_on)
    p50_on, p50_off = pct(t_on, 0.5), pct(t_off, 0.5)
    p95_on, p95_off = pct(t_on, 0.95), pct(t_off, 0.95)
    paired = [a - b for a, b in zip(t_on, t_off, strict=True)]
    print(f"\n1. run() with tracking on vs off  (n={n} each, interleaved)")
    print(f"  tracking off                 p50 {ms(p50_off)}   p95 {ms(p95_off)}")
    print(f"  tracking on                  p50 {ms(p50_on)}   p95 {ms(p95_on)}")
    print(f"  added by tracking            p50 {ms(p50_on - p50_off)}   p95 {ms(p95_on - p95_off)}")
    print(f"  paired difference (median)       {ms(statistics.median(paired))}")
    t0 = time.perf_counter()
    assert orchlab.flush(timeout=600)
    print(f"  (flush of the {n} measured traces afterwards: {time.perf_counter() - t0:.2f} s)")
    return p50_on - p50_off


def bench_observer(config: Path, n: int) -> None:
    """The observer alone, on records of real calls (queued, then written like any other)."""
    import orchlab
    from orchlab.calls import CallRecord

    client = client_with(config, tracking=True, experiment="bench/observer")
    records: list[CallRecord] = []

    class Keep:
        def call_finished(self, record: CallRecord) -> None:
            records.append(record)

    client.observers.remove(client.tracking)
    client.observers.add(Keep())
    for _ in range(n):
        client.run("llm.bench", MESSAGES)
    times = []
    for record in records:
        t = time.perf_counter()
        client.tracking.call_finished(record)
        times.append(time.perf_counter() - t)
    print(f"\n2. Tracking.call_finished alone (n={n}): p50 {pct(times, 0.5) * 1e6:.1f} us, "
          f"p95 {pct(times, 0.95) * 1e6:.1f} us")  # fmt: skip
    assert orchlab.flush(timeout=600)


def bench_bulk(config: Path, n: int) -> tuple[int, float]:
    from mlflow.tracing.client import TracingClient
    from mlflow.tracking import MlflowClient

    import orchlab

    client = client_with(config, tracking=True, experiment="bench/bulk")
    t0 = time.perf_counter()
    ids = [client.run("llm.bench", MESSAGES).trace_id for _ in range(n)]
    calls_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    assert orchlab.flush(timeout=900)
    flush_s = time.perf_counter() - t1
    settings = client.tracking.settings
    exp = MlflowClient(tracking_uri=settings.tracking_uri).get_experiment_by_name(settings.experiment)
    stored: set[str] = set()
    token = None
    while True:
        page = TracingClient(settings.tracking_uri).search_traces(
            locations=[exp.experiment_id], max_results=500, page_token=token, include_spans=False
        )
        stored.update(t.info.trace_id for t in page)
        token = page.token
        if not token:
            break
    print(f"\n3. {n} tracked calls: {calls_s:.2f} s of calls, then orchlab.flush() took {flush_s:.2f} s")
    print(f"  traces in MLflow: {len(stored)} of {n}; every id returned to a caller is stored: "
          f"{set(ids) <= stored}")  # fmt: skip
    return len(stored & set(ids)), flush_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=500, help="measured calls per side (default 500)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--bulk", type=int, default=1000, help="calls that must all reach MLflow")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    base_url, stop = start_server(in_process=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["ORCH_AUTH_BENCH_API_KEY"] = KEY
            os.environ["ORCH_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
            os.environ["ORCH_TRACKING_SPOOL"] = str(Path(tmp) / "spool")
            os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
            config = write_config(Path(tmp), base_url)
            print(f"loopback server {base_url}; SQLite store in {tmp}")
            added = bench_overhead(config, args.n, args.warmup)
            bench_observer(config, min(args.n, 500))
            stored, _ = bench_bulk(config, args.bulk)
    finally:
        stop()
    ok_overhead = added * 1000 <= TARGET_ADDED_P50_MS
    ok_bulk = stored == args.bulk
    print(f"\ntargets: added p50 {added * 1000:.3f} ms <= {TARGET_ADDED_P50_MS} ms: {ok_overhead}; "
          f"all {args.bulk} traces stored: {ok_bulk}")  # fmt: skip
    return 0 if (ok_overhead and ok_bulk) or not args.strict else 1


if __name__ == "__main__":
    raise SystemExit(main())
