"""Structured output on the in-process local model: how many of 20 prompts give a valid instance
of a small pydantic model through the grammar, and the time that adds per call.

    .venv/bin/python benchmarks/structured_output.py [--repeat 1]

Each prompt is asked twice, interleaved (constrained first, then unconstrained first on the next
prompt): ``run(role, messages, output=Answer)`` (a GBNF grammar built from ``Answer``'s JSON
schema constrains sampling) and the same ``run()`` without ``output``, after a warm-up of both.
"valid at the first try" counts answers that validated without the retry loop; "valid" counts
``response.output`` being an ``Answer``. Times are per call (medians and the ratio constrained /
unconstrained); tokens/s shows where the time goes (the grammar is checked against the whole
262k-token vocabulary at every step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("ORCH_TRACKING", "0")
os.environ.setdefault("ORCH_CACHE", "off")  # a measurement is never a replay of the response cache

from pydantic import BaseModel, Field  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "What is 2+2?",
    "What colour is the sky on a clear day?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet in the solar system?",
    "How many legs does a spider have?",
    "What is the boiling point of water in Celsius?",
    "Which animal is known as the king of the jungle?",
    "What is the chemical symbol for gold?",
    "How many days are in a week?",
    "What language is spoken in Brazil?",
    "What is the square root of 81?",
    "Which ocean is the largest?",
    "What gas do plants take in?",
    "Who painted the Mona Lisa?",
    "What is the capital of Japan?",
    "How many continents are there?",
    "What is frozen water called?",
    "Which planet is called the red planet?",
    "What is the opposite of hot?",
]


class Answer(BaseModel):
    answer: str = Field(max_length=32)
    sure: bool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="passes over the 20 prompts")
    args = parser.parse_args()

    import orchlab

    client = orchlab.get_llm_client()
    role = "llm.inference"

    def ask(prompt: str, constrained: bool) -> tuple[float, object]:
        messages = [{"role": "user", "content": prompt}]
        started = time.perf_counter()
        response = client.run(role, messages, output=Answer if constrained else None)
        return time.perf_counter() - started, response

    ask(PROMPTS[0], True)  # warm-up: model load, first grammar use
    ask(PROMPTS[0], False)
    times: dict[bool, list[float]] = {True: [], False: []}
    rates: dict[bool, list[float]] = {True: [], False: []}
    valid = first_try = total = 0
    for _ in range(args.repeat):
        for i, prompt in enumerate(PROMPTS):
            for constrained in (True, False) if i % 2 == 0 else (False, True):
                try:
                    took, response = ask(prompt, constrained)
                except orchlab.OrchlabError as exc:
                    if constrained:
                        total += 1
                        print(f"  invalid: {prompt!r}: {exc}")
                    continue
                times[constrained].append(took)
                tokens = response.usage.output_tokens  # type: ignore[attr-defined]
                rates[constrained].append(tokens / took if took else 0.0)
                if constrained:
                    total += 1
                    ok = isinstance(response.output, Answer)  # type: ignore[attr-defined]
                    valid += ok
                    first_try += ok and len(response.decision.attempts) == 1  # type: ignore[attr-defined]
                    print(f"  {prompt!r} -> {response.content}")  # type: ignore[attr-defined]
    client.close()
    c, u = statistics.median(times[True]), statistics.median(times[False])
    print(f"valid {valid}/{total} (at the first try {first_try}/{total})")
    print(f"per call, median: constrained {c * 1000:.0f} ms, unconstrained {u * 1000:.0f} ms")
    print(f"time added per call: {(c - u) * 1000:+.0f} ms (ratio {c / u:.2f})")
    print(
        f"tokens/s, median: constrained {statistics.median(rates[True]):.1f}, "
        f"unconstrained {statistics.median(rates[False]):.1f}"
    )


if __name__ == "__main__":
    main()
