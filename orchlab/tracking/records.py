"""A finished call (`CallRecord`) as a trace record: plain JSON, secrets scrubbed.

The record is built on the caller's path and appended to the journal (see `journal`); the drain
process turns it into an MLflow trace with MLflow's public tracing API (see `mlflow_writes`), with
the trace id given to the caller, ``tr-<32 hex>``.

One trace per orchestrated call::

    {"kind": "trace", "trace_id": "tr-...", "tags": {...}, "run_id"?, "experiment_id"?, "prompts"?,
     "spans": [root, attempt, ...]}     # each {"name", "type", "start_ns", "end_ns", "inputs",
                                        #       "outputs", "attributes", "status", "error"}

- the trace named ``role → provider:model`` (or ``role → strategy``, see `trace_name`), the name
  MLflow's traces list shows; its request and response previews are the last user message and
  the answer (MLflow takes them from the root span's chat-shaped inputs and outputs);
- the root span (type CHAIN) named after the role (or the strategy): role, strategy, task type,
  the decision (winner, rationale, scores), total cost, latency, error; trace tags for filtering;
- a child span (type CHAT_MODEL; EMBEDDING for ``client.embed``) per provider attempt, with
  its real start and end: provider, model, params, messages, output (with the tool calls it
  asked for), ``mlflow.chat.tokenUsage``, ``mlflow.llm.model`` / ``mlflow.llm.provider``,
  orchlab's cost as ``mlflow.llm.cost``, outcome and error;
- a child span (type TOOL) per tool run of a `delegate` loop: the call's arguments in, the
  result out, its step, call id and whether it failed (status ERROR).
"""

from __future__ import annotations

import functools
import getpass
import os
import random
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from orchlab.calls import CallRecord
from orchlab.tools.model import ToolCall, ToolRun
from orchlab.tracking.context import TraceLink
from orchlab.types import Attempt, Message

REDACTED = "**********"
_SECRET_KEY = re.compile(
    r"api[-_]?key|secret|password|passwd|authorization|bearer|credential|cookie|"
    r"(access|auth|refresh|id|session)[-_]?token|^token$",
    re.IGNORECASE,
)
_SECRET_ENV = re.compile(r"(API_KEY|_TOKEN|SECRET|PASSWORD)$|^ORCH_AUTH_", re.IGNORECASE)
_MIN_SECRET_LEN = 8
_STATUS = {"ok": "OK", "error": "ERROR"}
_rng = random.SystemRandom()


def new_trace_id() -> str:
    """An MLflow v3 trace id (``tr-`` + a random 128-bit OpenTelemetry trace id in hex)."""
    return f"tr-{_rng.getrandbits(128):032x}"


_env_names: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())


