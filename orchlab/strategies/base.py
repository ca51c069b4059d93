"""What every strategy is built from: candidates, one recorded call (`Answering.call`), the final trail.

A strategy receives an `Answering` (the call being answered: the orchestrator, the call's
`CallContext`, the messages and the caller's parameter overrides) and a list of `Candidate`. It
makes calls with `Answering.call`, which goes through ``Dispatch.attempt`` (`orchlab.pipeline`)
so every provider call is one `Attempt`, and it returns an `Outcome`. `finalize` turns that into
the response: the winner's answer, with the decision trail attached and usage and cost summed
over every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from orchlab.config.schema import RetryConfig
from orchlab.config.schema import Strategy as Strategy  # re-exported: its historical home
from orchlab.errors import (
    AllAttemptsFailedError,
    AuthError,
    BudgetExceededError,
    ContextWindowError,
    MissingDependencyError,
    OutputValidationError,
    ProviderError,
    ProviderTimeoutError,
    UnknownRoleError,
)
from orchlab.pipeline.observe import decision_of
from orchlab.providers.registry import kind_of, provider_class
from orchlab.resolution import parse_target
from orchlab.tools.model import NO_TOOLS, ToolOffer
from orchlab.types import Attempt, GenerationParams, LLMResponse, Message, ModelRequest, OutputSchema, Usage

if TYPE_CHECKING:
    from orchlab.calls import CallContext
    from orchlab.orchestrator import Orchestrator


class EnsembleMode(StrEnum):
    VOTE = "vote"
    """Majority over normalised answers; ties go to the earliest candidate."""
    CHAIN = "chain"
    """The first candidate drafts, each next one refines."""
    JUDGE = "judge"
    """Best of N, picked by a judge role or target."""
    FUSE = "fuse"
    """An aggregator synthesises all answers (Mixture-of-Agents)."""


FALL_THROUGH: tuple[type[Exception], ...] = (
    AllAttemptsFailedError,
    ProviderError,
    AuthError,
    MissingDependencyError,
    ContextWindowError,
    BudgetExceededError,
)
"""Errors after which a strategy moves on to another candidate: what is wrong with that candidate
only (its provider failed, it has no key, its SDK is not installed, it would not fit or would
overrun a budget; a candidate that is itself a logic saw every one of its attempts fail).
Anything else (a config error, a bad request argument, a bug) would fail the same way everywhere
and is raised at once."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One model a strategy may call, with the params it is called with."""

    provider: str
    model: str
    params: GenerationParams = field(default_factory=GenerationParams)
    role: str | None = None
    threshold: float | None = None
    """Cascade: accept at or above this score (None: the cascade's threshold)."""
    scorer: str | None = None
    """Cascade: this stage's scorer name (None: the cascade's scorer)."""

    @property
    def target(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True, slots=True)
class Nested:
    """A candidate that is itself a logic (a cascade stage that is a race, ...): it answers with
    its own logic inside the same call, its attempts in the same trail under its stage label."""

    strategy: Strategy | str
    candidates: tuple[Candidate | Nested, ...]
    options: tuple[tuple[str, str], ...] = ()
    """The logic's own params as strings (parsed by its ``Logic.from_params``)."""
    params: GenerationParams = field(default_factory=GenerationParams)
    role: str | None = None
    threshold: float | None = None
    """Cascade: accept this stage at or above this score (None: the cascade's threshold)."""
    scorer: str | None = None
    """Cascade: this stage's scorer name (None: the cascade's scorer)."""

    @property
    def target(self) -> str:
        return f"{self.strategy}({', '.join(c.target for c in self.candidates)})"


AnyCandidate = Candidate | Nested


def leaves(cand: AnyCandidate) -> list[Candidate]:
    """The provider targets a candidate may call (a nested logic's, recursively)."""
    if isinstance(cand, Candidate):
        return [cand]
    return [leaf for inner in cand.candidates for leaf in leaves(inner)]


