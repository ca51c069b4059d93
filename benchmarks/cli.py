"""Start-up time of ``orchlab --help`` against a bare interpreter (``python -c pass``), interleaved.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/cli.py [--rounds 15]`` (target: ``orchlab --help`` ≤ 0.3 s).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    rounds = ap.parse_args().rounds
    bare, cli = [], []
    timed([sys.executable, "-m", "orchlab", "--help"])  # warm the file cache
    for _ in range(rounds):  # interleaved: both see the same machine load
        bare.append(timed([sys.executable, "-c", "pass"]))
        cli.append(timed([sys.executable, "-m", "orchlab", "--help"]))
    b, c = statistics.median(bare), statistics.median(cli)
    print(f"python -c pass       median {b * 1000:7.1f} ms")
    print(f"orchlab --help       median {c * 1000:7.1f} ms  ({c / b:.1f}x bare, +{(c - b) * 1000:.0f} ms)")
    print(f"target ≤ 300 ms: {'met' if c <= 0.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
