"""What the orchestrator knows about one orchestrated call while it runs, and who hears of it.

A `CallContext` collects the `Attempt` of every provider call made for one user call (a plain
role call makes one; strategies make several). Attempts are frozen values: each has a slot in
``attempts`` (`CallContext.new_attempt`), and its end or a logic's verdict replaces the value in
that slot (`CallContext.revise`). When the call ends, each registered `CallObserver` receives a
`CallRecord` (cost tracking, MLflow tracing) and may return `CallFacts` learnt from it (the
trace id), which the pipeline attaches to the response with `dataclasses.replace`. Observers
must return quickly and never raise into the caller's path: the orchestrator isolates them.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from orchlab.errors import OrchlabWarning
from orchlab.tools.model import ToolRun
from orchlab.types import Attempt, LLMResponse, Message


@dataclass(slots=True)
class CallContext:
    role: str | None
    strategy: str
    messages: tuple[Message, ...]
    task_type: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    started_perf: float = field(default_factory=time.perf_counter)
    log: bool = True
    tags: dict[str, Any] = field(default_factory=dict)
    """Free annotations for observers, e.g. the registered prompt name and version."""
    tool_runs: list[ToolRun] = field(default_factory=list)
    """The tools `delegate` ran in this call, in order (a TOOL span each in its trace)."""
    first_token_s: float | None = None
    """A streamed call: seconds from its start to its first text delta (metrics' time to first token)."""
    first_cache: str | None = None
    """A streamed call: what the response cache did for the attempt of that first delta (hit | miss)."""
    cache: str | None = None
    """The call's response-cache choice: auto, force, off (None: the role's; `orchlab.pipeline.cache`)."""

    def new_attempt(
        self,
        provider: str,
        model: str,
        *,
        stage: str | None = None,
        params: dict[str, Any] | None = None,
        **facts: Any,
    ) -> int:
        """Record the start of one provider call (it reads ``"error"`` until `revise` records its
        end; ``facts`` are other `Attempt` fields known at once); its slot in ``attempts``."""
        facts = {"outcome": "error", "latency_s": 0.0, **facts}
        params = params if params is not None else {}
        self.attempts.append(
            Attempt(provider, model, stage=stage, started_at=time.time(), params=params, **facts)
        )
        return len(self.attempts) - 1

    def revise(self, slot: int, **changes: Any) -> Attempt:
        """Replace the attempt in ``slot`` by a copy with ``changes`` (its end, a logic's verdict)."""
        attempt = replace(self.attempts[slot], **changes)
        self.attempts[slot] = attempt
        return attempt


@dataclass(slots=True)
class CallRecord:
    """A finished call: its context, and the response or the error it ended with."""

    context: CallContext
    response: LLMResponse | None
    error: BaseException | None
    ended_at: float

    @property
    def latency_s(self) -> float:
        return self.ended_at - self.context.started_at


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What an observer learnt of a finished call that its caller should see."""

    trace_id: str | None = None
    """The id of the call's trace (tracking): set on the response, or on an orchlab error."""


class CallObserver(Protocol):
    def call_finished(self, record: CallRecord) -> CallFacts | None: ...


class Observers:
    """The registered observers; a failing observer warns once and is skipped after that."""

    def __init__(self) -> None:
        self._observers: list[CallObserver] = []
        self._warned: set[int] = set()

    def add(self, observer: CallObserver) -> None:
        if observer not in self._observers:
            self._observers.append(observer)

    def remove(self, observer: CallObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def __iter__(self) -> Any:
        return iter(list(self._observers))

    def notify(self, record: CallRecord) -> CallFacts | None:
        """Tell every observer; the facts they returned (the first of each kind wins)."""
        found: CallFacts | None = None
        for observer in list(self._observers):
            try:
                facts = observer.call_finished(record)
                if facts is not None:
                    found = facts if found is None else _merge(found, facts)
            except Exception as exc:
                if id(observer) not in self._warned:
                    self._warned.add(id(observer))
                    warnings.warn(
                        f"orchlab: {type(observer).__name__} failed ({exc!r}); the call itself "
                        "succeeded. Further failures of this observer are not reported.",
                        OrchlabWarning,
                        stacklevel=2,
                    )
        return found


def _merge(first: CallFacts, then: CallFacts) -> CallFacts:
    return CallFacts(trace_id=first.trace_id if first.trace_id is not None else then.trace_id)