@dataclass(slots=True)
class Answer:
    """A successful call: the provider's response, and where its attempt is in the call's trail.

    A logic's verdict on it (`reject`, `rate`, `annotate`) replaces the attempt's record in the
    trail with a judged copy; ``attempt`` always reads the record as it stands."""

    response: LLMResponse
    candidate: AnyCandidate
    ctx: CallContext
    slot: int

    @property
    def content(self) -> str:
        return self.response.content

    @property
    def attempt(self) -> Attempt:
        return self.ctx.attempts[self.slot]

    def reject(self, why: str) -> None:
        """Not the answer returned: its attempt reads ``"rejected"``, with why."""
        self.ctx.revise(self.slot, outcome="rejected", note=why)

    def rate(self, confidence: float | None) -> None:
        """The score a logic gave it (the attempt's ``confidence``)."""
        self.ctx.revise(self.slot, confidence=confidence)

    def annotate(self, text: str) -> None:
        """Add ``text`` to its attempt's note (after what the note says already)."""
        note = self.attempt.note
        self.ctx.revise(self.slot, note=text if note is None else f"{note}; {text}")


@dataclass(slots=True)
class Outcome:
    """What a strategy decided: the answer it returns, why, and the scores it computed."""

    answer: Answer
    rationale: str
    scores: dict[str, float] = field(default_factory=dict)


