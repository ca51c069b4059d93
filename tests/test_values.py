"""Values built once: responses, attempts and decisions are frozen; a later fact (an attempt's
end, a logic's verdict, the trace id) is a new value made with `dataclasses.replace`."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from orchlab.calls import CallContext, CallFacts, CallRecord
from orchlab.errors import OrchlabError, ProviderError
from orchlab.pipeline.observe import Observe
from orchlab.types import Decision, LLMResponse, Message

CONFIG = """
project: t
tracking: {enabled: false}
providers:
  cheap: {type: test, options: {models: {m: {reply: "cheap answer", logprob: -0.9}}}}
  top: {type: test, options: {models: {m: {reply: "top answer"}}}}
  down: {type: test, options: {models: {m: {script: [{error: unavailable}]}}}}
models:
  "cheap:m": {input_price_per_mtok: 0.1, output_price_per_mtok: 0.2}
  "top:m": {input_price_per_mtok: 10.0, output_price_per_mtok: 20.0}
roles:
  plain: {provider: cheap, model: m}
  broken: {provider: down, model: m}
  casc:
    provider: cheap
    model: m
    strategy: cascade
    candidates: ["top:m"]
    cascade: {scorer: logprob, threshold: 0.7}
  voters:
    provider: cheap
    model: m
    strategy: ensemble
    ensemble: {mode: vote}
    candidates: ["top:m", "top:m"]
"""
ASK = [{"role": "user", "content": "What is 2+2?"}]


class Stamp:
    """An observer that learns a fact of every call (as tracking learns its trace id)."""

    def __init__(self) -> None:
        self.seen: list[CallRecord] = []

    def call_finished(self, record: CallRecord) -> CallFacts:
        self.seen.append(record)
        return CallFacts(trace_id=f"tr-{len(self.seen)}")


async def answer(client: Any, how: str, role: str) -> LLMResponse:
    if how == "run":
        return client.run(role, ASK)  # type: ignore[no-any-return]
    if how == "arun":
        return await client.arun(role, ASK)  # type: ignore[no-any-return]
    stream = client.stream(role, ASK)
    assert "".join([d async for d in stream]) != ""
    assert stream.response is not None
    return stream.response  # type: ignore[no-any-return]


@pytest.mark.parametrize("how", ["run", "arun", "stream"])
@pytest.mark.parametrize("role", ["plain", "casc", "voters"])
async def test_a_returned_response_its_usage_decision_and_attempts_cannot_be_changed(
    client_for: Any, how: str, role: str
) -> None:
    r = await answer(client_for(CONFIG), how, role)
    assert r.decision is not None and isinstance(r.decision.attempts, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.trace_id = "tr-mine"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.usage.input_tokens = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.decision.attempts[0].outcome = "ok"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.decision.winner = "x"  # type: ignore[misc]
    assert r.trace_id is None and r.usage.input_tokens > 0


@pytest.mark.parametrize("how", ["run", "arun", "stream"])
@pytest.mark.parametrize("role", ["plain", "casc"])
async def test_a_fact_an_observer_returns_is_on_the_response_the_caller_gets(
    client_for: Any, how: str, role: str
) -> None:
    client = client_for(CONFIG)
    stamp = Stamp()
    client.observers.add(stamp)
    r = await answer(client, how, role)
    assert r.trace_id == "tr-1"
    (record,) = stamp.seen
    assert record.response is not None and record.response.trace_id is None  # it was not patched
    assert record.response.id == r.id and record.response.content == r.content


def test_a_cascade_verdict_replaces_the_attempt_in_the_trail(client_for: Any) -> None:
    r = client_for(CONFIG).run("casc", ASK)
    first, second = r.decision.attempts
    assert (first.outcome, second.outcome) == ("rejected", "ok")
    assert first.confidence == pytest.approx(0.4066, abs=1e-3)  # exp(-0.9)
    assert first.note is not None and first.note.startswith("logprob score 0.407 < threshold 0.7: escalated")
    assert r.content == "top answer" and r.cost_usd == r.decision.total_cost_usd


def test_an_orchlab_error_gets_the_observed_trace_id(client_for: Any) -> None:
    client = client_for(CONFIG)
    client.observers.add(Stamp())
    with pytest.raises(ProviderError) as info:
        client.run("broken", ASK)
    assert info.value.trace_id == "tr-1"


def test_an_exception_orchlab_does_not_own_is_never_patched() -> None:
    observers_seen: list[CallRecord] = []

    class Observers:
        def notify(self, record: CallRecord) -> CallFacts:
            observers_seen.append(record)
            return CallFacts(trace_id="tr-x")

    ctx = CallContext(role="r", strategy="single", messages=(Message("user", "hi"),))
    foreign = RuntimeError("boom")
    Observe(Observers()).failed(ctx, foreign)  # type: ignore[arg-type]
    assert observers_seen[0].error is foreign and not hasattr(foreign, "trace_id")
    own = OrchlabError("boom")
    Observe(Observers()).failed(ctx, own)  # type: ignore[arg-type]
    assert own.trace_id == "tr-x"


def test_revising_an_attempt_keeps_the_earlier_value_as_it_was() -> None:
    ctx = CallContext(role="r", strategy="cascade", messages=(Message("user", "hi"),))
    slot = ctx.new_attempt("cheap", "m", stage="cascade 1")
    started = ctx.attempts[slot]
    ended = ctx.revise(slot, outcome="ok", latency_s=0.25, output="4")
    judged = ctx.revise(slot, outcome="rejected", note="score 0.1 < 0.7")
    assert (started.outcome, started.output, started.latency_s) == ("error", None, 0.0)
    assert (ended.outcome, ended.note) == ("ok", None)
    assert ctx.attempts == [judged] and (judged.output, judged.note) == ("4", "score 0.1 < 0.7")
    decision = Decision("cascade", attempts=tuple(ctx.attempts))
    ctx.revise(slot, confidence=0.5)
    assert decision.attempts[0].confidence is None  # a decision already built does not change
