"""The LOR-3000 endpoints for frontends: ``POST /chat`` (one answer, its format applied, with its
usage, cost, trace id and decision) and ``GET /config`` (what a UI needs to offer: roles, models
with their capabilities, windows and prices, formats, logics, limits)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field, ValidationError
from starlette.responses import Response

from orchlab.errors import OrchlabError, OutputValidationError
from orchlab.output.formats import BUILTIN_FORMATS
from orchlab.serve.auth import authorize, visible_config
from orchlab.serve.body import decode_json, read_body
from orchlab.serve.errors import bad_request
from orchlab.serve.gateway import Exchange, Gateway, gateway, json_response
from orchlab.serve.openai_wire import ChatMessage, _Wire, validation_error
from orchlab.types import LLMResponse

router = APIRouter()
FORMATS = BUILTIN_FORMATS


class ChatBody(_Wire):
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    role: str | None = None
    model: str | None = None
    format: Literal["raw", "markdown", "json"] = "markdown"
    user: str | None = Field(default=None, max_length=256)
    thread_id: str | None = None
    context_depth: int | None = Field(default=None, ge=0)


@router.post("/chat")
async def chat(request: Request) -> Response:
    gw = gateway(request)
    ex = Exchange(request, "/chat")
    try:
        body = _parse(decode_json(await read_body(request, gw.settings)))
        if body.role is not None and body.role not in gw.targets.roles:
            raise gw.targets.not_found(body.role)
        target = gw.targets.resolve(body.role or body.model or "")
        authorize(body.role or body.model or "", target, gw.targets)
        messages: Any = body.prompt if body.prompt is not None else _messages(body)
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        turn = None
        if body.thread_id is not None:
            from orchlab.serve.threads_routes import begin, caller, store_for

            depth = body.context_depth
            if depth is None:
                depth = (await store_for(request)).settings.context_depth
            turn = await begin(request, body.thread_id, messages, depth, user=caller(body.user))
            messages = turn.sent
        response, problem = await _answer(gw, target, messages, body.format, ex.tags(body.user))
        if turn is not None:
            response = await turn.save(response)
    except Exception as exc:
        return ex.error(exc)
    gw.answered()
    answer: Any = response.output if body.format == "json" and problem is None else response.content
    d = response.decision
    out = {
        "id": response.id,
        "request_id": ex.request_id,
        "model": body.role or body.model,
        "role": response.role,
        "target": response.target,
        "format": body.format,
        "answer": answer,
        "format_error": problem,
        "finish_reason": response.finish_reason,
        "usage": {
            "input_tokens": response.usage.input_tokens,
            "output_tokens": response.usage.output_tokens,
            "total_tokens": response.usage.total_tokens,
        },
        "cost_usd": response.cost_usd,
        "cost_note": response.cost_note,
        "trace_id": response.trace_id,
        "decision": None
        if d is None
        else {"strategy": d.strategy, "winner": d.winner, "rationale": d.rationale},
        "thread_id": None if turn is None else turn.thread.id,
        "message_id": response.message_id,
    }
    return json_response(out, headers=ex.headers(response))


async def _answer(
    gw: Gateway, target: str, messages: Any, fmt: str, tags: dict[str, str]
) -> tuple[LLMResponse, str | None]:
    """The answer in ``fmt`` (the library's ``format=``: markdown normalised, json asked of the
    provider and parsed), and None; or, for an answer not in that format, the answer as it came
    and what is wrong with it (the call was made and paid for: the caller gets it, with a 200)."""
    try:
        return await gw.client.arun(target, messages, tags=tags, format=fmt), None
    except OutputValidationError as exc:
        if not isinstance(exc.response, LLMResponse):  # not the format's refusal
            raise
        return exc.response, str(exc)


def _parse(data: object) -> ChatBody:
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        body = ChatBody.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
    if body.context_depth is not None and body.thread_id is None:
        raise bad_request("context_depth needs thread_id (the thread to read it from)", param="context_depth")
    if (body.prompt is None) == (body.messages is None):
        raise bad_request("send either prompt or messages (one of them)", param="prompt")
    if (body.role is None) == (body.model is None):
        raise bad_request("send either role or model (one of them)", param="role")
    return body


def _messages(body: ChatBody) -> list[dict[str, str]]:
    from orchlab.serve.openai_wire import ChatRequest, to_messages

    return to_messages(ChatRequest(model="-", messages=body.messages or []))


@router.get("/config")
async def config(request: Request) -> Response:
    gw = gateway(request)
    return json_response(
        visible_config(describe(gw), gw.targets),
        headers={"x-request-id": Exchange(request, "/config").request_id},
    )


def describe(gw: Gateway) -> dict[str, Any]:
    """What a frontend needs to build its UI."""
    client, settings = gw.client, gw.settings
    roles, targets = [], []
    for name in gw.targets.roles:
        spec = client.config.roles[name]
        target = spec.own_target()
        targets.append(target)
        strategy = spec.strategy or ("fallback" if spec.has_strategy else "single")
        roles.append(
            {"name": name, "description": spec.description, "target": target, "strategy": str(strategy)}
        )
    models = []
    for target in dict.fromkeys(t for t in targets if t is not None):  # a select: role names none
        try:
            info = client.catalog.get_model_info(target)
        except OrchlabError:
            continue
        models.append(
            {
                "target": target,
                "display_name": info.display_name,
                "capabilities": sorted(info.capabilities),
                "context_window": info.context_window,
                "max_output_tokens": info.max_output_tokens,
                "input_price_per_mtok": info.input_price_per_mtok,
                "output_price_per_mtok": info.output_price_per_mtok,
                "tier": str(info.tier.value),
                "local": info.local,
            }
        )
    budgets = client.config.budgets
    return {
        "project": client.config.project,
        "env": client.config.env,
        "roles": roles,
        "aliases": dict(gw.targets.aliases),
        "models": models,
        "formats": list(FORMATS),
        "logics": [m for m in gw.targets.model_ids() if m.startswith("urn:")],
        "limits": {
            "max_body_bytes": settings.max_body_bytes,
            "read_timeout_s": settings.read_timeout_s,
            "budgets": {"per_call_usd": budgets.per_call_usd, "session_usd": budgets.session_usd},
        },
        "threads": True,
    }
