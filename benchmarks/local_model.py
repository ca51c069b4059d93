"""The in-process local model through orchlab vs raw llama-cpp-python, both with the engine's
default settings: decode tokens/s and time to the first token.

    .venv/bin/python benchmarks/local_model.py [--tokens 48] [--repeat 5]

"raw" is a second ``llama_cpp.Llama`` on the same GGUF, built with llama-cpp-python's defaults
(threads included) and, like orchlab, without ggml's extra buffer types (their AMX kernels crash
in VMs that advertise AMX without enabling it). Both stream, and each side keeps its own KV cache,
so each sees only its own call history. Rows are interleaved (raw first, then orchlab first on the
next repeat), after a warm-up; medians of the repeats; ratios are orchlab / raw (tokens/s: higher
is better; time to first token: lower is better).

Tokens/s: "decode" counts the tokens after the first of a stream (orchlab: ``client.stream``),
"whole call" one ``run()`` / ``create_completion`` from a new prompt to the last token.

Time to the first token (a call for one token, no stream), after a call that generated 8 tokens:
- "same prompt again": the previous call had this very prompt;
- "shared prefix": a ~70-token system prompt, the previous call asked another question;
- "new prompt": nothing in common with the previous call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ORCH_CACHE", "off")  # a measurement is never a replay of the response cache
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("ORCH_TRACKING", "0")

SYSTEM = "You are a careful assistant for a small bakery. Answer in one short, plain sentence. " * 4
QUESTIONS = ["Write a short story about a dragon.", "What is 2+2?", "Name three primary colors."]
ANSWER = 8  # tokens the call before the measured one generates
STOP = "\u2603"  # never generated: every call runs to max_tokens


def raw_llama(path: Path) -> Any:
    import llama_cpp.llama_cpp as lowlevel
    from llama_cpp import Llama

    default_params = lowlevel.llama_model_default_params

    def model_params() -> Any:
        params = default_params()
        params.use_extra_bufts = False
        return params

    lowlevel.llama_model_default_params = model_params
    try:
        return Llama(model_path=str(path), n_ctx=2048, verbose=False)
    finally:
        lowlevel.llama_model_default_params = default_params


def qa(system: str | None, question: str) -> str:
    return f"{system}\n\nQ: {question}\nA:" if system else f"Q: {question}\nA:"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", metavar="TEXT", help="only the measures whose name contains TEXT")
    args = parser.parse_args()

    import orchlab
    from orchlab.providers.llamacpp import default_model_path

    path = default_model_path()
    client = orchlab.get_llm_client()
    client.run("llm.inference", [{"role": "user", "content": "Hi"}], {"max_tokens": 1})
    raw = raw_llama(path)
    from orchlab.types import Message, ModelRequest

    ours = client.provider("local")._loaded(ModelRequest("gemma-3-270m", (Message("user", "Hi"),))).llama
    print(
        f"threads: raw {raw.n_threads} (batch {raw.n_threads_batch}), "
        f"orchlab {ours.n_threads} (batch {ours.n_threads_batch})"
    )

    def raw_stream(prompt: str, max_tokens: int, whole: bool = False) -> tuple[float, float, int]:
        """(time to first token, decode tokens/s after it, tokens); whole: (seconds, tokens/s, tokens)
        of one call without a stream"""
        tokens = raw.tokenize(prompt.encode(), add_bos=True)
        started = time.perf_counter()
        if whole:
            out = raw.create_completion(tokens, max_tokens=max_tokens, temperature=0, top_p=0.95, stop=[STOP])
            seconds, n = time.perf_counter() - started, out["usage"]["completion_tokens"]
            return seconds, n / seconds, n
        if max_tokens == 1:  # time to first token: the whole call, without a stream's hops
            raw.create_completion(tokens, max_tokens=1, temperature=0, top_p=0.95, stop=[STOP])
            return _figures(started, None, time.perf_counter(), 1)
        first = None
        for _ in raw.create_completion(
            tokens, max_tokens=max_tokens, temperature=0, top_p=0.95, stop=[STOP], stream=True
        ):
            first = first or time.perf_counter()
        ended = time.perf_counter()
        n = raw.n_tokens - len(tokens) + 1  # the last sampled token is never decoded
        return _figures(started, first, ended, n)

    def orchlab_stream(
        system: str | None, question: str, max_tokens: int, logprobs: bool = False, whole: bool = False
    ) -> tuple[float, float, int]:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": question}
        ]
        params = {"max_tokens": max_tokens, "temperature": 0, "stop": [STOP], "logprobs": logprobs}
        started = time.perf_counter()
        if whole:
            r = client.run("llm.inference", messages, params)
            seconds = time.perf_counter() - started
            return seconds, r.usage.output_tokens / seconds, r.usage.output_tokens
        if max_tokens == 1:  # time to first token: the whole call, as for raw
            r = client.run("llm.inference", messages, params)
            return _figures(started, None, time.perf_counter(), r.usage.output_tokens)
        first = None
        stream = client.stream("llm.inference", messages, params)
        for _ in stream:
            first = first or time.perf_counter()
        ended = time.perf_counter()
        assert stream.response is not None
        return _figures(started, first, ended, stream.response.usage.output_tokens)

    # one measurement: (setup calls, the timed call) per side; setup gives each side its history
    def case(
        system: str | None,
        before: str | None,
        question: str,
        max_tokens: int,
        logprobs: bool = False,
        whole: bool = False,
    ):
        def run_raw() -> tuple[float, float, int]:
            if before is not None:
                raw_stream(qa(system, before), ANSWER)
            return raw_stream(qa(system, question), max_tokens, whole)

        def run_ours() -> tuple[float, float, int]:
            if before is not None:
                orchlab_stream(system, before, ANSWER)
            return orchlab_stream(system, question, max_tokens, logprobs, whole)

        return run_raw, run_ours

    story = QUESTIONS[0]
    decode = case(None, story, story, args.tokens)
    cases: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "decode": decode,
        "decode, orchlab with logprobs": (decode[0], case(None, story, story, args.tokens, logprobs=True)[1]),
        "whole call, no stream": case(None, "Tell me about the sea.", story, args.tokens, whole=True),
        "same prompt again": case(SYSTEM, QUESTIONS[1], QUESTIONS[1], 1),
        "shared prefix": case(SYSTEM, QUESTIONS[2], QUESTIONS[1], 1),
        "new prompt": case(None, "Tell me about the sea.", QUESTIONS[2], 1),
    }
    cases = {name: fns for name, fns in cases.items() if not args.only or args.only in name}
    for run_raw, run_ours in cases.values():  # warm-up
        run_raw(), run_ours()
    results: dict[str, tuple[list[Any], list[Any]]] = {name: ([], []) for name in cases}
    for i in range(args.repeat):
        for name, (run_raw, run_ours) in cases.items():
            if i % 2 == 0:
                results[name][0].append(run_raw())
                results[name][1].append(run_ours())
            else:
                results[name][1].append(run_ours())
                results[name][0].append(run_raw())

    if os.environ.get("BENCH_DEBUG"):
        for name, (a, b) in results.items():
            print(name, [round(x[0] * 1e3, 1) for x in a], [round(x[0] * 1e3, 1) for x in b])
    print(f"model: {path.name}  decode tokens per call: {args.tokens}  repeats: {args.repeat} (interleaved)")
    print(f"{'measure':38} {'raw':>10} {'orchlab':>10} {'ratio':>7}")
    for name in [
        n for n in ("decode", "decode, orchlab with logprobs", "whole call, no stream") if n in cases
    ]:
        raw_tps = statistics.median(r[1] for r in results[name][0])
        our_tps = statistics.median(r[1] for r in results[name][1])
        print(f"{'tokens/s, ' + name:38} {raw_tps:10.1f} {our_tps:10.1f} {our_tps / raw_tps:7.2f}")
    for name in [n for n in ("same prompt again", "shared prefix", "new prompt") if n in cases]:
        raw_ms = statistics.median(r[0] for r in results[name][0]) * 1e3
        our_ms = statistics.median(r[0] for r in results[name][1]) * 1e3
        print(f"{'first token (ms), ' + name:38} {raw_ms:10.1f} {our_ms:10.1f} {our_ms / raw_ms:7.2f}")


def _figures(started: float, first: float | None, ended: float, tokens: int) -> tuple[float, float, int]:
    first = first or ended
    rate = (tokens - 1) / (ended - first) if tokens > 1 and ended > first else 0.0
    return first - started, rate, tokens


if __name__ == "__main__":
    main()
