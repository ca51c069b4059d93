"""1,000 ``await client.arun()`` calls at concurrency 100 vs the raw ``AsyncOpenAI`` (issue 13 item 3).

Run::

    .venv/bin/python benchmarks/concurrency.py            # --calls 1000 --concurrency 100 --repeats 3

The loopback OpenAI-wire server (tests/servers/openai_wire.py, in a child process so it does not
compete with the client for the GIL) answers every request after ``--latency-ms`` (100 ms), like a
model would. Each side sends ``--calls`` requests from ``--concurrency`` tasks on one event loop;
the sides alternate (raw first in even repeats, orchlab first in odd ones) after a warm-up burst
each. Figures: the median wall time of each side and their ratio, the median of each repeat's own
ratio (its two sides ran back to back, so it drifts less with a shared machine's load), and the
client process's CPU time per call (all its threads: orchlab's engine thread included). Target:
orchlab within 1.05x of raw's wall time. MLflow tracking is off (``ORCH_TRACKING=0``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ORCH_CACHE", "off")  # a measurement is never a replay of the response cache
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.overhead import KEY, MESSAGES, MODEL, write_config  # noqa: E402

WALL_TARGET = 1.05

_SERVER_CODE = """
import sys
from dataclasses import replace
from http.server import ThreadingHTTPServer
sys.path.insert(0, sys.argv[1])
ThreadingHTTPServer.request_queue_size = 512   # 100 connections opened at once
from tests.servers.openai_wire import OpenAIWireServer

class Slow(OpenAIWireServer):
    def reply_for(self, scripted, method, path, body):
        return replace(super().reply_for(scripted, method, path, body), delay_s=float(sys.argv[2]))

server = Slow(nodelay=True).start()
print(server.base_url, flush=True)
sys.stdin.read()   # run until the parent closes our stdin
server.stop()
"""


def start_server(latency_s: float) -> tuple[str, Callable[[], None]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER_CODE, str(ROOT), str(latency_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    base_url = proc.stdout.readline().strip()
    if not base_url.startswith("http"):
        proc.kill()
        raise SystemExit(f"the loopback server did not start (got {base_url!r})")

    def stop() -> None:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return base_url, stop


async def burst(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> tuple[float, float]:
    """``calls`` calls from ``concurrency`` tasks: (wall seconds, process CPU seconds)."""
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, time.process_time() - cpu0


async def bench(config: Path, base_url: str, args: argparse.Namespace) -> dict[str, float]:
    import openai

    import orchlab

    client = orchlab.get_llm_client(config)
    raw = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0, timeout=60.0)

    async def via_orchlab() -> None:
        r = await client.arun("llm.bench", MESSAGES)
        assert r.content, r

    async def via_sdk() -> None:
        r = await raw.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            temperature=0,
            max_completion_tokens=16,
        )
        assert r.choices[0].message.content, r

    sides = {"raw AsyncOpenAI": via_sdk, "orchlab arun": via_orchlab}
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    for call in sides.values():  # warm-up: connections opened, imports done
        await burst(call, args.concurrency, args.concurrency)
    for i in range(args.repeats):
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        for name in order:
            w, c = await burst(sides[name], args.calls, args.concurrency)
            wall[name].append(w)
            cpu[name].append(c)
            print(f"  repeat {i + 1} {name:16} wall {w:6.3f} s  cpu {c / args.calls * 1000:6.3f} ms/call")
    await raw.close()
    await client.aclose()

    med = {k: statistics.median(v) for k, v in wall.items()}
    cpu_ms = {k: statistics.median(v) / args.calls * 1000 for k, v in cpu.items()}
    ratio = med["orchlab arun"] / med["raw AsyncOpenAI"]
    # each repeat's two sides ran back to back: their ratio drifts less with the machine's load
    paired = statistics.median(
        o / r for o, r in zip(wall["orchlab arun"], wall["raw AsyncOpenAI"], strict=True)
    )
    print(
        f"\n{args.calls} calls at concurrency {args.concurrency}, {args.latency_ms:g} ms server latency,"
        f" median of {args.repeats}:"
    )
    for name in sides:
        print(f"  {name:16} wall {med[name]:6.3f} s   cpu {cpu_ms[name]:6.3f} ms/call")
    added = cpu_ms["orchlab arun"] - cpu_ms["raw AsyncOpenAI"]
    print(
        f"  ratio (orchlab / raw) {ratio:.3f}x   paired median {paired:.3f}x   cpu added {added:+.3f} ms/call"
    )
    return {"ratio": ratio, "paired": paired, "cpu_added_ms": added}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1000, help="calls per side and repeat (default 1000)")
    parser.add_argument("--concurrency", type=int, default=100, help="tasks sending at once (default 100)")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="server latency (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per side (default 3)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    os.environ["ORCH_TRACKING"] = "0"
    os.environ["ORCH_AUTH_BENCH_API_KEY"] = KEY
    base_url, stop = start_server(args.latency_ms / 1000)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = asyncio.run(bench(write_config(Path(tmp), base_url), base_url, args))
    finally:
        stop()
    ok = result["ratio"] <= WALL_TARGET
    print(f"\ntarget: wall time <= {WALL_TARGET} x raw: {'met' if ok else 'MISSED'}")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
