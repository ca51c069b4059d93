"""What a pool's choice of deployment costs: a pooled provider entry against the same adapter
called directly, interleaved in one run (target: p50 added <= 0.05 ms).

Run::

    .venv/bin/python benchmarks/pools.py              # --n 3000 calls per row (--http-n 600)

- **double**: ``client.arun`` on a role bound to a test double (`orchlab.testing.TestProvider`,
  answering at once) against a role bound to a pool of three deployments of that double: the
  difference is the pool alone (choice, counters, cooldown lookups, the response copy).
- **http**: the same over three loopback Ollama-wire servers (the official ``ollama`` SDK), the
  direct role bound to one of them.
- **choice**: `DeploymentPool._pick` + `_done` alone, per request.

Tracking is off. Calls alternate direct / pooled, so load on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("ORCH_CACHE", "off")  # a measurement is never a replay of the response cache

DOUBLE = """
project: bench
tracking: {enabled: false}
providers:
  one: {type: test, options: {models: {m: {reply: "4"}}}}
  pooled:
    type: test
    options: {models: {m: {reply: "4"}}}
    deployments: ["http://d1", "http://d2", "http://d3"]
    pool: {health_check_s: 0}
roles:
  direct: {provider: one, model: m}
  pool: {provider: pooled, model: m}
"""

MESSAGES = [{"role": "user", "content": "hi"}]


def http_config(urls: list[str]) -> str:
    listed = ", ".join(f'"{u}"' for u in urls)
    return f"""
project: bench
tracking: {{enabled: false}}
providers:
  one: {{type: ollama, api_base: "{urls[0]}"}}
  pooled: {{type: ollama, deployments: [{listed}], pool: {{health_check_s: 0}}}}
roles:
  direct: {{provider: one, model: "llama3.1:8b"}}
  pool: {{provider: pooled, model: "llama3.1:8b"}}
"""


def client_for(text: str, folder: Path, name: str) -> Any:
    import orchlab

    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return orchlab.get_llm_client(path)


async def interleaved(client: Any, n: int) -> tuple[list[float], list[float]]:
    direct: list[float] = []
    pooled: list[float] = []
    for _ in range(max(n // 10, 20)):  # warm up both paths (clients, caches)
        await client.arun("direct", MESSAGES)
        await client.arun("pool", MESSAGES)
    for i in range(n):
        for role, out in (
            (("direct", direct), ("pool", pooled)) if i % 2 else (("pool", pooled), ("direct", direct))
        ):
            started = time.perf_counter()
            await client.arun(role, MESSAGES)
            out.append(time.perf_counter() - started)
    return direct, pooled


def row(name: str, direct: list[float], pooled: list[float]) -> None:
    d, p = statistics.median(direct), statistics.median(pooled)
    print(
        f"{name:<8} direct p50 {d * 1e3:7.3f} ms   pool p50 {p * 1e3:7.3f} ms   "
        f"added {(p - d) * 1e3:+.3f} ms   ratio {p / d:.3f}x   (n={len(direct)} each)"
    )


def choice_cost(client: Any, n: int) -> float:
    pool = client.provider("pooled")
    started = time.perf_counter()
    for _ in range(n):
        d = pool._pick([])
        pool._done(d, started)
    return (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--http-n", type=int, default=600)
    args = parser.parse_args()
    from tests.servers.ollama_wire import OllamaWireServer

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        client = client_for(DOUBLE, folder, "double")
        try:
            row("double", *asyncio.run(interleaved(client, args.n)))
            print(f"choice   _pick + _done: {choice_cost(client, 100_000) * 1e6:.2f} µs per request")
        finally:
            client.close()
        servers = [OllamaWireServer(nodelay=True).start() for _ in range(3)]
        try:
            client = client_for(http_config([s.url for s in servers]), folder, "http")
            try:
                row("http", *asyncio.run(interleaved(client, args.http_n)))
            finally:
                client.close()
        finally:
            for s in servers:
                s.stop()


if __name__ == "__main__":
    main()
