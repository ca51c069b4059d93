"""The in-process local model: load time, tokens/s through orchlab vs the raw llama.cpp engine,
and the cost of per-token log-probs.

    .venv/bin/python benchmarks/local_model.py [--tokens 48] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("ORCH_TRACKING", "0")

PROMPT = "Q: Write a short story about a dragon.\nA:"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import orchlab
    from orchlab.providers.llamacpp import default_model_path

    path = default_model_path()
    client = orchlab.get_llm_client()
    messages = [{"role": "user", "content": "Write a short story about a dragon."}]
    params = {"max_tokens": args.tokens, "stop": ["\u2603"]}

    started = time.perf_counter()
    client.run("llm.inference", messages, {"max_tokens": 1})
    print(f"first call (load + 1 token): {time.perf_counter() - started:.2f} s")

    # the very Llama object orchlab loaded: the raw engine, minus orchlab
    request = client._request(client.resolve("llm.inference"), messages, None)
    raw = client.provider("local")._loaded(request).llama

    def raw_engine() -> tuple[float, int]:
        t = time.perf_counter()
        out = raw.create_completion(PROMPT, max_tokens=args.tokens, temperature=0, stop=["\u2603"])
        return time.perf_counter() - t, out["usage"]["completion_tokens"]

    def through_orchlab(logprobs: bool) -> tuple[float, int]:
        t = time.perf_counter()
        r = client.run("llm.inference", messages, {**params, "logprobs": logprobs})
        return time.perf_counter() - t, r.usage.output_tokens

    rows = {
        "raw llama.cpp": raw_engine,
        "orchlab run()": lambda: through_orchlab(False),
        "orchlab run(), logprobs": lambda: through_orchlab(True),
    }
    results: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeat):  # interleaved, so load on the machine hits every row alike
        for name, fn in rows.items():
            seconds, tokens = fn()
            results[name].append(tokens / seconds)
    base = statistics.median(results["raw llama.cpp"])
    print(f"model: {path.name}  tokens per call: {args.tokens}  repeats: {args.repeat}")
    print(f"{'path':28} {'tokens/s (median)':>18} {'vs raw':>8}")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:28} {median:18.1f} {median / base:8.2f}")


if __name__ == "__main__":
    main()
