"""Scorers of `orchlab.evaluate`: does an answer match the item's expectations?

Each scorer takes the answer (``outputs``), the item's ``expectations`` (``expected_response`` is
the gold answer) and ``inputs``, and returns a `Verdict`: passed or not, a value (the similarity,
the judge's word) and a rationale. `evaluate` hands them to MLflow as MLflow scorers
(`to_mlflow`), so each verdict is an assessment on the item's trace; the first scorer given is the
one the summary's ``accuracy`` counts.

================================  ===========================================================
scorer                            passes when
================================  ===========================================================
``exact()``                       the answer equals the gold answer (surrounding space ignored)
``normalised()``                  equal after `normalize` (case, spacing, quotes, final
                                  punctuation ignored)
``levenshtein(threshold=0.8)``    the Levenshtein ratio of the normalised texts (2 x common
                                  subsequence / total length, as rapidfuzz's ``fuzz.ratio``/100)
                                  is at least ``threshold``
``contains()``                    the normalised gold answer occurs in the normalised answer as
                                  whole words ("4" is in "2+2 = 4", not in "14")
``json_schema(schema)``           the answer (a code fence allowed) is JSON valid for ``schema``
                                  (needs the ``jsonschema`` package)
``judge(role)``                   a judge (a role or ``'provider:model'``) answers "yes" to "is
                                  this answer correct, given the reference?"
================================  ===========================================================

A scorer that is not one of these: any `EvalScorer` subclass, or a function
``fn(outputs, expectations) -> bool`` passed as ``scorer(fn)``.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchlab.errors import InvalidRequestError, MissingDependencyError
from orchlab.strategies.scorers import normalize

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator

EXPECTED = "expected_response"


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    value: float | str | None = None
    """The measure behind the verdict (a similarity, a judge's answer); None when there is none."""
    rationale: str = ""


class EvalScorer(ABC):
    """Scores one answer against one item's expectations."""

    name: str = "scorer"

    @abstractmethod
    def score(
        self, outputs: str | None, expectations: Mapping[str, Any], inputs: Mapping[str, Any]
    ) -> Verdict:
        """The verdict on ``outputs`` (None: the target failed, which never passes)."""

    def bind(self, client: Orchestrator) -> EvalScorer:
        """This scorer for ``client``'s calls (a judge needs one; the others ignore it)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _expected(expectations: Mapping[str, Any], name: str) -> str:
    if EXPECTED not in expectations:
        raise InvalidRequestError(
            f"scorer {name!r} needs expectations['{EXPECTED}'] (the gold answer) in every item"
        )
    return str(expectations[EXPECTED])


class _TextMatch(EvalScorer):
    def score(
        self, outputs: str | None, expectations: Mapping[str, Any], inputs: Mapping[str, Any]
    ) -> Verdict:
        expected = _expected(expectations, self.name)
        if outputs is None:
            return Verdict(False, None, "no answer (the target failed)")
        return self.match(outputs, expected)

    @abstractmethod
    def match(self, answer: str, expected: str) -> Verdict: ...


class ExactMatch(_TextMatch):
    name = "exact"

    def match(self, answer: str, expected: str) -> Verdict:
        ok = answer.strip() == expected.strip()
        return Verdict(ok, 1.0 if ok else 0.0, "equal" if ok else f"{answer.strip()[:60]!r} != {expected!r}")


class NormalisedMatch(_TextMatch):
    name = "normalised"

    def match(self, answer: str, expected: str) -> Verdict:
        a, e = normalize(answer), normalize(expected)
        ok = a == e
        return Verdict(ok, 1.0 if ok else 0.0, "equal after normalising" if ok else f"{a[:60]!r} != {e!r}")


def levenshtein_ratio(a: str, b: str) -> float:
    """2 x (longest common subsequence) / (len(a) + len(b)): 1 for equal texts, 0 for nothing in
    common; the same number as rapidfuzz's ``fuzz.ratio(a, b) / 100``, which is used when installed."""
    if not a and not b:
        return 1.0
    try:
        from rapidfuzz import fuzz
    except ImportError:
        pass
    else:
        return float(fuzz.ratio(a, b)) / 100.0
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for ch in a:
        current = [0]
        for j, other in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if ch == other else max(previous[j], current[j - 1]))
        previous = current
    return 2 * previous[-1] / (len(a) + len(b))


class Levenshtein(_TextMatch):
    name = "levenshtein"

    def __init__(self, threshold: float = 0.8) -> None:
        if not 0 <= threshold <= 1:
            raise InvalidRequestError(f"levenshtein threshold must be between 0 and 1, got {threshold}")
        self.threshold = threshold

    def match(self, answer: str, expected: str) -> Verdict:
        ratio = levenshtein_ratio(normalize(answer), normalize(expected))
        ok = ratio >= self.threshold
        return Verdict(ok, round(ratio, 4), f"ratio {ratio:.3f} {'>=' if ok else '<'} {self.threshold:g}")


class Contains(_TextMatch):
    name = "contains"

    def match(self, answer: str, expected: str) -> Verdict:
        a, e = normalize(answer), normalize(expected)
        ok = bool(e) and re.search(rf"(?<!\w){re.escape(e)}(?!\w)", a) is not None
        return Verdict(ok, 1.0 if ok else 0.0, f"{e!r} {'in' if ok else 'not in'} {a[:60]!r}")


