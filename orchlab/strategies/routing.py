"""AUTO: what kind of task is this, and where does the ``routing:`` table send it?

`classify` is a rule-based classifier (precompiled patterns, a few tens of microseconds): it
scores each `TaskType` by markers in the text (tracebacks, code, review/summary/workflow verbs,
numbers and tables, reasoning words, length) and picks the highest; ties go to the more
specific type (the order of `PRIORITY`); no marker at all gives ``general``. An LLM classifier
(``routing.classifier: llm | hybrid`` with ``classifier_role``) can replace it or back it up.

For example:

    routing:
      default: llm.inference
      routes:
        code_generation: llm.code               # a role (with its own strategy, if it has one)
        summarization: "local:gemma-3-270m"     # or a target
        reasoning: {cheap: llm.inference, premium: "openai:o4-mini"}   # per tier
      tier: premium                             # the tier per-tier routes use...
      low_budget: {below_usd: 0.50, tier: cheap}   # ...unless the session budget runs low
"""

from __future__ import annotations

import re
import string
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchlab.config.schema import RoutingConfig


class TaskType(StrEnum):
    CODE_GENERATION = "code_generation"
    CODE_REVIEW = "code_review"
    REASONING = "reasoning"
    SUMMARIZATION = "summarization"
    ERROR_DIAGNOSIS = "error_diagnosis"
    DATA_INTERPRETATION = "data_interpretation"
    WORKFLOW_GENERATION = "workflow_generation"
    GENERAL = "general"


PRIORITY: tuple[TaskType, ...] = (
    TaskType.ERROR_DIAGNOSIS,
    TaskType.CODE_REVIEW,
    TaskType.CODE_GENERATION,
    TaskType.SUMMARIZATION,
    TaskType.WORKFLOW_GENERATION,
    TaskType.DATA_INTERPRETATION,
    TaskType.REASONING,
    TaskType.GENERAL,
)
"""Tie-break order: the more specific task type wins a tie."""


@dataclass(frozen=True, slots=True)
class Classification:
    task_type: TaskType
    reason: str
    source: str = "rules"
    """``rules``, ``llm``, or ``given`` (the caller named the task type)."""
    elapsed_s: float = 0.0


# Speed: the text is split into words once (``str.translate`` + ``split``, C-level) and markers
# are set lookups; a phrase is searched only when its first word occurs; regexes only run on
# small windows. Regex alternations with \b over the whole text were 10-50x slower.
_SEPARATORS = str.maketrans({c: " " for c in string.punctuation if c != "_"})
_EXCEPTION_NAME = re.compile(r"[A-Z]\w*(?:Error|Exception)(?::|\s+was raised)")
_MATH = re.compile(r"\d\s*[-+*/^×÷]\s*\d")
_IN_N_UNITS = re.compile(r"\bin (?:one|two|three|a few|\d+) (?:sentences?|lines?|bullets?|words?)\b")

Phrases = tuple[tuple[str, str], ...]


def _phrases(*phrases: str) -> Phrases:
    """Each phrase with the first word it has after splitting (the gate for the substring test)."""
    return tuple((p.translate(_SEPARATORS).split()[0], p) for p in phrases)


