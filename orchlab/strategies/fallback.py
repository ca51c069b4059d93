"""Fallback chains (LOCAL_FIRST, CLOUD_FIRST, LOCAL_ONLY, CLOUD_ONLY, a role's ``fallbacks:``).

Candidates are tried in order. What happens on an error:

=====================================================  ==========================  ===============
error                                                  same candidate again?       next candidate?
=====================================================  ==========================  ===============
retryable `ProviderError` (429, 5xx, connection)       yes, ``retry.retries`` x    yes
                                                       (waits ``retry_after``, or
                                                       the doubling backoff)
`ProviderTimeoutError` (its ``timeout_s`` deadline)    no: it would sit through    yes
                                                       the deadline again
`ContextLengthExceededError` / `ContextWindowError`    no                          yes, skipping
                                                                                   known-smaller
                                                                                   windows
`AuthenticationError` (401/403), `AuthError` (no key)  no                          yes
other `ProviderError` (400, 404, malformed answer)     no                          yes
`BudgetExceededError`                                  no                          yes (a cheaper
                                                                                   one may fit)
`ConfigError`, `InvalidRequestError`, anything else    no                          no: raised
=====================================================  ==========================  ===============

A ``retry_after`` longer than ``retry.max_retry_after_s`` is not waited for: the chain moves on.
A provider with ``retry.cooldown_after`` retryable failures in a row is skipped for
``retry.cooldown_s`` (see `orchlab.strategies.health`), unless every candidate is cooling down.
When every candidate fails: `AllAttemptsFailedError`, grouping every attempt's error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

from orchlab import logs
from orchlab.config.schema import Strategy
from orchlab.errors import (
    AllAttemptsFailedError,
    ContextLengthExceededError,
    ContextWindowError,
    ProviderError,
    ProviderTimeoutError,
)
from orchlab.strategies.base import (
    FALL_THROUGH,
    Answer,
    Answering,
    AnyCandidate,
    Candidate,
    Nested,
    Outcome,
    ms,
)
from orchlab.strategies.logic import Logic

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator


async def call_with_retries(
    answering: Answering,
    cand: AnyCandidate,
    *,
    stage: str,
    params: Mapping[str, object] | None = None,
    notes: list[str] | None = None,
) -> Answer:
    """One candidate, retried on retryable errors as ``answering.retry`` says."""
    if isinstance(cand, Nested):
        return await answering.call(cand, stage=stage)  # its own logic retries its own candidates
    policy = answering.retry
    health = answering.orch.health
    tries = 0
    while True:
        label = stage if tries == 0 else f"{stage} retry {tries}"
        try:
            answer = await answering.call(
                cand, stage=label, params=params, timeout_s=policy.attempt_timeout_s
            )
        except ProviderError as exc:
            if not exc.retryable:
                raise
            cooled = health.failure(
                cand.provider, str(exc), after=policy.cooldown_after, cooldown_s=policy.cooldown_s
            )
            if cooled:
                logs.decision("cooldown", provider=cand.provider, cooldown_s=policy.cooldown_s)
                if notes is not None:
                    notes.append(f"{cand.provider} is cooling down for {policy.cooldown_s:g}s")
            if tries >= policy.retries or health.cooling(cand.provider) is not None:
                raise
            if isinstance(exc, ProviderTimeoutError):
                raise
            if exc.retry_after is not None:
                if exc.retry_after > policy.max_retry_after_s:
                    if notes is not None:
                        notes.append(
                            f"{cand.target} asked to retry after {exc.retry_after:g}s "
                            f"(> max_retry_after_s={policy.max_retry_after_s:g}): moved on"
                        )
                    raise
                wait = exc.retry_after
                why = "retry-after"
            else:
                wait = min(policy.backoff_s * 2**tries, policy.max_backoff_s)
                why = "backoff"
            logs.decision("retry", target=cand.target, wait_s=wait, why=why, error_type=type(exc).__name__)
            if notes is not None:
                notes.append(f"waited {wait:g}s ({why}) before retrying {cand.target}")
            await answering.clock.sleep(wait)
            tries += 1
            continue
        health.success(cand.provider)
        return answer


def context_window(orch: Orchestrator, cand: AnyCandidate) -> int | None:
    """The candidate's context window when the catalog knows it (a local adapter's own included)."""
    if isinstance(cand, Nested):
        return None
    return orch.catalog.entry(cand.provider, cand.model).info.context_window


def _tokens_needed(orch: Orchestrator, cand: AnyCandidate, exc: Exception) -> int | None:
    if isinstance(exc, ContextWindowError):
        return exc.prompt_tokens + exc.max_output_tokens
    if isinstance(exc, ContextLengthExceededError):
        window = context_window(orch, cand)
        return window + 1 if window is not None else None
    return None


async def run_chain(
    answering: Answering, candidates: Sequence[AnyCandidate], *, label: str = "fallback"
) -> Outcome:
    """Try ``candidates`` in order until one answers."""
    health = answering.orch.health
    notes: list[str] = []
    cooling = [c for c in candidates if isinstance(c, Candidate) and health.cooling(c.provider) is not None]
    order = [c for c in candidates if c not in cooling] or list(candidates)
    if cooling and len(order) < len(candidates):
        notes.append(
            "skipped (cooling down): "
            + ", ".join(
                f"{c.target} ({health.cooling(c.provider) or 0:.1f}s left)"
                for c in cooling
                if isinstance(c, Candidate)
            )
        )
    elif cooling:
        notes.append("every candidate is cooling down: tried them anyway")
    needed: int | None = None
    failed: list[str] = []
    for i, cand in enumerate(order, 1):
        if needed is not None:
            window = context_window(answering.orch, cand)
            if window is not None and window < needed:
                notes.append(f"skipped {cand.target}: window {window} < {needed} tokens needed")
                continue
        try:
            answer = await call_with_retries(answering, cand, stage=f"{label} {i}", notes=notes)
        except FALL_THROUGH as exc:
            failed.append(f"{cand.target} ({type(exc).__name__})")
            logs.decision("fallback", failed=cand.target, error_type=type(exc).__name__, stage=i)
            if isinstance(exc, ContextWindowError | ContextLengthExceededError):
                needed = max(needed or 0, _tokens_needed(answering.orch, cand, exc) or 0) or None
            continue
        head = (
            f"{cand.target} answered"
            if not failed
            else f"{cand.target} answered after {len(failed)} failed: {', '.join(failed)}"
        )
        rationale = f"{head} in {ms(answer.attempt.latency_s)}"
        return Outcome(answer, "; ".join([rationale, *notes]))
    raise AllAttemptsFailedError(
        f"all {len(candidates)} candidates failed ({len(answering.errors)} attempts): "
        + ", ".join(failed)
        + ("; " + "; ".join(notes) if notes else ""),
        answering.errors or [RuntimeError("no candidate could be tried")],
    )


class Fallback(Logic):
    """The candidates in order, each retried as ``retry:`` says, until one answers."""

    strategy = Strategy.FALLBACK

    async def answer(self, answering: Answering) -> Outcome:
        return await run_chain(answering, self.plan.candidates)

    def stream(self, answering: Answering) -> AsyncIterator[str | Outcome]:
        return stream_chain(answering, self.plan.candidates)


async def stream_chain(
    answering: Answering, candidates: Sequence[AnyCandidate], *, label: str = "fallback"
) -> AsyncIterator[str | Outcome]:
    """Stream the first candidate that produces a token: a candidate that fails before its first
    token passes to the next one (no retries while streaming: a retry would repeat the wait the
    caller is watching); once a token is out, an error is raised, never a switch mid-answer."""
    failed: list[str] = []
    for i, cand in enumerate(candidates, 1):
        started = False
        try:
            async for item in answering.stream_call(cand, stage=f"{label} {i}"):
                if isinstance(item, Answer):
                    if isinstance(cand, Candidate):
                        answering.orch.health.success(cand.provider)
                    head = f"{cand.target} streamed the answer"
                    if failed:
                        head += f" after {len(failed)} failed before their first token: {', '.join(failed)}"
                    yield Outcome(item, f"{head} in {ms(item.attempt.latency_s)}")
                    return
                started = True
                yield item
        except FALL_THROUGH as exc:
            if started:
                raise
            failed.append(f"{cand.target} ({type(exc).__name__})")
    raise AllAttemptsFailedError(
        f"all {len(candidates)} candidates failed before their first token: {', '.join(failed)}",
        answering.errors or [RuntimeError("no candidate could be tried")],
    )