class Answering:
    """One orchestrated call being answered: what a logic's ``answer(answering)`` receives.

    ``answering.call(candidate, stage=...)`` makes one provider call (an `Answer`, its attempt in
    the trail); ``answering.messages`` / ``question`` are what was asked; ``answering.errors``
    every failed attempt's error. (Not ``client.run()``: that is a way to start a call.)"""

    def __init__(
        self,
        orch: Orchestrator,
        ctx: CallContext,
        messages: tuple[Message, ...],
        overrides: Mapping[str, Any] | None,
        retry: RetryConfig | None = None,
        *,
        offer: ToolOffer = NO_TOOLS,
        output: OutputSchema | None = None,
        json_answer: bool = False,
    ) -> None:
        self.orch = orch
        self.ctx = ctx
        self.messages = messages
        self.offer = offer
        """The tools every provider call of this answer offers (`orchlab.tools`)."""
        self.overrides = dict(overrides or {})
        self.retry = retry or RetryConfig()
        self.errors: list[Exception] = []
        """Every failed attempt's error, in the order they failed (for `AllAttemptsFailedError`)."""
        self._claimed: set[int] = set()
        self.prefix = ""
        """Stage labels' prefix inside a nested logic (``"cascade 1 / "``)."""
        self.output = output
        """The structured answer the caller asked for: every call with the call's own messages
        asks for it (a judge's or an aggregator's prompt does not); `finalize` checks the winner."""
        self.json_answer = json_answer
        """``format="json"``: every call with the call's own messages asks for a JSON answer."""

    def nested(self, stage: str) -> Answering:
        """This call as a candidate that is a logic answers it: the same call, trail and errors; its
        stages labelled under ``stage``."""
        child = copy.copy(self)
        child.prefix = f"{self.prefix}{stage} / "
        return child

    @property
    def clock(self) -> Any:
        return self.orch.health.clock

    @property
    def question(self) -> str:
        """The last user message (what judges and aggregators are shown)."""
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")

    def is_local(self, provider: str) -> bool:
        return is_local(self.orch, provider)

    async def call(
        self,
        cand: AnyCandidate,
        *,
        stage: str,
        params: Mapping[str, Any] | None = None,
        messages: Sequence[Message] | None = None,
        timeout_s: float | None = None,
        offer: ToolOffer | None = None,
    ) -> Answer:
        """One provider call, recorded as an attempt. ``params`` go on top of the caller's overrides.
        ``offer``: the tools offered (default: the call's, or none with a logic's own ``messages``).

        A `Nested` candidate answers with its own logic (``params``, ``messages`` and
        ``timeout_s`` are for one provider call and do not apply to it)."""
        if isinstance(cand, Nested):
            from orchlab.strategies.registry import nested_logic

            return (await nested_logic(cand, self).answer(self.nested(stage))).answer
        stage = self.prefix + stage
        merged = cand.params.merged(self.overrides).merged(params)
        try:
            resolved = self.orch.resolver.resolve_target(cand.provider, cand.model, merged, role=cand.role)
        except AuthError as exc:
            self._unsent(cand, stage, exc)
            raise
        # a logic's own prompt (a judge's, an aggregator's) is not offered the call's tools,
        # nor held to the call's output schema
        if offer is None:
            offer = self.offer if messages is None else NO_TOOLS
        request = ModelRequest(
            model=resolved.model,
            messages=tuple(messages or self.messages),
            params=merged,
            tools=offer.tools,
            tool_choice=offer.choice,
            parallel_tool_calls=offer.parallel,
            output=self.output if messages is None else None,
            json_answer=self.json_answer and messages is None,
        )
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                response = await self.orch.dispatch.attempt(self.ctx, resolved, request, stage=stage)
        except TimeoutError as exc:
            if timeout_s is None or not deadline.expired():
                self._find(stage)
                self.errors.append(exc)
                raise
            slot = self._find(stage)
            error = ProviderTimeoutError(
                f"no answer within the strategy's attempt timeout of {timeout_s:g}s",
                provider=cand.provider,
                model=cand.model,
            )
            if slot is not None:
                self.ctx.revise(
                    slot,
                    outcome="error",
                    error=str(error),
                    error_type=type(error).__name__,
                    note="cut off by retry.attempt_timeout_s; tokens generated so far are unknown",
                )
            self.errors.append(error)
            raise error from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._find(stage)
            self.errors.append(exc)
            raise
        slot = self._find(stage)
        assert slot is not None, "Dispatch.attempt records every attempt it makes"
        return Answer(response, cand, self.ctx, slot)

    async def stream_call(self, cand: AnyCandidate, *, stage: str) -> AsyncGenerator[str | Answer, None]:
        """One streamed provider call, recorded as an attempt: its text deltas, then its `Answer`
        (a `Nested` candidate streams its logic)."""
        if isinstance(cand, Nested):
            from orchlab.strategies.registry import nested_logic

            async for item in nested_logic(cand, self).stream(self.nested(stage)):
                yield item if isinstance(item, str) else item.answer
            return
        stage = self.prefix + stage
        merged = cand.params.merged(self.overrides)
        try:
            resolved = self.orch.resolver.resolve_target(cand.provider, cand.model, merged, role=cand.role)
        except AuthError as exc:
            self._unsent(cand, stage, exc)
            raise
        offer = self.offer
        request = ModelRequest(
            model=resolved.model,
            messages=self.messages,
            params=merged,
            tools=offer.tools,
            tool_choice=offer.choice,
            parallel_tool_calls=offer.parallel,
        )
        chunks = self.orch.dispatch.attempt_stream(self.ctx, resolved, request, stage=stage)
        try:
            async with contextlib.aclosing(chunks):  # type: ignore[type-var]
                async for chunk in chunks:
                    if chunk.response is None:
                        if chunk.delta:
                            yield chunk.delta
                        continue
                    slot = self._find(stage)
                    assert slot is not None, "Dispatch.attempt_stream records every attempt it makes"
                    yield Answer(chunk.response, cand, self.ctx, slot)
        except Exception as exc:
            self._find(stage)
            self.errors.append(exc)
            raise

    def _unsent(self, cand: Candidate, stage: str, exc: AuthError) -> None:
        """No key: nothing was sent, but the trail and the error group should say so."""
        self.ctx.new_attempt(
            cand.provider,
            cand.model,
            stage=stage,
            error=str(exc),
            error_type=type(exc).__name__,
            note="not sent: no API key",
        )
        self.errors.append(exc)

    def _find(self, stage: str) -> int | None:
        """The slot of the attempt `Dispatch.attempt` recorded for ``stage`` (stage labels are
        unique within a call)."""
        attempts = self.ctx.attempts
        for slot in range(len(attempts) - 1, -1, -1):
            if attempts[slot].stage == stage and slot not in self._claimed:
                self._claimed.add(slot)
                return slot
        return None

    def candidate(self, ref: str, *, params: GenerationParams | None = None) -> Candidate:
        """A role name or ``'provider:model'`` as a candidate (a role brings its own params)."""
        return resolve_ref(self.orch, ref, params=params)


def resolve_ref(orch: Orchestrator, ref: str, *, params: GenerationParams | None = None) -> Candidate:
    if ref in orch.config.roles:
        bound = orch.binding(ref)  # its key is looked up when it is tried
        return Candidate(bound.provider, bound.model, bound.params, role=ref)
    if ":" in ref:
        provider, model = parse_target(ref)
        orch.resolver.provider_config(provider)  # unknown provider: fail now, with suggestions
        return Candidate(provider, model, params or GenerationParams())
    orch.binding(ref)  # raises UnknownRoleError with "did you mean"
    raise UnknownRoleError(f"{ref!r} is neither a role nor a 'provider:model' target", role=ref)