_TRACEBACK = _phrases(
    "traceback (most recent call last)",
    "segmentation fault",
    "core dumped",
    "panic: ",
    "npm err!",
    "fatal error:",
    "undefined reference to",
)
_ERROR_WORDS = frozenset(
    {"error", "errors", "exception", "stacktrace", "crash", "crashes", "crashed", "failing", "bug"}
)
_ERROR = _phrases("stack trace", "fails with", "doesn't work", "does not work", "not working", "exit code")
# code: lines that start or end like code (the text is prefixed and suffixed with a newline)
_CODE_MARKS = (
    "\ndef ", "\nclass ", "\nimport ", "\nfrom ", "\n#include", "\nfunction ", "\nconst ", "\nlet ",
    "\nvar ", "\npublic ", "\nprivate ", "\nfn ", "\nfunc ", "\nselect ", "\npackage ", "\n@",
    "return ", "{\n", "}\n", ";\n", "):\n",
)  # fmt: skip
_REVIEW_WORDS = frozenset({"review", "refactor", "critique", "lint"})
_REVIEW = _phrases(
    "code smell", "improve this code", "improve the code", "improve my code", "clean this up", "clean up",
    "what's wrong with", "whats wrong with", "is this code", "is my code", "pull request", "best practice",
)  # fmt: skip
_GEN_VERBS = frozenset({"write", "implement", "create", "generate", "build", "code", "make"})
_GEN_OBJECTS = frozenset(
    {"function", "class", "script", "program", "method", "module", "regex", "query", "sql", "api",
     "endpoint", "cli", "test", "tests", "snippet", "decorator", "parser"}
)  # fmt: skip
_LANGUAGES = frozenset(
    {"python", "javascript", "typescript", "rust", "golang", "java", "kotlin", "ruby", "bash", "sql"}
)
_SUMMARY_WORDS = frozenset(
    {"summarize", "summarise", "summary", "summarization", "tldr", "recap", "gist", "condense"}
)
_SUMMARY = _phrases("tl;dr", "key points", "key takeaways", "main points", "brief overview")
_WORKFLOW_WORDS = frozenset(
    {"workflow", "workflows", "pipeline", "pipelines", "dag", "airflow", "prefect", "dagster", "n8n",
     "zapier", "automate", "automation", "orchestrate", "orchestration", "etl", "runbook", "playbook", "cron"}
)  # fmt: skip
_WORKFLOW = _phrases("github actions", "ci/cd", "step-by-step plan", "step by step plan")
_DATA_WORDS = frozenset(
    {"csv", "dataframe", "dataset", "table", "column", "columns", "mean", "median", "average", "std",
     "variance", "correlation", "correlated", "distribution", "histogram", "chart", "plot", "trend", "metric",
     "metrics", "kpi", "kpis", "regression", "outlier", "outliers", "percentile", "percentiles",
     "statistics", "statistical", "quarterly", "revenue", "growth"}
)  # fmt: skip
_REASONING_WORDS = frozenset(
    {"why", "prove", "proof", "reason", "reasoning", "logic", "logical", "puzzle", "riddle", "deduce",
     "infer", "calculate", "compute", "solve", "tradeoff", "tradeoffs", "compare", "explain", "therefore"}
)  # fmt: skip
_REASONING = _phrases(
    "step by step", "how many", "how much", "what would happen", "trade-off", "pros and cons"
)

_HEAD, _TAIL = 1500, 500


def _sample(text: str) -> str:
    # Instructions sit at the start of a long paste; tracebacks at the end.
    return text if len(text) <= _HEAD + _TAIL else text[:_HEAD] + "\n" + text[-_TAIL:]


def _phrase(lowered: str, words: set[str], phrases: Phrases) -> str | None:
    for first, phrase in phrases:
        if first in words and phrase in lowered:
            return phrase
    return None


def _first(found: str | set[str] | frozenset[str]) -> str:
    return found if isinstance(found, str) else sorted(found)[0]


def _exception_name(sample: str) -> str | None:
    for marker in ("Error", "Exception"):
        pos = sample.find(marker)
        while pos >= 0:
            window = sample[max(pos - 40, 0) : pos + len(marker) + 12]
            m = _EXCEPTION_NAME.search(window)
            if m is not None:
                return m.group()
            pos = sample.find(marker, pos + 1)
    return None


