"""What ``import orchlab`` and ``%load_ext orchlab`` cost, each in a fresh interpreter.

Run::

    .venv/bin/python benchmarks/notebook_import.py           # 7 fresh processes per measure
    .venv/bin/python benchmarks/notebook_import.py --n 15 --strict

Measured in child processes so nothing is cached in ``sys.modules``:

- ``import orchlab`` from a bare interpreter (target < 0.3 s);
- ``%load_ext orchlab`` in an IPython ``InteractiveShell`` that already exists (as in a kernel,
  where IPython is loaded before the first cell), target < 0.5 s;
- the first ``%llm roles`` (the first magic run: parser, client, config), for reference;
- ``import IPython`` + ``InteractiveShell.instance()`` itself, the baseline a kernel pays anyway.

Each child also reports which heavy modules the step left loaded: loading the extension must not
import ipywidgets, pandas, mlflow, llama_cpp or any provider SDK.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT_TARGET_S = 0.3
LOAD_EXT_TARGET_S = 0.5
HEAVY = (
    "ipywidgets",
    "pandas",
    "mlflow",
    "llama_cpp",
    "matplotlib",
    "openai",
    "anthropic",
    "google.genai",
    "ollama",
    "tiktoken",
    "jinja2",
    "ruamel.yaml",
)

CHILD = r"""
import json, sys, time
heavy = {heavy!r}
out = {{}}
t = time.perf_counter()
if {shell}:
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    out["ipython_s"] = time.perf_counter() - t
    t = time.perf_counter()
    shell.run_line_magic("load_ext", "orchlab")
    out["load_ext_s"] = time.perf_counter() - t
    out["heavy_after_load_ext"] = [m for m in heavy if m in sys.modules]
    t = time.perf_counter()
    shell.run_line_magic("llm", "roles")
    out["first_magic_s"] = time.perf_counter() - t
else:
    import orchlab
    out["import_s"] = time.perf_counter() - t
    out["heavy_after_import"] = [m for m in heavy if m in sys.modules]
print(json.dumps(out))
"""


def child(shell: bool) -> dict[str, object]:
    code = CHILD.format(heavy=HEAVY, shell=shell)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "ORCH_TRACKING": "0", "PATH": "/usr/bin:/bin"},
    )
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=7, help="fresh processes per measure")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    imports = [child(shell=False) for _ in range(args.n)]
    shells = [child(shell=True) for _ in range(args.n)]

    def med(rows: list[dict[str, object]], key: str) -> float:
        return statistics.median(float(r[key]) for r in rows)  # type: ignore[arg-type]

    import_s = med(imports, "import_s")
    load_s = med(shells, "load_ext_s")
    ipy_s = med(shells, "ipython_s")
    first_s = med(shells, "first_magic_s")
    heavy_import = sorted({m for r in imports for m in r["heavy_after_import"]})  # type: ignore[attr-defined]
    heavy_load = sorted({m for r in shells for m in r["heavy_after_load_ext"]})  # type: ignore[attr-defined]

    print(f"median of {args.n} fresh processes each (python {sys.version.split()[0]})")
    print(f"  import orchlab                 {import_s * 1000:7.1f} ms   target < {IMPORT_TARGET_S:.1f} s")
    print(f"  %load_ext orchlab              {load_s * 1000:7.1f} ms   target < {LOAD_EXT_TARGET_S:.1f} s")
    print(f"  first %llm roles (reference)   {first_s * 1000:7.1f} ms")
    print(f"  IPython + InteractiveShell     {ipy_s * 1000:7.1f} ms   (paid by every kernel anyway)")
    print(f"  %load_ext / kernel baseline    {load_s / ipy_s:7.2f} x")
    print(f"  heavy modules after import:    {', '.join(heavy_import) or 'none'}")
    print(f"  heavy modules after %load_ext: {', '.join(heavy_load) or 'none'}")
    ok = import_s < IMPORT_TARGET_S and load_s < LOAD_EXT_TARGET_S and not heavy_import and not heavy_load
    print("PASS" if ok else "MISS")
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    raise SystemExit(main())
