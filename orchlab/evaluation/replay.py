"""Replay: a cascade's or a vote's policy applied again to answers already recorded, no model called.

A live evaluation records, per item, every attempt of the call (stage, answer text, score, cost,
latency) and the policy it ran (`policy_of`). `replay` picks the answer a policy would have
returned from those attempts:

- **vote** (``voters=n``): the first ``n`` recorded voters, grouped by normalised text; the biggest
  group wins, ties go to the group whose first member comes first (the live rule of
  `orchlab.strategies.ensemble.vote`); empty or failed voters abstain.
- **cascade** (``threshold=t``, ``order=[2, 1]``): stage by stage in ``order`` (1-based, default
  the recorded order), accept the stage's answer when its recorded score is at least its
  threshold (a stage's own threshold first), else escalate; the last stage is accepted whatever
  its score. A stage that is itself a vote is replayed as one.

An item whose answer under the new policy needs a stage or a voter the live run never called
(a cascade accepted at stage 1 live, replayed with a higher threshold) cannot be replayed: it
is counted as ``missing`` and left out of the accuracy. Cost is the sum of the attempts the policy
uses (extra agreement samples and judges included); latency is the wall time those attempts
spanned live (first start to last end), which leaves out the call's own overhead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchlab.errors import InvalidRequestError
from orchlab.strategies.scorers import normalize

if TYPE_CHECKING:
    from orchlab.strategies.plan import Plan

ANSWERED = ("ok", "rejected")
POLICY_KEYS = ("voters", "threshold", "order")


def policy_of(plan: Plan) -> dict[str, Any]:
    """What a live call's plan does, in the terms replay can change."""
    from orchlab.config.schema import Strategy
    from orchlab.strategies.base import Nested

    if plan.strategy == Strategy.ENSEMBLE and _mode(plan) == "vote":
        return {"logic": "vote", "voters": len(plan.candidates)}
    if plan.strategy == Strategy.CASCADE:
        config = plan.spec.cascade if plan.spec is not None else None
        threshold = plan.threshold if plan.threshold is not None else (config.threshold if config else 0.7)
        stages = []
        for cand in plan.candidates:
            kind = "single"
            if isinstance(cand, Nested):
                vote = str(cand.strategy) == "ensemble" and dict(cand.options).get("mode", "vote") == "vote"
                kind = "vote" if vote else "logic"
            stages.append({"kind": kind, "threshold": cand.threshold})
        return {"logic": "cascade", "threshold": threshold, "stages": stages}
    return {"logic": str(plan.strategy)}


def _mode(plan: Plan) -> str:
    if plan.mode is not None:
        return str(plan.mode.value)
    ens = plan.spec.ensemble if plan.spec is not None else None
    return ens.mode if ens is not None else "vote"


def with_overrides(policy: Mapping[str, Any], overrides: Mapping[str, Any], label: str) -> dict[str, Any]:
    """The recorded policy with a target's ``voters`` / ``threshold`` / ``order`` on top, checked."""
    out = dict(policy)
    logic = policy.get("logic")
    for key, value in overrides.items():
        allowed = {"vote": ("voters",), "cascade": ("threshold", "order")}.get(str(logic), ())
        if key not in allowed:
            raise InvalidRequestError(
                f"replay target {label!r}: {key}= does not apply to the recorded {logic!r} "
                f"(a vote takes voters=, a cascade threshold= and order=)"
            )
        if key == "voters" and (not isinstance(value, int) or value < 1):
            raise InvalidRequestError(f"replay target {label!r}: voters must be an int >= 1, got {value!r}")
        if key == "threshold" and not (isinstance(value, int | float) and 0 <= value <= 1):
            raise InvalidRequestError(f"replay target {label!r}: threshold must be in [0, 1], got {value!r}")
        if key == "order":
            n = len(policy.get("stages", ()))
            if not isinstance(value, Sequence) or sorted(value) != list(range(1, n + 1)):
                raise InvalidRequestError(
                    f"replay target {label!r}: order must list the stages 1..{n} once each, got {value!r}"
                )
            value = list(value)
        out[key] = value
    return out


@dataclass(frozen=True)
class Replayed:
    answer: str | None
    cost_usd: float | None
    latency_s: float
    attempts: int
    escalated: bool | None = None
    agreement: float | None = None


def _stage_of(attempt: Mapping[str, Any]) -> str:
    return str(attempt.get("stage") or "")


def _cost(attempts: Sequence[Mapping[str, Any]]) -> float | None:
    costs = [a.get("cost_usd") for a in attempts]
    return None if any(c is None for c in costs) else float(sum(costs))  # type: ignore[arg-type]


