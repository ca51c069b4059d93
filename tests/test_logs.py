"""Structured logs (`orchlab.logs`): one INFO event per call, DEBUG events per decision, JSON off a
terminal, credential fields dropped and secret values masked, nothing loaded while logging is off."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

import orchlab.logs as logs
from orchlab.errors import AllAttemptsFailedError
from orchlab.orchestrator import Orchestrator
from orchlab.redaction import remember
from tests.conftest import CANARY
from tests.servers.openai_wire import OpenAIWireServer, Reply

Q = [{"role": "user", "content": "hi"}]
KEY = "sk-logs-test-key-8d1e5a0c93"


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[dict]]]:
    """orchlab's events as JSON lines in a buffer (the handler removed afterwards)."""
    out = io.StringIO()
    before = logging.getLogger("orchlab").level
    handler = logs.configure("DEBUG", stream=out)  # a StringIO is no terminal: JSON
    yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    logging.getLogger("orchlab").removeHandler(handler)
    logging.getLogger("orchlab").setLevel(before)
    monkeypatch.setattr(logs, "_handler", None)


def config(base_url: str) -> str:
    return f"""\
        project: t
        providers:
          oa: {{type: openai, api_base: "{base_url}", max_retries: 0}}
          ob: {{type: openai, api_base: "{base_url}", auth_profile: oa, max_retries: 0}}
        models:
          "oa:m": {{input_price_per_mtok: 1000, output_price_per_mtok: 1000}}
          "ob:m": {{input_price_per_mtok: 1000, output_price_per_mtok: 1000}}
        budgets: {{session_usd: 5.0}}
        roles:
          r: {{provider: oa, model: m, params: {{temperature: 0, max_tokens: 10}}}}
          chain:
            provider: oa
            model: m
            params: {{max_tokens: 10}}
            fallbacks: ["ob:m"]
            retry: {{retries: 1, backoff_s: 0}}
        """


