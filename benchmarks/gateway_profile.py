"""Where ``orchlab serve`` spends its CPU per chat request, and how two checkouts compare.

Run::

    .venv/bin/python benchmarks/gateway_profile.py                       # this checkout, 4 x 500 requests
    .venv/bin/python benchmarks/gateway_profile.py --baseline /tmp/main  # A/B against another checkout
    .venv/bin/python benchmarks/gateway_profile.py --profile out.prof    # + where the CPU goes
    .venv/bin/python benchmarks/gateway_profile.py --sample out.json     # the same, sampled
    .venv/bin/python benchmarks/gateway_profile.py --floor               # + minimal FastAPI apps

One loopback upstream speaking OpenAI's wire format (``benchmarks/gateway.py --upstream``, its own
process) answers a canned ``chat.completion``. ``orchlab serve`` runs as a subprocess on it, tracking
off; with ``--baseline DIR`` a second one runs from that checkout (``git archive main | tar -x -C DIR``)
on the same upstream. The same request goes one at a time (closed loop: the machine's load, not our
own queueing, sets the waits) in blocks that rotate direct, this checkout, the baseline, so each
side sees the same moments of the machine. Reported per side: CPU per request of the gateway
process (user + system from ``/proc``, the figure that decides how many requests a worker serves and
what each one adds on a loaded machine), and p50/p99 of the latency added over the direct call.

``--floor`` adds, in the same rotation, minimal uvicorn + FastAPI apps (``--floor-app``, this file,
one process each, uvicorn configured as ``orchlab serve`` configures it): one that answers a
canned completion without calling anything (the framework's own floor), and ones that make the
same upstream call through the openai SDK's ``post("/chat/completions")`` (the default httpx2
transport, and the SDK's documented aiohttp one), read the answer as the adapter does
(``ChatCompletion.model_validate_json``) and answer from it: what a gateway that goes through the
SDK cannot go below.

``--profile FILE`` runs this checkout's gateway under cProfile with a CPU clock (``time.thread_time``:
waiting for the upstream or for a core is not counted) and prints the functions taking the most
CPU, grouped by where they live (uvicorn, FastAPI/Starlette, orchlab.serve, the pipeline, the openai
SDK and its HTTP client). cProfile's own cost per call (the gateway runs about 8x slower under it)
weighs on code made of many small calls; ``--sample FILE`` instead samples the gateway's stack on
a CPU-time timer (``SIGPROF``, one sample per few ms of CPU: run 10,000 requests or more) and
prints each group's share of the samples and the functions most often on the stack.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gateway as bench  # noqa: E402  (benchmarks/gateway.py: the upstream, the config, /proc CPU)

PROFILED = """\
import cProfile, os, sys, time
from orchlab.cli import main
profile = cProfile.Profile(time.thread_time)
profile.enable()
try:
    main(sys.argv[1:])
finally:
    profile.disable()
    profile.dump_stats(os.environ["ORCH_BENCH_PROFILE"])
"""
SAMPLED = """\
import collections, json, os, signal, sys
from orchlab.cli import main
stacks = collections.Counter()
def sample(signum, frame):
    chain = []
    while frame is not None:
        chain.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")
        frame = frame.f_back
    stacks[";".join(reversed(chain))] += 1
signal.signal(signal.SIGPROF, sample)
signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)
try:
    main(sys.argv[1:])
finally:
    signal.setitimer(signal.ITIMER_PROF, 0, 0)
    with open(os.environ["ORCH_BENCH_PROFILE"], "w") as out:
        json.dump(stacks, out)
