"""What ``orchlab serve`` adds to a chat request, open-loop at a fixed arrival rate (issue 14, item 7).

Run::

    .venv/bin/python benchmarks/gateway.py                     # 100 and 500 req/s, 10 s per side
    .venv/bin/python benchmarks/gateway.py --rates 100 --seconds 5 --json out.json

The same ``POST /v1/chat/completions`` body goes (a) straight to a loopback upstream that speaks
OpenAI's wire format and (b) through ``orchlab serve`` (one worker) to that upstream. The upstream is a
raw asyncio HTTP/1.1 server in its own process answering a canned ``chat.completion``, so it is not
the bottleneck. Requests are fired on a fixed schedule (open loop: request i leaves at ``i / rate``
whatever happened to the earlier ones) from an aiohttp client in this process, in blocks that
alternate a, b, a, b, ... (after a warm-up block of each). Latency is measured from the moment a
request is sent to the end of its body; the report gives the added p50/p95/p99 (b minus a), the
errors of each side (non-200 answers, client timeouts, connection errors), how late the generator
fired (to show it kept up), and the gateway's CPU per request (user + system time of its process
from ``/proc/<pid>/stat`` across the b blocks, divided by their requests).

Both tracking off (``ORCH_TRACKING=0``) and on (the journal, drained into a SQLite MLflow store in
a temp dir by the background drain process, which is stopped at the end) are measured, each with a
fresh gateway. Targets on the 2-core machine: added p50 <= 1 ms and p99 <= 5 ms at 100 req/s, no
errors at 500 req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_P50_MS = 1.0
TARGET_P99_MS = 5.0
REQUEST = {
    "model": "bench",
    "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}],
    "temperature": 0,
    "max_tokens": 16,
}
COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "bench-upstream",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi.", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}
MODELS = {
    "object": "list",
    "data": [{"id": "bench-upstream", "object": "model", "created": 0, "owned_by": "x"}],
}


# --- the upstream: a canned OpenAI-wire answer, in its own process -------------------------------------


def _reply(body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    return head.encode() + data


async def _serve_upstream(port: int) -> None:
    completion, models = _reply(COMPLETION), _reply(MODELS)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                writer.write(models if head.startswith(b"GET") else completion)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# --- processes -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} was not ready at {url} in {timeout_s:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_drains(spool: Path, timeout_s: float = 30.0) -> None:
    """SIGTERM each tracking drain serving a store under ``spool`` (by the pid in its status.json),
    and wait until it is gone."""
    pids = []
    for status in spool.glob("*/status.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads(status.read_text())["pid"])
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if Path(f"/proc/{p}").exists()]
        time.sleep(0.05)


def gateway_config(folder: Path, upstream: str, *, tracking: bool) -> Path:
    path = folder / "gateway.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            project: gateway_bench
            env: bench
            providers:
              upstream: {{type: openai, api_base: "{upstream}", auth_profile: bench}}
            roles:
              bench: {{provider: upstream, model: bench-upstream}}
            tracking:
              enabled: {"true" if tracking else "false"}
              tracking_uri: sqlite:///{folder}/mlflow.db
              spool_dir: {folder}/spool
            """
        ),
        encoding="utf-8",
    )
    return path


# --- the load ------------------------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    cpu_s: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _one(session: Any, url: str, body: bytes, side: Side | None, timeout_s: float) -> None:
    import aiohttp

    started = time.perf_counter()
    try:
        async with session.post(
            url,
            data=body,
            headers={"content-type": "application/json", "authorization": "Bearer sk-bench"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as answer:
            await answer.read()
            status = answer.status
    except TimeoutError:
        if side is not None:
            side.error("timeout")
        return
    except aiohttp.ClientError as exc:
        if side is not None:
            side.error(type(exc).__name__)
        return
    if side is None:
        return
    if status != 200:
        side.error(f"HTTP {status}")
        return
    side.latencies_ms.append((time.perf_counter() - started) * 1000)


async def block(
    session: Any, url: str, rate: float, seconds: float, side: Side | None, timeout_s: float
) -> None:
    """Fire ``rate * seconds`` requests at ``url`` on a fixed schedule, then wait for all of them."""
    body = json.dumps(REQUEST).encode()
    loop = asyncio.get_running_loop()
    n = round(rate * seconds)
    start = loop.time() + 0.01
    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if side is not None:
            side.lag_ms.append(max(0.0, loop.time() - due) * 1000)
            side.requests += 1
        tasks.append(asyncio.create_task(_one(session, url, body, side, timeout_s)))
    await asyncio.gather(*tasks)


async def measure(
    direct_url: str, gateway_url: str, gateway_pid: int, *, rate: float, seconds: float, block_s: float
) -> tuple[Side, Side]:
    import aiohttp

    direct, through = Side("direct"), Side("gateway")
    connector = aiohttp.TCPConnector(limit=1000, limit_per_host=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector) as session:
        warm = min(block_s, 1.0)
        await block(session, direct_url, rate, warm, None, 10)
        await block(session, gateway_url, rate, warm, None, 10)
        blocks = max(1, round(seconds / block_s))
        for i in range(blocks):
            # a b a b ... then b a b a ...: neither side always runs right after the other
            order = [(direct_url, direct), (gateway_url, through)]
            for url, side in order if i % 2 == 0 else order[::-1]:
                before = cpu_seconds(gateway_pid)
                await block(session, url, rate, block_s, side, 10)
                if side is through:
                    side.cpu_s += cpu_seconds(gateway_pid) - before
    return direct, through


def start_gateway(folder: Path, upstream: str, *, tracking: bool) -> tuple[subprocess.Popen[bytes], str]:
    config = gateway_config(folder, upstream, tracking=tracking)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "MLFLOW_"))},
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "ORCH_AUTH_BENCH_API_KEY": "sk-bench-upstream",
        "ORCH_CACHE": "off",
        "ORCH_TRACKING": "1" if tracking else "0",
        "MLFLOW_MODEL_CATALOG_URI": "",
    }
    cmd = [sys.executable, "-m", "orchlab", "serve", "--config", str(config), "--host", "127.0.0.1"]
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--log-level", "warning"], cwd=folder, env=env, stdout=log, stderr=log
    )
    wait_http(f"http://127.0.0.1:{port}/readyz", proc, "orchlab serve")
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