def classify(text: str) -> Classification:
    """The task type of ``text`` by rules, with the markers that decided it."""
    started = time.perf_counter()
    sample = _sample(text)
    lowered = sample.lower()
    tokens = lowered.translate(_SEPARATORS).split()
    words = set(tokens)
    scores: dict[TaskType, float] = dict.fromkeys(PRIORITY, 0.0)
    why: dict[TaskType, list[str]] = {k: [] for k in PRIORITY}

    def add(task: TaskType, points: float, marker: str) -> None:
        scores[task] += points
        why[task].append(marker)

    fenced = "```" in sample
    code_lines = 0
    if "\n" in sample:
        framed = f"\n{lowered}\n"
        code_lines = sum(map(framed.count, _CODE_MARKS))
    has_code = fenced or code_lines >= 2
    if found := _phrase(lowered, words, _TRACEBACK):
        add(TaskType.ERROR_DIAGNOSIS, 4, f"traceback {found!r}")
    if ("error" in lowered or "exception" in lowered) and (name := _exception_name(sample)):
        add(TaskType.ERROR_DIAGNOSIS, 2, f"exception {name!r}")
    if hits := words & _ERROR_WORDS or _phrase(lowered, words, _ERROR):
        add(TaskType.ERROR_DIAGNOSIS, 1, repr(_first(hits)))
    if review := words & _REVIEW_WORDS or _phrase(lowered, words, _REVIEW):
        add(
            TaskType.CODE_REVIEW,
            3 if has_code else 1.5,
            repr(_first(review)) + (" + code" if has_code else ""),
        )
    verbs, objects = words & _GEN_VERBS, words & _GEN_OBJECTS
    if verbs and objects:
        add(TaskType.CODE_GENERATION, 3, f"{_first(verbs)!r} + {_first(objects)!r}")
    if languages := words & _LANGUAGES:
        add(TaskType.CODE_GENERATION, 1, repr(_first(languages)))
    if has_code and not scores[TaskType.CODE_REVIEW] and not scores[TaskType.ERROR_DIAGNOSIS]:
        add(TaskType.CODE_GENERATION, 1, "code" + (" fence" if fenced else f" ({code_lines} lines)"))
    summary: str | set[str] | None = words & _SUMMARY_WORDS or _phrase(lowered, words, _SUMMARY)
    if not summary and "in" in words and ("sentence" in lowered or "bullet" in lowered or "line" in lowered):
        m = _IN_N_UNITS.search(lowered, 0, 1000)
        summary = m.group() if m else None
    if summary:
        add(TaskType.SUMMARIZATION, 4, repr(_first(summary)))
    if len(text) > 2500 and not has_code:
        add(TaskType.SUMMARIZATION, 1, f"long text ({len(text)} chars)")
    if workflow := words & _WORKFLOW_WORDS or _phrase(lowered, words, _WORKFLOW):
        add(TaskType.WORKFLOW_GENERATION, 3, repr(_first(workflow)))
    if data := words & _DATA_WORDS:
        add(TaskType.DATA_INTERPRETATION, min(len(data), 3), f"data words {sorted(data)[:3]}")
    numbers = sum(map(str.isdigit, tokens))
    if numbers >= 8 and not has_code:
        add(TaskType.DATA_INTERPRETATION, 2, f"{numbers} numbers")
    if not has_code and (sample.count(",") >= 6 or "\n|" in sample):
        rows = sum(
            1 for line in sample.split("\n", 200)[:200] if line.count(",") >= 2 or line.startswith("|")
        )
        if rows >= 3:
            add(TaskType.DATA_INTERPRETATION, 2, f"a table ({rows} rows)")
    reasoning: set[str] = words & _REASONING_WORDS
    if found := _phrase(lowered, words, _REASONING):
        reasoning = reasoning | {found}
    if reasoning:
        add(TaskType.REASONING, min(len(reasoning), 3), f"{sorted(reasoning)[:3]}")
    if numbers and (m := _MATH.search(sample, 0, 600)):
        add(TaskType.REASONING, 1, f"arithmetic {m.group()!r}")
    best = max(PRIORITY, key=scores.__getitem__)  # max keeps the first of equals: PRIORITY order
    if scores[best] <= 0:
        return Classification(TaskType.GENERAL, "no marker matched", "rules", time.perf_counter() - started)
    return Classification(best, ", ".join(why[best]), "rules", time.perf_counter() - started)


CLASSIFY_PROMPT = (
    "Classify the task below into exactly one of these categories: {labels}.\n\n"
    "Task:\n{text}\n\nReply with the category name only.\nCategory:"
)


def parse_task_type(text: str) -> TaskType | None:
    """The task type an LLM named (``code_generation`` or ``code generation``); the first one wins."""
    lowered = text.lower()
    found: list[tuple[int, TaskType]] = []
    for task in TaskType:
        for spelling in (task.value, task.value.replace("_", " ")):
            pos = lowered.find(spelling)
            if pos >= 0:
                found.append((pos, task))
    return min(found, key=lambda item: item[0])[1] if found else None


def route_for(
    routing: RoutingConfig, task: TaskType, tier: str | None, *, remaining_usd: float | None = None
) -> tuple[str | None, str]:
    """(role or target, why) for a task type; (None, why) when nothing is routed.

    A route given per tier uses the call's ``tier``; else ``routing.low_budget.tier`` while the
    session budget has ``remaining_usd`` under ``low_budget.below_usd``; else ``routing.tier``.
    """
    entry = routing.routes.get(task.value)
    if isinstance(entry, str):
        return entry, f"routes.{task.value}"
    if isinstance(entry, dict):
        wanted, because = _tier(routing, tier, remaining_usd)
        if wanted is not None and wanted in entry:
            return entry[wanted], f"routes.{task.value}.{wanted}{because}"
        if "default" in entry:
            return entry["default"], f"routes.{task.value}.default (no tier {wanted!r})"
    if routing.default is not None:
        return routing.default, "routing.default"
    return None, "no route"


def _tier(routing: RoutingConfig, tier: str | None, remaining_usd: float | None) -> tuple[str | None, str]:
    """The tier a per-tier route uses, and why when the budget chose it."""
    low = routing.low_budget
    if tier is None and low is not None and remaining_usd is not None and remaining_usd < low.below_usd:
        return (
            low.tier,
            f" (session budget ${remaining_usd:.4g} left < low_budget.below_usd ${low.below_usd:g})",
        )
    return tier or routing.tier, ""