_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```\s*$", re.DOTALL)


class JsonSchema(EvalScorer):
    name = "json_schema"

    def __init__(self, schema: Mapping[str, Any]) -> None:
        try:
            import jsonschema
        except ImportError:
            raise MissingDependencyError(
                "the json_schema scorer needs the jsonschema package: pip install jsonschema",
                provider="-",
                kind="scorer",
                module="jsonschema",
                extra=None,
            ) from None
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise InvalidRequestError(f"json_schema scorer: the schema is not valid: {exc.message}") from None
        self.schema = dict(schema)
        self._validator = jsonschema.Draft202012Validator(self.schema)

    def score(
        self, outputs: str | None, expectations: Mapping[str, Any], inputs: Mapping[str, Any]
    ) -> Verdict:
        if outputs is None:
            return Verdict(False, None, "no answer (the target failed)")
        m = _FENCE.match(outputs.strip())
        text = m.group(1) if m else outputs.strip()
        try:
            value = json.loads(text)
        except ValueError as exc:
            return Verdict(False, 0.0, f"not JSON: {exc}")
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(root)"
            return Verdict(False, 0.0, f"{len(errors)} schema error(s); at {where}: {errors[0].message}")
        return Verdict(True, 1.0, "valid for the schema")


JUDGE_PROMPT = (
    "Question: {question}\nReference answer: {expected}\nCandidate answer: {answer}\n"
    "Is the candidate answer correct, given the reference? Reply yes or no.\nVerdict:"
)


class Judge(EvalScorer):
    """An LLM judge through a role (or ``'provider:model'``); its calls are orchlab calls (traced,
    costed, budgeted like any other)."""

    name = "judge"

    def __init__(self, role: str, *, prompt: str = JUDGE_PROMPT, client: Orchestrator | None = None) -> None:
        self.role = role
        self.prompt = prompt
        self.client = client

    def bind(self, client: Orchestrator) -> Judge:
        return self if self.client is not None else Judge(self.role, prompt=self.prompt, client=client)

    def score(
        self, outputs: str | None, expectations: Mapping[str, Any], inputs: Mapping[str, Any]
    ) -> Verdict:
        if outputs is None:
            return Verdict(False, None, "no answer (the target failed)")
        if self.client is None:
            raise InvalidRequestError("the judge scorer has no client: evaluate() binds one, or pass client=")
        question = inputs.get("question", next(iter(inputs.values()), ""))
        text = self.prompt.format(
            question=question, expected=_expected(expectations, self.name), answer=outputs
        )
        verdict = self.client.run(self.role, [{"role": "user", "content": text}])
        word = normalize(verdict.content).split(" ")[0] if verdict.content.strip() else ""
        cost = "unknown cost" if verdict.cost_usd is None else f"${verdict.cost_usd:.6f}"
        return Verdict(
            word == "yes", word, f"judge {self.role} said {verdict.content.strip()[:40]!r} ({cost})"
        )


class FunctionScorer(EvalScorer):
    def __init__(self, fn: Callable[[str, Mapping[str, Any]], bool], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or str(getattr(fn, "__name__", "scorer"))

    def score(
        self, outputs: str | None, expectations: Mapping[str, Any], inputs: Mapping[str, Any]
    ) -> Verdict:
        if outputs is None:
            return Verdict(False, None, "no answer (the target failed)")
        ok = bool(self.fn(outputs, expectations))
        return Verdict(ok, 1.0 if ok else 0.0, f"{self.name}: {'passed' if ok else 'failed'}")


def exact() -> ExactMatch:
    return ExactMatch()


def normalised() -> NormalisedMatch:
    return NormalisedMatch()


def levenshtein(threshold: float = 0.8) -> Levenshtein:
    return Levenshtein(threshold)


def contains() -> Contains:
    return Contains()


def json_schema(schema: Mapping[str, Any]) -> JsonSchema:
    return JsonSchema(schema)


def judge(role: str, *, prompt: str = JUDGE_PROMPT) -> Judge:
    return Judge(role, prompt=prompt)


def scorer(fn: Callable[[str, Mapping[str, Any]], bool], name: str | None = None) -> FunctionScorer:
    return FunctionScorer(fn, name)


BY_NAME: Mapping[str, Callable[[], EvalScorer]] = {
    "exact": ExactMatch,
    "normalised": NormalisedMatch,
    "levenshtein": Levenshtein,
    "contains": Contains,
}


def as_scorer(spec: object) -> EvalScorer:
    """An `EvalScorer` from itself, a built-in's name (``"contains"``) or a function."""
    if isinstance(spec, EvalScorer):
        return spec
    if isinstance(spec, str):
        if spec not in BY_NAME:
            raise InvalidRequestError(
                f"unknown scorer {spec!r}; by name: {', '.join(BY_NAME)}; or json_schema(schema), "
                "judge(role), scorer(fn) from orchlab.evaluation.scorers"
            )
        return BY_NAME[spec]()
    if callable(spec):
        return FunctionScorer(spec)
    raise InvalidRequestError(f"a scorer is an EvalScorer, a built-in's name or a function, got {spec!r}")


def to_mlflow(scorer: EvalScorer, seen: Callable[[str, str, Verdict], None]) -> Any:
    """``scorer`` as an MLflow scorer: each verdict a Feedback (value: passed) on the item's trace,
    also handed to ``seen(trace_id, name, verdict)``."""
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer as mlflow_scorer

    def run(inputs: Any, outputs: Any, expectations: Any, trace: Any) -> Feedback:
        verdict = scorer.score(
            None if outputs is None else str(outputs), dict(expectations or {}), dict(inputs or {})
        )
        if trace is not None:
            seen(trace.info.trace_id, scorer.name, verdict)
        metadata = {} if verdict.value is None else {"value": str(verdict.value)}
        return Feedback(value=verdict.passed, rationale=verdict.rationale, metadata=metadata)

    return mlflow_scorer(run, name=scorer.name)