def is_local(orch: Orchestrator, provider: str) -> bool:
    """Whether ``provider``'s adapter class runs on the user's own hardware (no key lookup)."""
    spec = orch.resolver.provider_config(provider)
    kind = kind_of(provider, spec.type)
    return bool(kind and provider_class(kind, provider=provider).is_local)


def unique_key(scores: Mapping[str, float], key: str) -> str:
    if key not in scores:
        return key
    n = 2
    while f"{key}#{n}" in scores:
        n += 1
    return f"{key}#{n}"


def _free(orch: Orchestrator, provider: str, model: str) -> bool:
    """Priced at $0 by the catalog (a local model without a YAML price)."""
    price = orch.catalog.entry(provider, model).price
    return price is not None and price.free


def _settle_cancelled(answering: Answering) -> None:
    """Cancelled attempts never reported tokens: $0 when the model is free, else unknown."""
    ctx = answering.ctx
    for slot, attempt in enumerate(ctx.attempts):
        if attempt.outcome != "cancelled" or attempt.note is not None or attempt.cost_usd is not None:
            continue
        if _free(answering.orch, attempt.provider, attempt.model):
            ctx.revise(
                slot,
                cost_usd=0.0,
                note="cancelled: the generation stopped at its next token; $0 (a free, local model)",
            )
        else:
            ctx.revise(
                slot,
                note=(
                    "cancelled before the provider reported usage: tokens and cost unknown (it may bill "
                    "the prompt and the tokens generated before the cancel)"
                ),
            )


def cost_note(attempts: Sequence[Attempt]) -> str | None:
    """Why the total cost is unknown, with what is known."""
    counted = [a for a in attempts if a.outcome != "error" or a.usage.total_tokens]
    unknown = [a for a in counted if a.cost_usd is None]
    if not unknown:
        return None
    known = sum(a.cost_usd for a in counted if a.cost_usd is not None)
    names = ", ".join(sorted({f"{a.provider}:{a.model} ({a.outcome})" for a in unknown}))
    return (
        f"cost unknown for {len(unknown)} of {len(counted)} attempts: {names}; the others total ${known:.6f}"
    )


def finalize(answering: Answering, outcome: Outcome) -> LLMResponse:
    """The winner's response, with the trail, total usage and total cost of every attempt."""
    _settle_cancelled(answering)
    ctx = answering.ctx
    answer = outcome.answer
    if answer.attempt.outcome != "ok":
        ctx.revise(answer.slot, outcome="ok")  # returned after all (a rejected best-scored answer)
    decision = decision_of(
        ctx, winner=answer.response.target, rationale=outcome.rationale, scores=outcome.scores
    )
    total = Usage()
    for attempt in ctx.attempts:
        total = total + attempt.usage
    cost = decision.total_cost_usd
    overruns = [a.overrun_usd for a in ctx.attempts if a.overrun_usd]
    return replace(
        answer.response,
        output=structured(answering, answer.response),
        usage=total,
        cost_usd=cost,
        cost_note=cost_note(ctx.attempts) if cost is None else None,
        overrun_usd=sum(overruns) if overruns else None,
        latency_s=time.perf_counter() - ctx.started_perf,
        role=ctx.role,
        decision=decision,
    )


def structured(answering: Answering, response: LLMResponse) -> Any:
    """The winner's validated output: as its attempt validated it, else (an answer a logic made
    with its own prompt: a fused or refined one) validated here, without retries."""
    spec = answering.output
    if spec is None or response.output is not None or response.tool_calls:
        return response.output  # tool calls: the answer after the tools run is the structured one
    from orchlab.output.structured import parse, summary

    value, errors = parse(spec, response.content)
    if value is None:
        raise OutputValidationError(
            f"the answer chosen by {answering.ctx.strategy} is not a valid {spec.name}: {summary(errors)}",
            provider=response.provider,
            model=response.model,
            raw=response.content,
            errors=errors,
        )
    return value


def ms(seconds: float) -> str:
    """Always milliseconds: a rationale reads the same whether a call took 0.9 s or 12 s."""
    return f"{seconds * 1000:.0f} ms"
