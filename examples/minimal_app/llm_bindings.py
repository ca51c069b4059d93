"""A minimal app on orchlab: it names roles, never models.

python examples/minimal_app/llm_bindings.py                 # dev: the local model, offline
ORCH_ENV=prod python examples/minimal_app/llm_bindings.py   # the same roles on OpenAI
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orchlab

CONFIG = Path(__file__).with_name("llm_orchestrator.yaml")


def main(question: str) -> int:
    client = orchlab.get_llm_client(CONFIG, env=os.environ.get("ORCH_ENV"))
    try:
        response = client.run(
            role="llm.preprocess",
            messages=[{"role": "user", "content": question}],
        )
    except orchlab.OrchlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(response.content)
    print(
        f"[{response.role} -> {response.provider}:{response.model}] "
        f"tokens in={response.usage.input_tokens} out={response.usage.output_tokens} "
        f"latency={response.latency_s:.2f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(" ".join(sys.argv[1:]) or "What is the capital of France?"))
