"""The call pipeline (`orchlab.pipeline`): passes in an explicit order, each able to refuse or answer."""

from __future__ import annotations

from typing import Any

import pytest

from orchlab.errors import ContextWindowError, InvalidRequestError
from orchlab.pipeline.passes import UNSENT_NOTE, SyncPass
from orchlab.types import LLMResponse

CONFIG = """
project: t
tracking: {enabled: false}
providers:
  cloud:
    type: test
    options:
      models:
        m: {reply: "from the provider"}
models:
  "cloud:m": {context_window: 40, input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}
budgets: {session_usd: 1.0}
roles:
  plain: {provider: cloud, model: m, params: {max_tokens: 8}}
"""
ASK = [{"role": "user", "content": "What is 2+2?"}]


class Remembered(SyncPass):
    """A response-cache stand-in: answers every request itself."""

    def admit_sync(self, ctx: Any, flight: Any, request: Any) -> LLMResponse | None:
        return LLMResponse("remembered", flight.provider, request.model, cost_usd=0.0, cost_note="cache hit")


class Refuse(SyncPass):
    def admit_sync(self, ctx: Any, flight: Any, request: Any) -> LLMResponse | None:
        raise InvalidRequestError("refused by a pass")


def test_the_passes_run_in_the_documented_order(client_for: Any) -> None:
    client = client_for(CONFIG)
    names = [type(p).__name__ for p in client.dispatch.passes]
    assert names == ["ResponseCache", "ContextWindow", "BudgetAdmission", "EmptyAnswer"]


@pytest.mark.parametrize("call", ["run", "arun", "stream"])
async def test_a_pass_may_answer_the_request_itself(client_for: Any, call: str) -> None:
    client = client_for(CONFIG)
    client.dispatch.passes = (Remembered(), *client.dispatch.passes)
    if call == "run":
        r = client.run("plain", ASK)
    elif call == "arun":
        r = await client.arun("plain", ASK)
    else:
        stream = client.stream("plain", ASK)
        assert [c async for c in stream] == ["remembered"]  # a pass's answer is streamed too
        r = stream.response
    assert r.content == "remembered" and r.cost_usd == 0.0
    assert client.provider("cloud").calls == []  # nothing was sent
    (attempt,) = r.decision.attempts
    assert (attempt.outcome, attempt.output, attempt.note) == ("ok", "remembered", "cache hit")
    assert client.budgets.spent_usd() == 0.0 and client.budgets.reserved_usd() == 0.0


def test_a_pass_may_refuse_before_anything_is_sent(client_for: Any) -> None:
    client = client_for(CONFIG)
    client.dispatch.passes = (*client.dispatch.passes[:1], Refuse(), *client.dispatch.passes[1:])
    with pytest.raises(InvalidRequestError, match="refused by a pass"):
        client.run("plain", ASK)
    assert client.provider("cloud").calls == []
    assert client.budgets.reserved_usd() == 0.0


def test_the_context_window_pass_refuses_before_the_budget_reserves(client_for: Any) -> None:
    client = client_for(CONFIG)
    with pytest.raises(ContextWindowError) as info:
        client.run("plain", [{"role": "user", "content": "word " * 200}])
    assert info.value.context_window == 40
    assert client.provider("cloud").calls == [] and client.budgets.reserved_usd() == 0.0


def test_max_tokens_zero_is_answered_by_the_empty_answer_pass(client_for: Any) -> None:
    client = client_for(CONFIG)
    r = client.run("plain", ASK, {"max_tokens": 0})
    assert (r.content, r.finish_reason, r.cost_usd, r.cost_note) == ("", "length", 0.0, UNSENT_NOTE)
    assert client.provider("cloud").calls == []
    client.dispatch.passes = client.dispatch.passes[:-1]  # without the pass, the provider is asked
    client.run("plain", ASK, {"max_tokens": 0})
    assert len(client.provider("cloud").calls) == 1


async def test_a_plain_call_looks_its_role_binding_up_once(client_for: Any, monkeypatch: Any) -> None:
    client = client_for(CONFIG)
    looked_up: list[str] = []
    binding = client.resolver.binding

    def counted(role: str, **kw: Any) -> Any:
        looked_up.append(role)
        return binding(role, **kw)

    monkeypatch.setattr(client.resolver, "binding", counted)
    assert client.run("plain", ASK).content == "from the provider"
    assert (await client.arun("plain", ASK)).content == "from the provider"
    assert "".join(client.stream("plain", ASK)) == "from the provider"
    # the embedding check's lookup is the one the call goes on with (run, arun, stream)
    assert looked_up == ["plain"] * 3
    client.rebind("plain", "cloud:m")
    looked_up.clear()
    assert (await client.arun("plain", ASK)).target == "cloud:m" and looked_up == ["plain"]
