"""What keys add to a gateway request: authentication, the rate limits and the budget check
(issue 16; target: added p50 <= 0.5 ms).

Run::

    .venv/bin/python benchmarks/gateway_auth.py            # --n 2000 requests per side
    .venv/bin/python benchmarks/gateway_auth.py --redis    # rpm/tpm counted in a redis-server

One gateway process serves the same config twice, on two ports of one event loop: **open**
(``auth: none``) and **keys** (``auth: keys``; the key has rpm, tpm and a budget, so every request
is checked against the store, counted in the rate-limit windows, and reserves and settles its
worst case in the usage ledger; SQLite store). The upstream is the loopback OpenAI-wire server in
its own process. Requests alternate open / keys from one client (closed loop, one at a time), so
load on the machine hits both alike; the report gives p50/p95 of each and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_P50_MS = 0.5
KEY_LIMITS = {"rpm": 10_000_000, "tpm": 10_000_000_000, "budget": "1000000/day"}
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 16}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(upstream: str, store: Path, auth: str, limits_store: str) -> str:
    return f"""
project: bench
tracking: {{enabled: false}}
store: {{url: "sqlite:///{store}"}}
providers:
  up: {{type: openai, api_base: "{upstream}", auth_profile: up, max_retries: 0}}
models:
  "up:m": {{input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}
roles:
  bench: {{provider: up, model: m}}
gateway: {{auth: {auth}, rate_limit_store: "{limits_store}"}}
"""


def serve(open_yaml: str, keys_yaml: str, ports: tuple[int, int]) -> None:
    """The gateway process: both apps on one loop."""
    import uvicorn

    from orchlab.serve import create_app

    async def main() -> None:
        servers = [
            uvicorn.Server(uvicorn.Config(create_app(path), host="127.0.0.1", port=port, log_level="warning"))
            for path, port in ((open_yaml, ports[0]), (keys_yaml, ports[1]))
        ]
        await asyncio.gather(*(s.serve() for s in servers))

    asyncio.run(main())


def wait_up(url: str, deadline_s: float = 60) -> None:
    import httpx

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="requests per side")
    ap.add_argument("--redis", action="store_true", help="count rate limits in a redis-server")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    ap.add_argument(
        "--key",
        default=json.dumps(KEY_LIMITS),
        help="the key's limits as JSON (default: %(default)s; '{}': authentication alone)",
    )
    args = ap.parse_args()

    import httpx

    import orchlab

    tmp = Path(tempfile.mkdtemp(prefix="orchlab-bench-auth-"))
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ORCH_TRACKING": "0", "ORCH_AUTH_UP_API_KEY": "sk-bench"}
    env["ORCH_CACHE"] = "off"  # a measurement is never a replay of the response cache
    env["ORCH_GATEWAY_SECRET"] = "bench-secret-" + "0" * 40
    names = ("ORCH_TRACKING", "ORCH_CACHE", "ORCH_AUTH_UP_API_KEY", "ORCH_GATEWAY_SECRET")
    os.environ.update({k: env[k] for k in names})
    try:
        up = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from tests.servers.openai_wire import OpenAIWireServer as S\n"
                "import time\ns = S(nodelay=True).start()\nprint(s.base_url, flush=True)\ntime.sleep(1e6)",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
        )
        procs.append(up)
        assert up.stdout is not None
        upstream = up.stdout.readline().decode().strip()
        limits_store = "memory://"
        if args.redis:
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [
                        shutil.which("redis-server") or "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
            limits_store = f"redis://127.0.0.1:{port}"
        store = tmp / "store.db"
        paths = []
        for auth in ("none", "keys"):
            p = tmp / f"{auth}.yaml"
            p.write_text(config(upstream, store, auth, limits_store))
            paths.append(str(p))
        client = orchlab.get_llm_client(paths[1])
        key = client.keys.create("bench", **json.loads(args.key)).key
        client.close()
        ports = (free_port(), free_port())
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from benchmarks.gateway_auth import serve; "
                    f"serve({paths[0]!r}, {paths[1]!r}, {ports!r})",
                ],
                cwd=ROOT,
                env=env,
            )
        )
        for p in ports:
            wait_up(f"http://127.0.0.1:{p}/healthz")
        sides = {
            "open": (f"http://127.0.0.1:{ports[0]}/v1/chat/completions", {}),
            "keys": (f"http://127.0.0.1:{ports[1]}/v1/chat/completions", {"authorization": f"Bearer {key}"}),
        }
        took: dict[str, list[float]] = {"open": [], "keys": []}
        with httpx.Client(timeout=30) as http:
            for i in range(args.n + 200):
                for name in ("open", "keys") if i % 2 else ("keys", "open"):
                    url, headers = sides[name]
                    t0 = time.perf_counter()
                    r = http.post(url, json=BODY, headers=headers)
                    dt = time.perf_counter() - t0
                    if r.status_code != 200:
                        raise RuntimeError(f"{name}: {r.status_code} {r.text[:200]}")
                    if r.headers.get("x-orchlab-cache") == "hit":
                        raise RuntimeError(f"{name}: answered from the response cache, not measured")
                    if i >= 200:  # warm-up
                        took[name].append(dt * 1000)
        out = {
            name: {"p50_ms": statistics.median(v), "p95_ms": pct(v, 0.95), "n": len(v)}
            for name, v in took.items()
        }
        added = out["keys"]["p50_ms"] - out["open"]["p50_ms"]
        out["added_p50_ms"] = added
        out["rate_limit_store"] = "redis" if args.redis else "memory"
        print(f"rate limits in {out['rate_limit_store']}; {args.n} requests per side, interleaved")
        for name in ("open", "keys"):
            print(f"  {name:5} p50 {out[name]['p50_ms']:.3f} ms   p95 {out[name]['p95_ms']:.3f} ms")
        verdict = "met" if added <= TARGET_P50_MS else "NOT met"
        print(
            f"  added by keys + rate limits + budget: p50 {added:+.3f} ms "
            f"(target <= {TARGET_P50_MS} ms: {verdict})"
        )
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
        return 0
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
