"""A finished call (`CallRecord`) as an MLflow trace: plain, JSON-able span dicts, secrets scrubbed.

The payload is built on the writer thread and is what the spool keeps on disk; it only becomes
MLflow objects when it is written. Its spans use MLflow's own serialized span format (the one
``mlflow.entities.Span.from_dict`` reads), so the trace id given to the caller, ``tr-<32 hex>``,
is the id MLflow stores.

One trace per orchestrated call:

- a root span (type CHAIN) named after the role (or the strategy): role, strategy, task type,
  the decision (winner, rationale, scores), total cost, latency, error; trace tags for filtering;
- a child span (type CHAT_MODEL) per provider attempt, with its real start and end: provider,
  model, params, messages, output, ``mlflow.chat.tokenUsage``, ``mlflow.llm.model`` /
  ``mlflow.llm.provider``, orchlab's cost as ``mlflow.llm.cost``, outcome and error.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

from orchlab.calls import CallRecord
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
_STATUS = {"ok": "STATUS_CODE_OK", "error": "STATUS_CODE_ERROR"}
_rng = random.SystemRandom()


def new_trace_id() -> str:
    """An MLflow v3 trace id (``tr-`` + a random 128-bit OpenTelemetry trace id in hex)."""
    return f"tr-{_rng.getrandbits(128):032x}"


def env_secrets() -> set[str]:
    """Values of environment variables that look like credentials (matched in any text we store)."""
    return {
        value
        for name, value in os.environ.items()
        if _SECRET_ENV.search(name) and len(value.strip()) >= _MIN_SECRET_LEN
    }


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` with secret-looking keys redacted and every known secret value masked."""
    return _scrub(value, _longest_first(secrets))


def _longest_first(secrets: Iterable[str]) -> list[str]:
    """Secrets worth masking, longest first (so a key containing another is masked whole)."""
    return sorted({s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if _SECRET_KEY.search(str(k)) else _scrub(v, secrets) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set):
        return [_scrub(v, secrets) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _scrub(repr(value), secrets)


def _b64(value: int, size: int) -> str:
    return base64.b64encode(value.to_bytes(size, "big")).decode()


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _messages(messages: Iterable[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _chat_output(content: str | None, finish_reason: str | None = None) -> dict[str, Any]:
    """OpenAI's response shape, which MLflow's UI renders as a chat and uses for the preview."""
    return {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content or ""},
                "finish_reason": finish_reason,
            }
        ]
    }


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


class _SpanBuilder:
    def __init__(self, trace_id: str, otel_trace_id: int, secrets: list[str]) -> None:
        self.trace_id = trace_id
        self.otel_trace_id = otel_trace_id
        self.secrets = secrets

    def span(
        self,
        *,
        span_id: int,
        parent_id: int | None,
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
        attrs = {
            "mlflow.traceRequestId": self.trace_id,
            "mlflow.spanType": span_type,
            "mlflow.spanInputs": inputs,
            "mlflow.spanOutputs": outputs,
        }
        attrs.update({k: v for k, v in attributes.items() if v is not None})
        attrs = _scrub(attrs, self.secrets)
        events = []
        if error is not None:
            events.append(
                {
                    "name": "exception",
                    "time_unix_nano": _ns(end_s),
                    "attributes": _scrub(
                        {"exception.type": error_type or "Error", "exception.message": error}, self.secrets
                    ),
                }
            )
        return {
            "trace_id": _b64(self.otel_trace_id, 16),
            "span_id": _b64(span_id, 8),
            "parent_span_id": _b64(parent_id, 8) if parent_id is not None else None,
            "name": name,
            "start_time_unix_nano": _ns(start_s),
            "end_time_unix_nano": max(_ns(end_s), _ns(start_s)),
            "events": events,
            "status": {"code": status, "message": _scrub(error or "", self.secrets)},
            # MLflow stores every attribute value JSON-encoded.
            "attributes": {k: json.dumps(v, default=str) for k, v in attrs.items()},
            "links": [],
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
    """The JSON-able payload for one call's trace (what the writer writes and the spool keeps)."""
    ctx = record.context
    response = record.response
    error = record.error
    otel_trace_id = int(trace_id.removeprefix("tr-"), 16)
    build = _SpanBuilder(trace_id, otel_trace_id, _longest_first(secrets))
    messages = _messages(ctx.messages)

    decision = response.decision if response is not None else None
    root_name = ctx.role or ctx.strategy or "orchlab.call"
    target = response.target if response is not None else None
    tags: dict[str, str] = {
        "mlflow.traceName": root_name,
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

    root_id = _rng.getrandbits(64) or 1
    spans = []
    for attempt in ctx.attempts:
        spans.append(_attempt_span(build, attempt, root_id, messages, provider_kinds, record.ended_at))

    root_attrs: dict[str, Any] = {
        **{f"mlflow.traceTag.{k}": v for k, v in tags.items()},
        "orchlab.role": ctx.role,
        "orchlab.strategy": ctx.strategy,
        "orchlab.task_type": ctx.task_type,
        "orchlab.attempts": len(ctx.attempts),
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
    outputs = _chat_output(response.content, response.finish_reason) if response is not None else None
    spans.insert(
        0,
        build.span(
            span_id=root_id,
            parent_id=None,
            name=root_name,
            span_type="CHAIN",
            start_s=ctx.started_at,
            end_s=record.ended_at,
            inputs={"messages": messages},
            outputs=outputs,
            attributes=root_attrs,
            status=_STATUS["ok" if error is None else "error"],
            error=None if error is None else str(error),
            error_type=None if error is None else type(error).__name__,
        ),
    )
    payload: dict[str, Any] = {"kind": "trace", "trace_id": trace_id, "spans": spans}
    if link is not None and link.run_id:
        payload["run_id"] = link.run_id
    if link is not None and link.experiment_id:
        payload["experiment_id"] = link.experiment_id
    if prompts:
        payload["prompts"] = [{"name": name, "version": version} for name, version in prompts]
    return payload


def _prompts_used(messages: Iterable[Message]) -> list[tuple[str, str]]:
    """The registered prompt versions the messages were rendered from (`PromptMessage`)."""
    found: dict[tuple[str, str], None] = {}
    for m in messages:
        name = getattr(m, "prompt", "")
        if name:
            found[(name, str(getattr(m, "version", "")))] = None
    return list(found)


def _attempt_span(
    build: _SpanBuilder,
    attempt: Attempt,
    parent_id: int,
    messages: list[dict[str, str]],
    provider_kinds: Mapping[str, str],
    call_ended_at: float,
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
    if attempt.outcome != "error" or attempt.usage.total_tokens:
        attrs["mlflow.chat.tokenUsage"] = _usage(attempt)
    cost = _cost(attempt)
    if cost is not None:
        attrs["mlflow.llm.cost"] = cost
    if attempt.error is not None:
        attrs["orchlab.error"] = attempt.error
        attrs["orchlab.error_type"] = attempt.error_type
    status = _STATUS.get(attempt.outcome, "STATUS_CODE_UNSET")
    return build.span(
        span_id=_rng.getrandbits(64) or 2,
        parent_id=parent_id,
        name=name,
        span_type="CHAT_MODEL",
        start_s=started,
        end_s=started + attempt.latency_s,
        inputs={"messages": messages, "params": dict(attempt.params)},
        outputs=_chat_output(attempt.output) if attempt.output is not None else None,
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
        "trace_id": trace_id,
        "name": name,
        "value": value,
        "comment": comment,
        "user": user,
        "time_ms": time_ms,
    }
