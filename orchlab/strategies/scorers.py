"""Confidence scorers: how sure are we of an answer? A score in [0, 1], or None when unknown.

=============  ==============================================================  =============
name           score                                                           extra calls
=============  ==============================================================  =============
``json``       1 when the answer parses as JSON (code fences allowed), else 0  none
``regex``      1 when ``re.search(pattern)`` matches, else 0                   none
validator      your callable: ``bool`` (1/0) or a float in [0, 1]              none
pydantic       1 when ``Model.model_validate_json`` accepts the answer         none
``logprob``    exp(mean token log-prob): the geometric-mean token probability  none (log-probs
                                                                               are requested)
``agreement``  share of k samples of the same model that agree with the        k - 1 samples
               answer (normalised text)
``judge``      a judge role/target's 1-10 rating / 10 (or a 0-1 rating)        1 judge call
=============  ==============================================================  =============

A cascade accepts an answer when ``score >= threshold`` and escalates when it is under (or
unknown: a provider that returns no log-probs, a judge that answers no number).

For example:

    from orchlab.strategies import scorers
    client.complete(prompt, strategy="cascade", scorer=scorers.pydantic_model(Invoice), threshold=1)
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from orchlab.errors import InvalidRequestError
from orchlab.strategies.base import FALL_THROUGH, Answer, Answering
from orchlab.types import Message

if TYPE_CHECKING:
    from pydantic import BaseModel

    from orchlab.config.schema import ScorerConfig


@dataclass(frozen=True, slots=True)
class Score:
    value: float | None
    note: str = ""


class Scorer(ABC):
    name: ClassVar[str] = "scorer"
    needs_logprobs: ClassVar[bool] = False
    """The cascade asks the provider for log-probs when this is set."""

    @property
    def label(self) -> str:
        """How the trail names this scorer."""
        return self.name

    @abstractmethod
    async def score(self, answering: Answering, answer: Answer, *, stage: str) -> Score: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Compare answers loosely: case, spacing, surrounding quotes and final punctuation ignored."""
    return _WS.sub(" ", text.strip().lower()).strip(" \t\n.!?;:\"'`*")


