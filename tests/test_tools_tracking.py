"""A `delegate()` loop in a real MLflow store (issue 17 item 4): one trace, a CHAT_MODEL span per
step and a TOOL span (MLflow's span type TOOL) per tool run, written by the drain process."""

from __future__ import annotations

import json
from pathlib import Path

import orchlab
from tests.servers import tool_agent
from tests.servers.openai_wire import OpenAIWireServer
from tests.tracking_support import (  # noqa: F401  (the *_fixture names register fixtures)
    experiment_fixture,
    loop_config_fixture,
    mlflow_client,
    shared_store_fixture,
    template_db_fixture,
    tracking_on_fixture,
)


@orchlab.tool
def get_weather(city: str) -> dict[str, object]:
    """The current weather in a city."""
    return {"city": city, "temp_c": tool_agent.TEMPS[city]}


@orchlab.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_a_delegate_loop_is_one_trace_with_tool_spans(
    loop_config: Path, openai_server: OpenAIWireServer, experiment: str
) -> None:
    client = orchlab.get_llm_client(loop_config)
    r = client.delegate("Weather in Paris and Oslo, and the sum?", role="chat", tools=[get_weather, add])
    assert r.content == tool_agent.FINAL and r.trace_id is not None
    assert orchlab.flush(timeout=120)

    trace = mlflow_client(client.tracking.settings.tracking_uri).get_trace(r.trace_id, display=False)
    spans = sorted(trace.data.spans, key=lambda s: s.start_time_ns)  # in the order things happened
    assert [(s.span_type, s.name) for s in spans] == [
        ("CHAIN", "chat"),
        ("CHAT_MODEL", "step 1 / single loop:cheap"),
        ("TOOL", "tool get_weather"),
        ("TOOL", "tool get_weather"),
        ("CHAT_MODEL", "step 2 / single loop:cheap"),
        ("TOOL", "tool add"),
        ("CHAT_MODEL", "step 3 / single loop:cheap"),
    ]
    assert all(s.parent_id == spans[0].span_id for s in spans[1:])
    tool = spans[5]
    assert tool.inputs == {"a": 21, "b": 14} and tool.outputs == "35"
    assert tool.get_attribute("orchlab.tool.step") == 2 and tool.status.status_code == "OK"
    assert trace.info.tags["mlflow.traceName"] == "chat → delegate"
    assert trace.info.tags["orchlab.logic"] == "single"
    # MLflow's trace cost is orchlab's: every step's cost, summed
    assert json.loads(trace.info.trace_metadata["mlflow.trace.cost"])["total_cost"] == r.cost_usd