"""
GROUPS = (
    ("openai SDK", "/openai/"),
    ("SDK HTTP client (httpx2/httpcore2/h11/anyio)", ("/httpx2/", "/httpcore2/", "/h11/", "/anyio/")),
    ("orchlab.serve", "/orchlab/serve/"),
    ("orchlab pipeline, providers, orchestrator", "/orchlab/"),
    ("FastAPI / Starlette", ("/fastapi/", "/starlette/")),
    ("uvicorn", "/uvicorn/"),
    ("pydantic", "pydantic"),
    ("json", "/json/"),
    ("asyncio / uvloop", ("/asyncio/", "uvloop")),
)


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


@dataclass
class Side:
    name: str
    url: str
    pid: int | None = None
    latencies_ms: list[float] = field(default_factory=list)
    user_s: float = 0.0
    system_s: float = 0.0
    requests: int = 0


FLOOR_APPS = ("fastapi", "fastapi+sdk", "fastapi+sdk-aiohttp")


def floor_app(kind: str, upstream: str) -> Any:
    """A minimal FastAPI app answering ``POST /v1/chat/completions`` (``kind`` in `FLOOR_APPS`)."""
    import gc

    from fastapi import FastAPI, Request
    from starlette.responses import Response

    app = FastAPI(docs_url=None, redoc_url=None)
    canned = json.dumps(bench.COMPLETION).encode()
    state: dict[str, Any] = {}

    async def readyz() -> Response:
        if kind != "fastapi" and "client" not in state:
            from openai import AsyncOpenAI, DefaultAioHttpClient

            extra = {"http_client": DefaultAioHttpClient()} if kind.endswith("aiohttp") else {}
            state["client"] = AsyncOpenAI(api_key="sk-floor", base_url=upstream, max_retries=0, **extra)
        return Response(b"{}", media_type="application/json")

    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        if kind == "fastapi":
            return Response(canned, media_type="application/json")
        import httpx2
        from openai.types.chat import ChatCompletion

        if "frozen" not in state:
            state["frozen"] = gc.freeze()  # as orchlab serve does after its first answer
        sent = {"model": "bench-upstream", "messages": body["messages"], "temperature": body["temperature"]}
        options = {"security": {"bearer_auth": True}}
        post = state["client"].post
        answer = await post("/chat/completions", body=sent, cast_to=httpx2.Response, options=options)
        resp = ChatCompletion.model_validate_json(answer.content)  # as the adapter reads it
        choice = resp.choices[0]
        answer = {
            "id": resp.id,
            "object": "chat.completion",
            "created": resp.created,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": choice.message.content},
                    "finish_reason": choice.finish_reason,
                }
            ],
            "usage": resp.usage.model_dump() if resp.usage else None,
        }
        return Response(json.dumps(answer).encode(), media_type="application/json")

    # the annotations are strings here (__future__), naming this function's locals: resolved now
    chat.__annotations__ = {"request": Request, "return": Response}
    readyz.__annotations__ = {"return": Response}
    app.get("/readyz")(readyz)
    app.post("/v1/chat/completions")(chat)
    return app


def serve_floor(kind: str, port: int, upstream: str) -> None:
    import uvicorn

    config = uvicorn.Config(
        floor_app(kind, upstream),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    uvicorn.Server(config).run()


def start_floor(folder: Path, kind: str, upstream: str) -> tuple[subprocess.Popen[bytes], str]:
    port = bench.free_port()
    cmd = [sys.executable, __file__, "--floor-app", kind, "--port", str(port), "--upstream-url", upstream]
    log = (folder / f"floor-{kind}.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=folder, stdout=log, stderr=log)
    bench.wait_http(f"http://127.0.0.1:{port}/readyz", proc, f"the {kind} floor app")
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


def start(
    folder: Path, code: Path, upstream: str, profile: Path | None, script: str = PROFILED
) -> tuple[subprocess.Popen[bytes], str]:
    folder.mkdir()
    config = bench.gateway_config(folder, upstream, tracking=False)
    port = bench.free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "MLFLOW_"))},
        "PYTHONPATH": str(code),
        "ORCH_AUTH_BENCH_API_KEY": "sk-bench-upstream",
        "ORCH_CACHE": "off",
        "ORCH_TRACKING": "0",
    }
    if profile is not None:
        env["ORCH_BENCH_PROFILE"] = str(profile)
        (folder / "profiled.py").write_text(script, encoding="utf-8")
        cmd = [sys.executable, str(folder / "profiled.py")]
    else:
        cmd = [sys.executable, "-m", "orchlab"]
    cmd += ["serve", "--config", str(config), "--port", str(port), "--log-level", "warning"]
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=log)
    bench.wait_http(f"http://127.0.0.1:{port}/readyz", proc, f"orchlab serve from {code}")
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


async def run_block(session: Any, side: Side | None, url: str, n: int) -> list[float]:
    body = json.dumps(bench.REQUEST).encode()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        async with session.post(url, data=body, headers={"content-type": "application/json"}) as answer:
            await answer.read()
            if answer.status != 200:
                raise SystemExit(f"{url} answered {answer.status}: {(await answer.text())[:300]}")
        out.append((time.perf_counter() - started) * 1000)
    return out


async def measure(direct: Side, sides: list[Side], blocks: int, per_block: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=10)) as session:
        for side in [direct, *sides]:
            await run_block(session, side, side.url, 200)  # warm: first calls, lazy imports, pools
        order = [direct, *sides]
        for i in range(blocks):
            for side in order[i % len(order) :] + order[: i % len(order)]:
                before = cpu_split(side.pid) if side.pid else (0.0, 0.0)
                side.latencies_ms += await run_block(session, side, side.url, per_block)
                if side.pid:
                    after = cpu_split(side.pid)
                    side.user_s += after[0] - before[0]
                    side.system_s += after[1] - before[1]
                side.requests += per_block


def group_of(filename: str) -> str:
    for name, marks in GROUPS:
        if any(m in filename for m in ((marks,) if isinstance(marks, str) else marks)):
            return name
    return "other (stdlib, builtins)"


def report_samples(path: Path, top: int) -> None:
    """Each group's share of the samples (by the innermost frame), and the functions most often on
    the stack (inclusive); start-up (imports) left out."""
    stacks = {s: n for s, n in json.loads(path.read_text()).items() if "importlib" not in s}
    total = sum(stacks.values())
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    for stack, n in stacks.items():
        frames = stack.split(";")
        group = group_of(frames[-1].rsplit(":", 1)[0])
        own[group] = own.get(group, 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    print(f"\nCPU by where the code lives ({total} samples, start-up left out):")
    for group, n in sorted(own.items(), key=lambda kv: -kv[1]):
        print(f"  {n / total * 100:5.1f}%  {group}")
    print(f"\nTop {top} functions on the stack (inclusive):")
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {n / total * 100:5.1f}%  {frame.split('site-packages/')[-1]}")


def report_profile(path: Path, top: int) -> None:
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    by_group: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in raw.items():
        group = group_of(filename)
        by_group[group] = by_group.get(group, 0.0) + tottime
    print(f"\nCPU by where the code lives (profiled, {total:.2f} s in all, startup included):")
    for group, seconds in sorted(by_group.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds / total * 100:5.1f}%  {group}")
    print(f"\nTop {top} functions by own CPU:")
    stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with (its root)")
    parser.add_argument("--blocks", type=int, default=4, help="blocks per side")
    parser.add_argument("--per-block", type=int, default=500, help="requests per block")
    parser.add_argument("--profile", type=Path, help="profile this checkout's gateway into FILE")
    parser.add_argument("--sample", type=Path, help="sample this checkout's gateway into FILE (JSON)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--floor", action="store_true", help="also measure minimal FastAPI apps")
    parser.add_argument("--floor-app", choices=FLOOR_APPS, help=argparse.SUPPRESS)  # internal
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_app is not None:
        serve_floor(args.floor_app, args.port, args.upstream_url)
        return 0

    procs: list[subprocess.Popen[bytes]] = []
    up_port = bench.free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "gateway.py"), "--upstream", str(up_port)]
    )
    procs.append(upstream)
    try:
        with tempfile.TemporaryDirectory(prefix="orchlab-gateway-profile-") as tmp:
            bench.wait_http(f"http://127.0.0.1:{up_port}/v1/models", upstream, "the upstream")
            up = f"http://127.0.0.1:{up_port}/v1"
            direct = Side("direct", f"{up}/chat/completions")
            sides = []
            checkouts = [("this checkout", ROOT, args.sample or args.profile)]
            if args.baseline is not None:
                checkouts.append(("baseline", args.baseline.resolve(), None))
            for i, (name, code, profile) in enumerate(checkouts):
                script = SAMPLED if args.sample else PROFILED
                proc, url = start(Path(tmp) / f"gw{i}", code, up, profile, script)
                procs.append(proc)
                sides.append(Side(name, url, proc.pid))
            for kind in FLOOR_APPS if args.floor else ():
                proc, url = start_floor(Path(tmp), kind, up)
                procs.append(proc)
                sides.append(Side(f"floor {kind}", url, proc.pid))
            asyncio.run(measure(direct, sides, args.blocks, args.per_block))
            load = Path("/proc/loadavg").read_text().split()[:3]
            d50, d99 = bench.pct(direct.latencies_ms, 50), bench.pct(direct.latencies_ms, 99)
            print(f"load average {' '.join(load)}; direct p50 {d50:.3f} ms, p99 {d99:.3f} ms")
            for side in sides:
                cpu = (side.user_s + side.system_s) * 1000 / side.requests
                system = side.system_s * 1000 / side.requests
                added50 = bench.pct(side.latencies_ms, 50) - d50
                added99 = bench.pct(side.latencies_ms, 99) - d99
                print(
                    f"{side.name:26s} n={side.requests}  gateway CPU {cpu:.3f} ms/req ({system:.3f} system)  "
                    f"added p50 {added50:+.3f} ms  p99 {added99:+.3f} ms"
                )
            if args.baseline is not None:
                a, b = ((s.user_s + s.system_s) / s.requests for s in sides[:2])
                print(f"CPU per request, this checkout / baseline: {a / b:.3f}")
            for proc in procs[1:]:
                # SIGINT: uvicorn re-raises it after its shutdown, as KeyboardInterrupt, so a
                # profiled gateway writes its profile on the way out (SIGTERM's re-raise kills it)
                proc.send_signal(signal.SIGINT)
                proc.wait(60)
            if args.sample is not None:
                report_samples(args.sample, args.top)
            elif args.profile is not None:
                report_profile(args.profile, args.top)
    finally:
        for proc in procs:
            bench.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