def env_secrets() -> set[str]:
    """Values of environment variables that look like credentials (matched in any text we store).

    The names are looked for again whenever the set of variable names changes (not only its size:
    one variable unset and another set is a change); the values are read every time (a key set in
    a notebook after the client was built counts at once).
    """
    global _env_names
    seen, names = _env_names
    current = tuple(os.environ)
    if current != seen:
        names = tuple(name for name in current if _SECRET_ENV.search(name))
        _env_names = (current, names)
    values = (os.environ.get(name, "") for name in names)
    return {value for value in values if len(value.strip()) >= _MIN_SECRET_LEN}


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` with secret-looking keys redacted and every known secret value masked."""
    return _scrub(value, _longest_first(secrets))


def _longest_first(secrets: Iterable[str]) -> list[str]:
    """Secrets worth masking, longest first (so a key containing another is masked whole)."""
    return sorted({s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {str(k): REDACTED if _secret_key(str(k)) else _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_scrub(v, secrets) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _scrub(repr(value), secrets)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _messages(messages: Iterable[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "content": m.content, "tool_call_id": m.tool_call_id})
        elif m.tool_calls:
            out.append(
                {"role": m.role, "content": m.content, "tool_calls": [c.to_openai() for c in m.tool_calls]}
            )
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _chat_output(
    content: str | None, finish_reason: str | None = None, tool_calls: tuple[ToolCall, ...] = ()
) -> dict[str, Any]:
    """OpenAI's response shape, which MLflow's UI renders as a chat and uses for the preview."""
    message: dict[str, Any] = {"role": "assistant", "content": content or ""}
    if tool_calls:
        message["tool_calls"] = [c.to_openai() for c in tool_calls]
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}


def _tool_span(run: ToolRun) -> dict[str, Any]:
    call, result = run.call, run.result
    return _span(
        name=f"tool {call.name}",
        span_type="TOOL",
        start_s=run.started_at,
        end_s=run.started_at + run.latency_s,
        inputs=dict(call.arguments)
        if call.arguments_error is None
        else {"raw_arguments": call.raw_arguments},
        outputs=result.content,
        attributes={
            "orchlab.tool.name": call.name,
            "orchlab.tool.call_id": call.id,
            "orchlab.tool.step": run.step,
            "orchlab.tool.is_error": result.is_error,
            "orchlab.latency_s": round(run.latency_s, 6),
        },
        status="ERROR" if result.is_error else "OK",
        error=result.content if result.is_error else None,
        error_type="ToolError" if result.is_error else None,
    )


def _usage(attempt: Attempt) -> dict[str, int]:
    u = attempt.usage
    out = {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "total_tokens": u.total_tokens}
    if u.cache_read_tokens:
        out["cache_read_input_tokens"] = u.cache_read_tokens
    if u.cache_write_tokens:
        out["cache_creation_input_tokens"] = u.cache_write_tokens
    return out


def _cost(attempt: Attempt) -> dict[str, float] | None:
    """orchlab's price of the attempt in MLflow's cost attribute (so MLflow does not price it again)."""
    if attempt.cost_usd is None:
        return None
    cost = {"total_cost": float(attempt.cost_usd)}
    input_cost = getattr(attempt, "input_cost_usd", None)
    output_cost = getattr(attempt, "output_cost_usd", None)
    if input_cost is not None and output_cost is not None:
        cost["input_cost"], cost["output_cost"] = float(input_cost), float(output_cost)
    return cost


def _span(
    *,
    name: str,
    span_type: str,
    start_s: float,
    end_s: float,
    inputs: Any,
    outputs: Any,
    attributes: Mapping[str, Any],
    status: str,
    error: str | None = None,
    error_type: str | None = None,
) -> dict[str, Any]:
    start_ns = _ns(start_s)
    return {
        "name": name,
        "type": span_type,
        "start_ns": start_ns,
        "end_ns": max(_ns(end_s), start_ns),
        "inputs": inputs,
        "outputs": outputs,
        "attributes": {k: v for k, v in attributes.items() if v is not None},
        "status": status,
        "error": None if error is None else {"type": error_type or "Error", "message": error},
    }


_USER: str | None = None


def current_user() -> str:
    global _USER
    if _USER is None:
        try:
            _USER = getpass.getuser()
        except Exception:
            _USER = "unknown"
    return _USER


def trace_payload(
    record: CallRecord,
    trace_id: str,
    *,
    link: TraceLink | None,
    base_tags: Mapping[str, str],
    provider_kinds: Mapping[str, str],
    secrets: Iterable[str],
) -> dict[str, Any]:
    """The JSON-able record of one call's trace (what the journal keeps and the drain writes)."""
    ctx = record.context
    response = record.response
    error = record.error
    messages = _messages(ctx.messages)

    decision = response.decision if response is not None else None
    root_name = ctx.role or ctx.strategy or "orchlab.call"
    target = response.target if response is not None else None
    tags: dict[str, str] = {
        "mlflow.traceName": trace_name(record),
        "mlflow.user": current_user(),
        **base_tags,
        "orchlab.strategy": ctx.strategy,
    }
    if ctx.role:
        tags["orchlab.role"] = ctx.role
    if ctx.task_type:
        tags["orchlab.task_type"] = ctx.task_type
    if response is not None:
        tags["orchlab.provider"], tags["orchlab.model"], tags["orchlab.target"] = (
            response.provider,
            response.model,
            response.target,
        )
    tags["orchlab.status"] = "ok" if error is None else "error"
    prompts = _prompts_used(ctx.messages)
    if prompts:
        tags["orchlab.prompt"] = ",".join(name for name, _ in prompts)
        tags["orchlab.prompt_version"] = ",".join(version for _, version in prompts)
    if link is not None:
        tags.update(link.tags)
    tags.update({str(k): str(v) for k, v in ctx.tags.items()})

    kind = "EMBEDDING" if ctx.strategy == "embedding" else "CHAT_MODEL"
    spans = [
        _attempt_span(attempt, messages, provider_kinds, record.ended_at, kind) for attempt in ctx.attempts
    ]
    spans += [_tool_span(run) for run in ctx.tool_runs]

    root_attrs: dict[str, Any] = {
        "orchlab.role": ctx.role,
        "orchlab.strategy": ctx.strategy,
        "orchlab.task_type": ctx.task_type,
        "orchlab.attempts": len(ctx.attempts),
        "orchlab.tool_runs": len(ctx.tool_runs) or None,
        "orchlab.latency_s": round(record.latency_s, 6),
        "orchlab.tags": dict(ctx.tags) or None,
    }
    if response is not None:
        root_attrs.update(
            {
                "orchlab.response_id": response.id,
                "orchlab.target": target,
                "orchlab.cost_usd": response.cost_usd,
                "orchlab.cost_note": response.cost_note,
                "orchlab.usage": {
                    "input_tokens": response.usage.input_tokens,
                    "output_tokens": response.usage.output_tokens,
                    "total_tokens": response.usage.total_tokens,
                },
            }
        )
    if decision is not None:
        root_attrs["orchlab.decision"] = {
            "strategy": decision.strategy,
            "task_type": decision.task_type,
            "winner": decision.winner,
            "rationale": decision.rationale,
            "scores": dict(decision.scores),
            "total_cost_usd": decision.total_cost_usd,
        }
    if error is not None:
        root_attrs["orchlab.error_type"] = type(error).__name__
        root_attrs["orchlab.error"] = str(error)
    outputs = (
        _chat_output(response.content, response.finish_reason, response.tool_calls)
        if response is not None
        else None
    )
    spans.insert(
        0,
        _span(
            name=root_name,
            span_type="CHAIN",
            start_s=ctx.started_at,
            end_s=record.ended_at,
            inputs={"messages": messages},
            outputs=outputs,
            attributes=root_attrs,
            status="OK" if error is None else "ERROR",
            error=None if error is None else str(error),
            error_type=None if error is None else type(error).__name__,
        ),
    )
    payload: dict[str, Any] = {"kind": "trace", "trace_id": trace_id, "tags": tags, "spans": spans}
    if link is not None and link.run_id:
        payload["run_id"] = link.run_id
    if link is not None and link.experiment_id:
        payload["experiment_id"] = link.experiment_id
    if prompts:
        payload["prompts"] = [{"name": name, "version": version} for name, version in prompts]
    scrubbed: dict[str, Any] = _scrub(payload, _longest_first(secrets))
    return scrubbed


def trace_name(record: CallRecord) -> str:
    """The short name MLflow's traces list shows first: ``role → provider:model`` for a call on
    one model, ``role → strategy`` for a strategy (its winner is in the trace's tags),
    ``provider:model`` for a model asked without a role, so the targets of a comparison read
    apart at a glance."""
    ctx, response = record.context, record.response
    strategy = ctx.strategy if ctx.strategy not in (None, "", "single") else None
    if ctx.role and strategy:
        return f"{ctx.role} → {strategy}"
    if response is not None:
        target = response.target
    elif ctx.attempts:
        target = f"{ctx.attempts[-1].provider}:{ctx.attempts[-1].model}"
    else:
        return ctx.role or strategy or "call"
    head = ctx.role or strategy  # a model asked directly has no role: its name is the model
    return f"{head} → {target}" if head else target


def _prompts_used(messages: Iterable[Message]) -> list[tuple[str, str]]:
    """The registered prompt versions the messages were rendered from (`PromptMessage`)."""
    found: dict[tuple[str, str], None] = {}
    for m in messages:
        name = getattr(m, "prompt", "")
        if name:
            found[(name, str(getattr(m, "version", "")))] = None
    return list(found)


def _attempt_span(
    attempt: Attempt,
    messages: list[dict[str, str]],
    provider_kinds: Mapping[str, str],
    call_ended_at: float,
    span_type: str = "CHAT_MODEL",
) -> dict[str, Any]:
    started = attempt.started_at or call_ended_at - attempt.latency_s
    name = f"{attempt.provider}:{attempt.model}"
    if attempt.stage:
        name = f"{attempt.stage} {name}"
    attrs: dict[str, Any] = {
        "mlflow.llm.model": attempt.model,
        "mlflow.llm.provider": provider_kinds.get(attempt.provider, attempt.provider),
        "orchlab.provider": attempt.provider,
        "orchlab.model": attempt.model,
        "orchlab.outcome": attempt.outcome,
        "orchlab.stage": attempt.stage,
        "orchlab.latency_s": round(attempt.latency_s, 6),
        "orchlab.cost_usd": attempt.cost_usd,
        "orchlab.confidence": attempt.confidence,
        "orchlab.params": dict(attempt.params) or None,
        "orchlab.note": getattr(attempt, "note", None),
    }
    if attempt.deployment is not None:
        attrs["orchlab.deployment"] = attempt.deployment
    if attempt.cache is not None:
        attrs["orchlab.cache"] = attempt.cache  # "hit": the response cache answered, nothing was sent
    if attempt.outcome != "error" or attempt.usage.total_tokens:
        attrs["mlflow.chat.tokenUsage"] = _usage(attempt)
    cost = _cost(attempt)
    if cost is not None:
        attrs["mlflow.llm.cost"] = cost
    if attempt.error is not None:
        attrs["orchlab.error"] = attempt.error
        attrs["orchlab.error_type"] = attempt.error_type
    status = _STATUS.get(attempt.outcome, "UNSET")
    return _span(
        name=name,
        span_type=span_type,
        start_s=started,
        end_s=started + attempt.latency_s,
        inputs={"messages": messages, "params": dict(attempt.params)},
        outputs=_chat_output(attempt.output, None, attempt.tool_calls)
        if attempt.output is not None
        else None,
        attributes=attrs,
        status=status,
        error=attempt.error if attempt.outcome == "error" else None,
        error_type=attempt.error_type,
    )


def feedback_payload(
    trace_id: str, name: str, value: bool | int, *, comment: str | None, user: str, time_ms: int
) -> dict[str, Any]:
    return {
        "kind": "feedback",
        "id": uuid.uuid4().hex,
        "trace_id": trace_id,
        "name": name,
        "value": value,
        "comment": comment,
        "user": user,
        "time_ms": time_ms,
    }