def _span(attempts: Sequence[Mapping[str, Any]]) -> float:
    """Wall time from the first attempt's start to the last one's end (attempts that ran at once
    overlap, as they did live); the sum of latencies when starts were not recorded."""
    starts = [a.get("started_at") for a in attempts]
    if not attempts or any(not s for s in starts):
        return sum(float(a.get("latency_s") or 0.0) for a in attempts)
    ends = [float(a["started_at"]) + float(a.get("latency_s") or 0.0) for a in attempts]
    return max(ends) - min(float(s) for s in starts if s)


def _vote(outputs: Sequence[str]) -> tuple[int, float] | None:
    """Index of the winning answer and the winning group's share (the live vote's rule)."""
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(outputs):
        key = normalize(text)
        if key:
            groups.setdefault(key, []).append(i)
    if not groups:
        return None
    voters = sum(len(g) for g in groups.values())
    best = max(groups.values(), key=len)  # first of equal groups: first appearance wins
    return best[0], len(best) / voters


def _voters(attempts: Sequence[Mapping[str, Any]], prefix: str) -> dict[int, Mapping[str, Any]]:
    pattern = re.compile(rf"^{re.escape(prefix)}vote (\d+)$")
    found: dict[int, Mapping[str, Any]] = {}
    for a in attempts:
        m = pattern.match(_stage_of(a))
        if m:
            found[int(m.group(1))] = a
    return found


def replay_vote(record: Mapping[str, Any], voters: int, prefix: str = "") -> Replayed | None:
    """The answer of a vote over the first ``voters`` recorded voters (None: not all recorded)."""
    attempts = record.get("attempts") or []
    found = _voters(attempts, prefix)
    if any(i not in found for i in range(1, voters + 1)):
        return None
    used = [found[i] for i in range(1, voters + 1)]
    answered = [a for a in used if a.get("outcome") in ANSWERED and a.get("output") is not None]
    won = _vote([str(a["output"]) for a in answered])
    if won is None:
        answer = str(answered[0]["output"]) if answered else None
        agreement = 0.0 if answered else None
    else:
        answer, agreement = str(answered[won[0]]["output"]), won[1]
    return Replayed(answer, _cost(used), _span(used), len(used), agreement=agreement)


def _stage(record: Mapping[str, Any], i: int, kind: str) -> tuple[str, Any] | None:
    """Stage ``i``: ("answer", (text, score, attempts)) | ("failed", attempts) | None (not run)."""
    attempts = record.get("attempts") or []
    head = f"cascade {i}"
    mine = [a for a in attempts if _stage_of(a) == head or _stage_of(a).startswith(head + " ")]
    if not mine:
        return None
    if kind == "vote":
        voted = replay_vote({"attempts": mine}, len(_voters(mine, head + " / ")), prefix=head + " / ")
        if voted is None or voted.answer is None:
            return ("failed", mine)
        winner = next(a for a in mine if a.get("output") == voted.answer and " / vote " in _stage_of(a))
        return ("answer", (voted.answer, winner.get("confidence"), mine))
    calls = [a for a in mine if re.fullmatch(rf"{re.escape(head)}( retry \d+)?", _stage_of(a))]
    answered = [a for a in calls if a.get("outcome") in ANSWERED and a.get("output") is not None]
    if not answered:
        return ("failed", mine)
    last = answered[-1]
    return ("answer", (str(last["output"]), last.get("confidence"), mine))


def replay_cascade(record: Mapping[str, Any], policy: Mapping[str, Any]) -> Replayed | None:
    stages = policy.get("stages") or []
    order = policy.get("order") or list(range(1, len(stages) + 1))
    used: list[Mapping[str, Any]] = []
    rejected: list[tuple[float, str]] = []
    for pos, i in enumerate(order):
        spec = stages[i - 1]
        got = _stage(record, i, spec.get("kind", "single"))
        if got is None:
            return None
        state, data = got
        if state == "failed":
            used += data
            continue
        text, score, attempts = data
        used += attempts
        bar = spec.get("threshold") if spec.get("threshold") is not None else policy["threshold"]
        if pos == len(order) - 1 or (score is not None and score >= bar):
            return Replayed(text, _cost(used), _span(used), len(used), escalated=pos > 0)
        rejected.append((score if score is not None else -1.0, text))
    best = max(rejected)[1] if rejected else None
    return Replayed(best, _cost(used), _span(used), len(used), escalated=True)


def replay(record: Mapping[str, Any], policy: Mapping[str, Any]) -> Replayed | None:
    """``record``'s answer under ``policy`` (None: it needs answers the live run did not record)."""
    logic = policy.get("logic")
    if logic == "vote":
        return replay_vote(record, int(policy["voters"]))
    if logic == "cascade":
        return replay_cascade(record, policy)
    # any other logic: only its own recorded answer, as it was
    return Replayed(
        record.get("answer"),
        record.get("cost_usd"),
        float(record.get("latency_s") or 0.0),
        len(record.get("attempts") or []),
    )
