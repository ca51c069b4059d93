"""The response cache (issue 20): what a hit costs, whether its key is stable, whether it misses
when it must.

Run::

    .venv/bin/python benchmarks/cache.py            # --n 2000 hits
    .venv/bin/python benchmarks/cache.py --strict   # exit 1 when a target is missed

1. A hit on SQLite (the default store): ``client.run()`` of a deterministic request answered
   before, p50 over ``--n`` calls, next to the same request sent through the raw ``openai`` SDK
   to a loopback OpenAI-wire server (the baseline, same run). Target: hit <= 0.5 ms p50.
2. The key in two fresh processes (different hash seeds), with the params' dicts built in
   opposite orders: the same SHA-256.
3. 20 variations of one request, each changing one thing (a parameter, the model, the provider
   entry, a message, the tools): all 20 are misses, each sent once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
HIT_TARGET_MS = 0.5
MESSAGES = [{"role": "user", "content": "What is 2+2?"}]

KEY_SCRIPT = """
import json, sys
from orchlab.pipeline.cache import cache_key
from orchlab.resolution import ResolvedLLMConfig
from orchlab.types import GenerationParams, Message, ModelRequest
extra = json.loads(sys.argv[1])
resolved = ResolvedLLMConfig("oa", "openai", "m", None, "http://127.0.0.1:1/v1")
request = ModelRequest("m", (Message("user", "What is 2+2?"),), GenerationParams(temperature=0, extra=extra))
print(cache_key(resolved, request))
"""


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    os.environ.pop("ORCH_CACHE", None)
    os.environ["ORCH_TRACKING"] = "0"
    os.environ["ORCH_AUTH_OA_API_KEY"] = "sk-bench-0123456789"

    import openai

    import orchlab
    from tests.servers.openai_wire import OpenAIWireServer

    ok = True
    with tempfile.TemporaryDirectory() as tmp, OpenAIWireServer(nodelay=True) as server:
        os.chdir(tmp)
        config = Path(tmp) / "cache.yaml"
        config.write_text(
            textwrap.dedent(f"""\
                project: bench
                providers:
                  oa: {{type: openai, api_base: "{server.base_url}", max_retries: 0}}
                  ob: {{type: openai, api_base: "{server.base_url}", auth_profile: oa, max_retries: 0}}
                roles:
                  det: {{provider: oa, model: m, params: {{temperature: 0, max_tokens: 16}}}}
                """),
            encoding="utf-8",
        )
        client = orchlab.get_llm_client(config)
        raw = openai.OpenAI(base_url=server.base_url, api_key="sk-bench-0123456789", max_retries=0)

        # 1. a hit, next to the raw SDK's call
        assert client.run("det", MESSAGES).cache == "miss"
        for _ in range(50):  # warm-up of both sides
            client.run("det", MESSAGES)
            raw.chat.completions.create(model="m", messages=MESSAGES, temperature=0, max_tokens=16)  # type: ignore[arg-type]
        hits, sdk = [], []
        for i in range(args.n):
            t = time.perf_counter()
            r = client.run("det", MESSAGES)
            hits.append(time.perf_counter() - t)
            assert r.cache == "hit" and r.cost_usd == 0.0
            if i % 4 == 0:  # the baseline needs fewer samples
                t = time.perf_counter()
                raw.chat.completions.create(model="m", messages=MESSAGES, temperature=0, max_tokens=16)  # type: ignore[arg-type]
                sdk.append(time.perf_counter() - t)
        hit, base = p50_ms(hits), p50_ms(sdk)
        passed = hit <= HIT_TARGET_MS
        ok &= passed
        print(
            f"1. hit (SQLite, {args.n} calls): p50 {hit:.3f} ms, p99 "
            f"{sorted(hits)[int(len(hits) * 0.99)] * 1000:.3f} ms; raw SDK call to loopback p50 "
            f"{base:.3f} ms; the hit is {base / hit:.0f}x faster  [target <= {HIT_TARGET_MS} ms: "
            f"{'ok' if passed else 'MISSED'}]"
        )

        # 2. the key across processes and dict orders
        one = '{"response_format": {"type": "json_object", "strict": true}, "presence_penalty": 0.5}'
        two = '{"presence_penalty": 0.5, "response_format": {"strict": true, "type": "json_object"}}'
        keys = [
            subprocess.run(
                [sys.executable, "-c", KEY_SCRIPT, extra],
                env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            for extra, seed in ((one, "1"), (two, "2"))
        ]
        passed = len(set(keys)) == 1 and len(keys[0]) == 64
        ok &= passed
        print(
            f"2. key in 2 processes, opposite dict orders: {keys[0][:16]}… == {keys[1][:16]}…  "
            f"[{'ok' if passed else 'MISSED'}]"
        )

        # 3. 20 variations, each changing one thing, all missing
        base_params: dict[str, object] = {"temperature": 0, "max_tokens": 16}
        variations: list[tuple[str, str, list[dict[str, str]], dict[str, object], dict[str, object]]] = [
            ("temperature", "det", MESSAGES, {"temperature": 0.5}, {"cache": "force"}),
            ("max_tokens", "det", MESSAGES, {"max_tokens": 17}, {}),
            ("top_p", "det", MESSAGES, {"top_p": 0.9}, {}),
            ("stop", "det", MESSAGES, {"stop": ["\n"]}, {}),
            ("seed", "det", MESSAGES, {"seed": 1}, {}),
            ("logprobs", "det", MESSAGES, {"logprobs": True}, {}),
            ("presence_penalty", "det", MESSAGES, {"presence_penalty": 0.1}, {}),
            ("frequency_penalty", "det", MESSAGES, {"frequency_penalty": 0.1}, {}),
            ("response_format", "det", MESSAGES, {"response_format": {"type": "json_object"}}, {}),
            ("logit_bias", "det", MESSAGES, {"logit_bias": {"1": 1}}, {}),
            ("n", "det", MESSAGES, {"n": 1}, {}),
            ("user", "det", MESSAGES, {"user": "someone"}, {}),
            ("model", "oa:m2", MESSAGES, {}, {}),
            ("provider entry", "ob:m", MESSAGES, {}, {}),
            ("message text", "det", [{"role": "user", "content": "What is 2+3?"}], {}, {}),
            ("a system message", "det", [{"role": "system", "content": "Be brief."}, *MESSAGES], {}, {}),
            ("message role", "det", [{"role": "assistant", "content": "What is 2+2?"}, *MESSAGES], {}, {}),
            ("tools", "det", MESSAGES, {}, {"tools": [{"type": "function", "function": {"name": "f"}}]}),
            ("tool_choice", "det", MESSAGES, {}, {"tool_choice": "none"}),
            ("parallel_tool_calls", "det", MESSAGES, {}, {"parallel_tool_calls": False}),
        ]
        before = len(server.requests)
        outcomes = []
        for what, target, messages, params, kwargs in variations:
            merged = {**base_params, **params} if ":" in target else params
            r = client.run(target, messages, merged or None, **kwargs)  # type: ignore[arg-type]
            outcomes.append((what, r.cache))
        missed = [what for what, cache in outcomes if cache != "miss"]
        sent = len(server.requests) - before
        passed = not missed and sent == len(variations)
        ok &= passed
        print(
            f"3. {len(variations)} variations of one request: {len(variations) - len(missed)} missed the "
            f"cache, {sent} sent{'; hit: ' + ', '.join(missed) if missed else ''}  "
            f"[{'ok' if passed else 'MISSED'}]"
        )
        client.close()
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
