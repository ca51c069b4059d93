"""How long hostile config files take to be refused, as ratios to loading the embedded default
(``orchlab/data/local.yaml``).

Run::

    .venv/bin/python benchmarks/config_load.py            # median of 7 runs per file
    .venv/bin/python benchmarks/config_load.py --n 15

Each file is parsed in this process (the parse is what is measured, not an interpreter start):

- the baseline: ``orchlab/data/local.yaml``, the embedded default;
- a "billion laughs" alias bomb (10**9 strings once expanded) under a provider's ``options:``,
  refused at the alias that passes the alias bound;
- 900-level nesting, refused at level 100;
- 5,000 schema errors (5,000 roles with an unknown key), refused with the first 50 listed;
- 5,000 roles that load, for scale (the 5,000-error file minus its errors).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from orchlab.config import parse_config
from orchlab.config.loader import default_config_path
from orchlab.errors import ConfigError


def _bomb(levels: int = 9, width: int = 10) -> str:
    lines = ["project: p", "providers:", "  openai:", "    options:"]
    lines.append("      l0: &l0 [" + ", ".join(["lol"] * width) + "]")
    for n in range(1, levels):
        lines.append(f"      l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _roles(n: int, extra: str) -> str:
    body = "".join(f"  r{i}: {{provider: openai, model: m{extra}}}\n" for i in range(n))
    return "project: p\nproviders:\n  openai: {}\nroles:\n" + body


def _time(text: str, n: int) -> tuple[float, str]:
    runs = []
    outcome = "loaded"
    for _ in range(n):
        start = time.perf_counter()
        try:
            parse_config(text, source="bench.yaml")
        except ConfigError as exc:
            outcome = f"{type(exc).__name__}: {str(exc).splitlines()[-1].strip()[:70]}"
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), outcome


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=7, help="runs per file (the median is shown)")
    args = parser.parse_args()

    cases: list[tuple[str, Callable[[], str]]] = [
        (
            "orchlab/data/local.yaml (baseline)",
            lambda: default_config_path().read_text(encoding="utf-8"),
        ),
        ("alias bomb, 10**9 once expanded", _bomb),
        ("900-level nesting", lambda: "project: p\nx: " + "[" * 900 + "]" * 900 + "\n"),
        ("5,000 schema errors", lambda: _roles(5000, ", bogus: 1")),
        ("5,000 roles that load", lambda: _roles(5000, "")),
    ]
    base = None
    print(f"{'file':34} {'median':>10} {'ratio':>8}  outcome")
    for name, make in cases:
        seconds, outcome = _time(make(), args.n)
        base = base or seconds
        print(f"{name:34} {seconds * 1000:8.2f} ms {seconds / base:7.1f}×  {outcome}")


if __name__ == "__main__":
    main()