def row(rate: float, tracking: bool, direct: Side, through: Side) -> dict[str, Any]:
    out: dict[str, Any] = {"rate": rate, "tracking": tracking, "requests": through.requests}
    for q in (50, 95, 99):
        out[f"direct_p{q}_ms"] = pct(direct.latencies_ms, q)
        out[f"gateway_p{q}_ms"] = pct(through.latencies_ms, q)
        out[f"added_p{q}_ms"] = out[f"gateway_p{q}_ms"] - out[f"direct_p{q}_ms"]
    out["direct_errors"] = direct.errors
    out["gateway_errors"] = through.errors
    out["generator_lag_p99_ms"] = pct(direct.lag_ms + through.lag_ms, 99)
    out["gateway_cpu_ms_per_request"] = through.cpu_s * 1000 / max(1, through.requests)
    out["gateway_mean_ms"] = statistics.fmean(through.latencies_ms) if through.latencies_ms else float("nan")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 500.0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per side and rate")
    parser.add_argument("--block", type=float, default=2.0, help="seconds per a or b block")
    parser.add_argument("--tracking", choices=["off", "on", "both"], default="both")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)  # internal: be the upstream
    args = parser.parse_args(argv)
    if args.upstream is not None:
        asyncio.run(_serve_upstream(args.upstream))
        return 0

    modes = {"off": [False], "on": [True], "both": [False, True]}[args.tracking]
    rows = []
    up_port = free_port()
    upstream = subprocess.Popen([sys.executable, __file__, "--upstream", str(up_port)])
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", upstream, "the upstream")
        direct_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        for tracking in modes:
            with tempfile.TemporaryDirectory(
                prefix="orchlab-gateway-bench-", ignore_cleanup_errors=True
            ) as tmp:
                gateway, gateway_url = start_gateway(
                    Path(tmp), f"http://127.0.0.1:{up_port}/v1", tracking=tracking
                )
                try:
                    for rate in args.rates:
                        direct, through = asyncio.run(
                            measure(
                                direct_url,
                                gateway_url,
                                gateway.pid,
                                rate=rate,
                                seconds=args.seconds,
                                block_s=args.block,
                            )
                        )
                        rows.append(row(rate, tracking, direct, through))
                        print_row(rows[-1])
                finally:
                    stop(gateway)
                    stop_drains(Path(tmp) / "spool")
    finally:
        stop(upstream)

    verdicts = []
    for r in rows:
        if r["rate"] == 100 and not r["tracking"]:
            verdicts.append(f"added p50 {r['added_p50_ms']:.2f} ms (target <= {TARGET_P50_MS})")
            verdicts.append(f"added p99 {r['added_p99_ms']:.2f} ms (target <= {TARGET_P99_MS})")
        if r["rate"] == 500:
            n = sum(r["gateway_errors"].values())
            verdicts.append(f"errors at 500/s, tracking {'on' if r['tracking'] else 'off'}: {n} (target 0)")
    for line in verdicts:
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


def print_row(r: dict[str, Any]) -> None:
    mode = "on " if r["tracking"] else "off"
    print(
        f"{r['rate']:5.0f}/s tracking {mode} n={r['requests']:5d}  "
        f"direct p50/95/99 {r['direct_p50_ms']:6.2f} {r['direct_p95_ms']:6.2f} {r['direct_p99_ms']:7.2f} ms  "
        f"added {r['added_p50_ms']:+6.2f} {r['added_p95_ms']:+6.2f} {r['added_p99_ms']:+7.2f} ms  "
        f"gateway CPU {r['gateway_cpu_ms_per_request']:.2f} ms/req  "
        f"errors direct {r['direct_errors'] or 0} gateway {r['gateway_errors'] or 0}  "
        f"lag p99 {r['generator_lag_p99_ms']:.2f} ms",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
