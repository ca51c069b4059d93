"""A 50-chunk stream through orchlab vs the raw ``openai`` SDK's stream (issue 13 item 2).

Run::

    .venv/bin/python benchmarks/streams.py            # --n 200 streams per side

The loopback OpenAI-wire server (tests/servers/openai_wire.py, in a child process) echoes a
50-word prompt as 50 content chunks. Sync: iterating ``client.stream()`` vs the raw ``OpenAI``
client's ``stream=True``; async: ``async for`` over ``client.stream()`` vs ``AsyncOpenAI``.
Interleaved (ABAB..., then BABA...) after a warm-up. Figures: whole stream (p50, ratio) and time to
the first text chunk (p50, added). Targets: whole stream <= 1.1x raw, first chunk <= +0.3 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.overhead import KEY, MODEL, pct, start_server, write_config  # noqa: E402

WHOLE_TARGET = 1.1
FIRST_TARGET_MS = 0.3
MESSAGES = [{"role": "user", "content": " ".join(f"w{i}" for i in range(50))}]

Timed = tuple[float, float]  # (time to first text chunk, whole stream)


def timed_sync(it: object) -> Timed:
    t0 = time.perf_counter()
    first = None
    n = 0
    for _ in it:  # type: ignore[attr-defined]
        if first is None:
            first = time.perf_counter() - t0
        n += 1
    assert first is not None and n >= 50, n
    return first, time.perf_counter() - t0


def interleave(
    n: int, warmup: int, a: Callable[[], Timed], b: Callable[[], Timed]
) -> tuple[list[Timed], list[Timed]]:
    for _ in range(warmup):
        a()
        b()
    ta: list[Timed] = []
    tb: list[Timed] = []
    for i in range(n):
        for fn, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            out.append(fn())
    return ta, tb


async def ainterleave(
    n: int, warmup: int, a: Callable[[], Awaitable[Timed]], b: Callable[[], Awaitable[Timed]]
) -> tuple[list[Timed], list[Timed]]:
    for _ in range(warmup):
        await a()
        await b()
    ta: list[Timed] = []
    tb: list[Timed] = []
    for i in range(n):
        for fn, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            out.append(await fn())
    return ta, tb


def report(title: str, orch: list[Timed], raw: list[Timed]) -> dict[str, float]:
    of, ow = pct([t[0] for t in orch], 0.5), pct([t[1] for t in orch], 0.5)
    rf, rw = pct([t[0] for t in raw], 0.5), pct([t[1] for t in raw], 0.5)
    print(f"\n{title}  (n={len(orch)} each, interleaved, p50)")
    print(f"  whole stream   raw {rw * 1000:8.3f} ms   orchlab {ow * 1000:8.3f} ms   ratio {ow / rw:6.3f} x")
    print(
        f"  first chunk    raw {rf * 1000:8.3f} ms   orchlab {of * 1000:8.3f} ms"
        f"   added {(of - rf) * 1000:+7.3f} ms"
    )
    return {"ratio": ow / rw, "first_added_ms": (of - rf) * 1000}


def bench_sync(config: Path, base_url: str, n: int, warmup: int) -> dict[str, float]:
    import openai

    import orchlab

    client = orchlab.get_llm_client(config)
    raw = openai.OpenAI(api_key=KEY, base_url=base_url, max_retries=0, timeout=60.0)

    def via_orchlab() -> Timed:
        s = client.stream("llm.bench", MESSAGES)
        timed = timed_sync(s)
        assert s.response is not None
        return timed

    def via_sdk() -> Timed:
        t0 = time.perf_counter()
        first = None
        n = 0
        for chunk in raw.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                if first is None:
                    first = time.perf_counter() - t0
                n += 1
        assert first is not None and n >= 50, n
        return first, time.perf_counter() - t0

    orch, sdk = interleave(n, warmup, via_orchlab, via_sdk)
    raw.close()
    client.close()
    return report("sync: for delta in client.stream() vs OpenAI(stream=True)", orch, sdk)


def bench_async(config: Path, base_url: str, n: int, warmup: int) -> dict[str, float]:
    import openai

    import orchlab

    async def main() -> dict[str, float]:
        client = orchlab.get_llm_client(config)
        raw = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0, timeout=60.0)

        async def via_orchlab() -> Timed:
            t0 = time.perf_counter()
            first = None
            n = 0
            s = client.stream("llm.bench", MESSAGES)
            async for _ in s:
                if first is None:
                    first = time.perf_counter() - t0
                n += 1
            assert first is not None and n >= 50 and s.response is not None, n
            return first, time.perf_counter() - t0

        async def via_sdk() -> Timed:
            t0 = time.perf_counter()
            first = None
            n = 0
            async for chunk in await raw.chat.completions.create(
                model=MODEL,
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    if first is None:
                        first = time.perf_counter() - t0
                    n += 1
            assert first is not None and n >= 50, n
            return first, time.perf_counter() - t0

        orch, sdk = await ainterleave(n, warmup, via_orchlab, via_sdk)
        await raw.close()
        await client.aclose()
        return report("async: async for delta in client.stream() vs AsyncOpenAI(stream=True)", orch, sdk)

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200, help="streams per side (default 200)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--in-process", action="store_true", help="run the server in this process")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    os.environ["ORCH_TRACKING"] = "0"
    os.environ["ORCH_AUTH_BENCH_API_KEY"] = KEY
    base_url, stop = start_server(args.in_process)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = write_config(Path(tmp), base_url)
            results = [bench_sync(config, base_url, args.n, args.warmup)]
            results.append(bench_async(config, base_url, args.n, args.warmup))
    finally:
        stop()
    ok = all(r["ratio"] <= WHOLE_TARGET and r["first_added_ms"] <= FIRST_TARGET_MS for r in results)
    print(
        f"\ntargets: whole stream <= {WHOLE_TARGET} x raw, first chunk <= +{FIRST_TARGET_MS} ms:"
        f" {'met' if ok else 'MISSED'}"
    )
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