_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```\s*$", re.DOTALL)


def _unfence(text: str) -> str:
    m = _FENCE.match(text.strip())
    return m.group(1) if m else text.strip()


class Validator(Scorer):
    """A callable on the answer text: True/False become 1/0; a float is used as it is."""

    name = "validator"

    def __init__(self, fn: Callable[[str], bool | float], *, label: str | None = None) -> None:
        self.fn = fn
        self._label: str = label or str(getattr(fn, "__name__", "validator"))

    @property
    def label(self) -> str:
        return self._label

    async def score(self, answering: Answering, answer: Answer, *, stage: str) -> Score:
        try:
            result = self.fn(answer.content)
        except Exception as exc:
            return Score(0.0, f"{self._label} raised {type(exc).__name__}: {exc}")
        if isinstance(result, bool):
            return Score(1.0 if result else 0.0, f"{self._label}: {'passed' if result else 'failed'}")
        value = float(result)
        return Score(min(max(value, 0.0), 1.0), f"{self._label}: {value:g}")

    def __repr__(self) -> str:
        return f"Validator({self._label})"


def json_valid() -> Validator:
    """1 when the answer (without a surrounding code fence) parses as JSON."""

    def parses_as_json(text: str) -> bool:
        try:
            json.loads(_unfence(text))
        except ValueError:
            return False
        return True

    return Validator(parses_as_json, label="json")


def regex(pattern: str, flags: int = 0) -> Validator:
    compiled = re.compile(pattern, flags)

    def matches(text: str) -> bool:
        return compiled.search(text) is not None

    return Validator(matches, label=f"regex {pattern!r}")


def pydantic_model(model: type[BaseModel]) -> Validator:
    """1 when the answer is valid JSON for ``model``."""
    from pydantic import ValidationError

    def validates(text: str) -> bool:
        try:
            model.model_validate_json(_unfence(text))
        except ValidationError:
            return False
        return True

    return Validator(validates, label=f"pydantic {model.__name__}")


class LogprobScorer(Scorer):
    """exp(mean token log-prob) of the answer; None when the provider returned no log-probs."""

    name = "logprob"
    needs_logprobs = True

    async def score(self, answering: Answering, answer: Answer, *, stage: str) -> Score:
        lps = answer.response.logprobs
        if not lps:
            return Score(None, f"{answer.response.target} returned no log-probs")
        mean = sum(lps) / len(lps)
        return Score(math.exp(mean), f"mean log-prob {mean:.3f} over {len(lps)} tokens")


class AgreementScorer(Scorer):
    """Ask the same candidate ``samples - 1`` more times; the share that agrees with the answer."""

    name = "agreement"

    def __init__(self, samples: int = 3, *, temperature: float = 0.8) -> None:
        if samples < 2:
            raise InvalidRequestError("the agreement scorer needs samples >= 2")
        self.samples = samples
        self.temperature = temperature

    async def score(self, answering: Answering, answer: Answer, *, stage: str) -> Score:
        cand = answer.candidate
        base_seed = cand.params.seed if cand.params.seed is not None else 0

        async def sample(i: int) -> str | None:
            try:
                extra = await answering.call(
                    cand,
                    stage=f"{stage} sample {i}",
                    params={"temperature": self.temperature, "seed": base_seed + i, "logprobs": False},
                )
            except FALL_THROUGH:
                return None
            return extra.content

        others = await asyncio.gather(*(sample(i) for i in range(2, self.samples + 1)))
        got = [o for o in others if o is not None]
        if not got:
            return Score(None, "every extra sample failed")
        mine = normalize(answer.content)
        agree = 1 + sum(normalize(o) == mine for o in got)
        return Score(agree / (1 + len(got)), f"{agree}/{1 + len(got)} samples agree")

    def __repr__(self) -> str:
        return f"AgreementScorer(samples={self.samples})"


JUDGE_PROMPT = (
    "Rate how correct and complete the answer is, from 1 (wrong) to 10 (certainly right).\n\n"
    "Question:\n{question}\n\nAnswer:\n{answer}\n\nReply with the number only.\nRating:"
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_rating(text: str, scale: float = 10.0) -> float | None:
    """The first number in ``text`` as a 0-1 score: ``n / scale``, or ``n`` itself if it has a
    decimal point and is at most 1 (a 0-1 rating)."""
    m = _NUMBER.search(text)
    if m is None:
        return None
    value = float(m.group())
    if "." in m.group() and value <= 1.0:
        return value
    return min(max(value / scale, 0.0), 1.0)


class JudgeScorer(Scorer):
    """A judge (a role name or ``'provider:model'``) rates the answer."""

    name = "judge"

    def __init__(self, judge: str, *, scale: float = 10.0, prompt: str = JUDGE_PROMPT) -> None:
        self.judge = judge
        self.scale = scale
        self.prompt = prompt

    async def score(self, answering: Answering, answer: Answer, *, stage: str) -> Score:
        judge = answering.candidate(self.judge)
        text = self.prompt.format(question=answering.question, answer=answer.content)
        try:
            verdict = await answering.call(
                judge, stage=f"{stage} judge", messages=[Message("user", text)], params={"logprobs": False}
            )
        except FALL_THROUGH as exc:
            return Score(None, f"judge {judge.target} failed: {type(exc).__name__}")
        value = parse_rating(verdict.content, self.scale)
        if value is None:
            return Score(None, f"judge {judge.target} gave no rating: {verdict.content[:60]!r}")
        return Score(value, f"judge {judge.target} rated {verdict.content.strip()[:20]!r}")

    def __repr__(self) -> str:
        return f"JudgeScorer({self.judge!r})"


def make_scorer(spec: Any, config: ScorerConfig | None = None) -> Scorer:
    """A `Scorer` from a name (with its YAML settings), a `Scorer`, or a validator callable."""
    if isinstance(spec, Scorer):
        return spec
    if callable(spec):
        return Validator(spec)
    name = spec if spec is not None else (config.scorer if config is not None else "logprob")
    if name == "logprob":
        return LogprobScorer()
    if name == "json":
        return json_valid()
    if name == "regex":
        pattern = config.pattern if config is not None else None
        if not pattern:
            raise InvalidRequestError("the regex scorer needs a pattern (cascade: {pattern: ...})")
        return regex(pattern)
    if name == "agreement":
        if config is None:
            return AgreementScorer()
        return AgreementScorer(config.samples, temperature=config.sample_temperature)
    if name == "judge":
        judge = config.judge if config is not None else None
        if not judge:
            raise InvalidRequestError("the judge scorer needs a judge (a role or 'provider:model')")
        return JudgeScorer(judge)
    raise InvalidRequestError(
        f"unknown scorer {name!r}; use logprob, agreement, judge, json, regex, a Scorer or a callable"
    )
