"""``orchlab observe prompts`` and ``observe providers`` on a real MLflow store filled by real calls
(a fallback chain on the loopback OpenAI server, registered prompts, ratings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import orchlab
from orchlab.cli import main
from tests.servers.openai_wire import OpenAIWireServer, Reply
from tests.tracking_support import (  # noqa: F401  (the *_fixture names register fixtures)
    experiment_fixture,
    loop_config_fixture,
    shared_store_fixture,
    template_db_fixture,
    tracking_on_fixture,
)

ASK = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def calls(loop_config: Path, experiment: str, openai_server: OpenAIWireServer) -> Path:
    """greet@1 twice (rated 5 and 3), greet@2 once (thumbs up), a failover big -> cheap, a plain call."""
    client = orchlab.get_llm_client(loop_config)
    orchlab.register_prompt("greet", "Say hello to {{name}}.")
    one = [client.run("chat", orchlab.load_prompt("greet@1").render(name=n)) for n in ("Ann", "Bo")]
    orchlab.register_prompt("greet", "Greet {{name}}.")
    two = client.run("chat", orchlab.load_prompt("greet@2").render(name="Cy"))
    openai_server.push(Reply.error(500, "the big model is down"))
    saved = client.run("safe", ASK)
    assert saved.model == "cheap"
    client.run("chat", ASK)
    assert orchlab.flush(timeout=120)
    client.feedback(one[0].trace_id, 5)
    client.feedback(one[1].trace_id, 3)
    client.feedback(two.trace_id, "up")
    assert orchlab.flush(timeout=120)
    return loop_config


def test_observe_prompts_counts_calls_and_ratings_per_version(calls: Path, capsys) -> None:
    assert main(["observe", "prompts", "--json", "--config", str(calls)]) == 0
    rows = json.loads(capsys.readouterr().out)
    got = [
        (r["prompt"], r["version"], r["calls"], r["rated"], r["mean_rating"], r["thumbs_up"], r["errors"])
        for r in rows
    ]
    assert got == [("greet", "1", 2, 2, 4.0, 0, 0), ("greet", "2", 1, 0, None, 1, 0)]
    assert main(["observe", "prompts", "--by", "prompt", "--json", "--config", str(calls)]) == 0
    assert [(r["prompt"], r["calls"]) for r in json.loads(capsys.readouterr().out)] == [("greet", 3)]
    assert main(["observe", "prompts", "--role", "safe", "--json", "--config", str(calls)]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_observe_providers_counts_every_attempt_errors_and_failovers(calls: Path, capsys) -> None:
    assert main(["observe", "providers", "--by", "model", "--json", "--config", str(calls)]) == 0
    rows = {(r["provider"], r["model"]): r for r in json.loads(capsys.readouterr().out)}
    counts = {k: (r["calls"], r["errors"], r["error_rate"], r["failovers"]) for k, r in rows.items()}
    assert counts == {("loop", "big"): (1, 1, 1.0, 1), ("loop", "cheap"): (5, 0, 0.0, 0)}
    cheap = rows[("loop", "cheap")]
    assert 0 < cheap["p50_latency_s"] <= cheap["p95_latency_s"]
    assert main(["observe", "providers", "--role", "safe", "--json", "--config", str(calls)]) == 0
    assert [
        (r["provider"], r["calls"], r["errors"], r["failovers"]) for r in json.loads(capsys.readouterr().out)
    ] == [("loop", 2, 1, 1)]
    assert main(["observe", "providers", "--since", "1d", "--config", str(calls)]) == 0
    table = capsys.readouterr().out
    assert "failovers" in table and "loop" in table


def test_observe_rejects_an_unknown_grouping(loop_config: Path, experiment: str, capsys) -> None:
    assert main(["observe", "providers", "--by", "week", "--config", str(loop_config)]) == 1
    assert "--by 'week': use provider, model, role or day" in capsys.readouterr().err
    assert main(["observe", "prompts", "--since", "soon", "--config", str(loop_config)]) == 1
    assert "--since 'soon'" in capsys.readouterr().err