def test_one_info_event_per_call_and_a_debug_event_per_decision(
    lines: Callable[[], list[dict]],
    openai_server: OpenAIWireServer,
    client_for: Callable[..., Orchestrator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ORCH_CACHE")
    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", KEY)
    client = client_for(config(openai_server.base_url))
    client.run("r", Q)
    client.run("r", Q)
    openai_server.push(Reply.error(503, "busy"), Reply.error(503, "busy"))
    r = client.run("chain", Q)
    events = lines()
    calls = [e for e in events if e["event"] == "call"]
    assert len(calls) == 3 and {e["level"] for e in calls} == {"info"}
    first, hit, chain = calls
    assert {k: first[k] for k in ("role", "logic", "provider", "model", "outcome", "cache")} == {
        "role": "r",
        "logic": "single",
        "provider": "oa",
        "model": "m",
        "outcome": "ok",
        "cache": "miss",
    }
    assert (first["input_tokens"], first["output_tokens"], first["cost_usd"]) == (1, 2, 0.003)
    assert first["latency_s"] > 0 and "trace_id" in first and first["logger"] == "orchlab.calls"
    assert (hit["cache"], hit["cost_usd"]) == ("hit", 0.0)
    assert (chain["logic"], chain["provider"], chain["attempts"]) == ("fallback", "ob", 3)
    assert chain["cost_usd"] == r.cost_usd
    decisions = [(e["event"], e.get("target") or e.get("failed")) for e in events if e["level"] == "debug"]
    assert decisions == [
        ("cache miss", "oa:m"),
        ("budget reservation", "oa:m"),
        ("cache hit", "oa:m"),
        ("budget reservation", "oa:m"),
        ("retry", "oa:m"),
        ("budget reservation", "oa:m"),
        ("fallback", "oa:m"),
        ("budget reservation", "ob:m"),
    ]
    retry = next(e for e in events if e["event"] == "retry")
    assert (retry["wait_s"], retry["why"], retry["error_type"]) == (0, "backoff", "ProviderUnavailableError")


def test_a_failed_call_is_one_info_event_naming_the_error(
    lines: Callable[[], list[dict]],
    openai_server: OpenAIWireServer,
    client_for: Callable[..., Orchestrator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", KEY)
    client = client_for(config(openai_server.base_url))
    openai_server.push(*[Reply.error(401, f"bad key {KEY}")] * 4)
    with pytest.raises(AllAttemptsFailedError):
        client.run("chain", Q)
    [call] = [e for e in lines() if e["event"] == "call"]
    assert (call["outcome"], call["error_type"], call["attempts"]) == ("error", "AllAttemptsFailedError", 2)
    assert KEY not in json.dumps(lines())


def test_credential_fields_are_dropped_and_secret_values_masked(
    lines: Callable[[], list[dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    remember(KEY)
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-env-secret-31f0a9")
    logs.decision(
        "check",
        authorization=f"Bearer {KEY}",
        api_key=KEY,
        client_secret="s",
        password="p",
        note=f"the key was {KEY}",
        nested={"headers": {"x": "tok-env-secret-31f0a9"}},
        count=3,
    )
    [event] = lines()
    assert event["event"] == "check" and event["count"] == 3
    assert not {"authorization", "api_key", "client_secret", "password"} & set(event)
    assert event["note"] == "the key was **********"
    assert event["nested"] == {"headers": {"x": "**********"}}


def test_a_terminal_gets_key_value_lines_and_json_can_be_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    before = logging.getLogger("orchlab").level
    try:
        tty = Terminal()
        logs.configure("DEBUG", stream=tty)
        logs.decision("cache hit", role="r")
        assert "cache hit" in tty.getvalue() and "role=r" in tty.getvalue()
        with pytest.raises(json.JSONDecodeError):
            json.loads(tty.getvalue())
        monkeypatch.setenv("ORCH_LOG_FORMAT", "json")
        asked = Terminal()
        handler = logs.configure("DEBUG", stream=asked)  # replaces the first handler
        logs.decision("cache hit", role="r")
        assert json.loads(asked.getvalue())["role"] == "r"
        assert tty.getvalue().count("cache hit") == 1  # the first handler is gone
        logging.getLogger("orchlab").removeHandler(handler)
    finally:
        logging.getLogger("orchlab").setLevel(before)
        monkeypatch.setattr(logs, "_handler", None)


def test_the_session_canary_is_in_the_environment_and_masked(caplog: pytest.LogCaptureFixture) -> None:
    import os

    assert os.environ["ORCH_AUTH_CANARY_API_KEY"] == CANARY
    with caplog.at_level(logging.DEBUG, logger="orchlab"):
        logs.decision("probe", detail=f"value {CANARY}")
    [record] = [r for r in caplog.records if r.name == "orchlab.decisions"]
    assert CANARY not in record.getMessage() and "value **********" in record.getMessage()


IDLE = """
import sys, orchlab
client = orchlab.get_llm_client(sys.argv[1])
r = client.run("r", [{"role": "user", "content": "hi"}])
print(r.content, "structlog" in sys.modules, "prometheus_client" in sys.modules)
"""


def test_nothing_is_loaded_for_logs_or_metrics_while_they_are_off(
    openai_server: OpenAIWireServer, write_config: Callable[[str], object], monkeypatch: pytest.MonkeyPatch
) -> None:
    import textwrap

    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", KEY)
    path = write_config(textwrap.dedent(config(openai_server.base_url)))
    out = subprocess.run([sys.executable, "-c", IDLE, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["echo:", "hi", "False", "False"]
    monkeypatch.setenv("ORCH_LOG_LEVEL", "INFO")
    out = subprocess.run([sys.executable, "-c", IDLE, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["echo:", "hi", "True", "False"]
    assert json.loads(out.stderr.splitlines()[-1])["event"] == "call"  # a pipe is no terminal: JSON
