"""``POST /v1/embeddings`` in OpenAI's shape: ``input`` (a string or a list of strings), ``model``
resolved by `orchlab.serve.targets` like a chat model (an embedding role, an alias of one, or
``provider:model`` when allowed), ``encoding_format`` ``float`` or ``base64`` (little-endian
float32, what the openai SDK asks for by default), ``user``. ``dimensions`` cannot be honoured:
refused with a 400, or dropped under ``gateway.drop_params: true``, like any unknown key.
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field, ValidationError
from starlette.responses import Response

from orchlab.serve.auth import authorize
from orchlab.serve.body import decode_json, read_body
from orchlab.serve.errors import bad_request
from orchlab.serve.gateway import Exchange, gateway, json_response
from orchlab.serve.openai_wire import _Wire, validation_error
from orchlab.strategies.urn import is_urn

if TYPE_CHECKING:
    from orchlab.types import Embeddings

router = APIRouter()
EMBEDDINGS = "/v1/embeddings"
UNSUPPORTED = frozenset({"dimensions"})
"""OpenAI embeddings parameters this gateway cannot honour (refused, or dropped)."""


class EmbeddingsRequest(_Wire):
    """The parameters of ``POST /v1/embeddings`` the gateway honours."""

    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(default=None, max_length=256)


@router.post(EMBEDDINGS)
async def embeddings(request: Request) -> Response:
    gw = gateway(request)
    ex = Exchange(request, EMBEDDINGS)
    try:
        req = parse_request(
            decode_json(await read_body(request, gw.settings)), drop_params=gw.settings.drop_params
        )
        target = gw.targets.resolve(req.model)
        authorize(req.model, target, gw.targets)
        if is_urn(target):
            raise bad_request(
                f"the model {req.model!r} is an orchestration logic: embeddings take an embedding role",
                param="model",
            )
        texts = [req.input] if isinstance(req.input, str) else req.input
        result = await gw.client.aembed(target, texts)
    except Exception as exc:
        return ex.error(exc)
    return json_response(embeddings_body(result, req), headers=headers(ex, result))


def parse_request(body: object, *, drop_params: bool) -> EmbeddingsRequest:
    """The decoded JSON body as an `EmbeddingsRequest`; an `HTTPError` 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(body).__name__}")
    known: dict[str, Any] = {}
    for key, value in body.items():
        if key in EmbeddingsRequest.model_fields:
            known[key] = value
        elif not drop_params:
            what = "is not supported by this gateway" if key in UNSUPPORTED else "is not a known parameter"
            raise bad_request(
                f"{key!r} {what} (the gateway's config may set gateway.drop_params: true to ignore it)",
                param=key,
                code="unsupported_parameter",
            )
    try:
        req = EmbeddingsRequest.model_validate(known)
    except ValidationError as exc:
        raise validation_error(exc) from None
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not texts:
        raise bad_request("input is empty: send a string or a list of strings", param="input")
    for i, text in enumerate(texts):
        if not text:
            where = "input" if isinstance(req.input, str) else f"input[{i}]"
            raise bad_request(f"{where} is an empty string", param=where)
    return req


def embeddings_body(result: Embeddings, req: EmbeddingsRequest) -> dict[str, Any]:
    """OpenAI's ``CreateEmbeddingResponse`` (``model``: the name the caller asked for)."""
    import numpy as np

    vectors = np.asarray(result.vectors)
    data = []
    for i, row in enumerate(vectors):
        embedding: Any
        if req.encoding_format == "base64":
            embedding = base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode()
        else:
            embedding = [float(x) for x in row]
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    tokens = result.usage.input_tokens
    return {
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def headers(ex: Exchange, result: Embeddings) -> dict[str, str]:
    out = ex.headers()
    if result.trace_id:
        out["x-orchlab-trace-id"] = result.trace_id
    out["x-orchlab-cost-usd"] = "unknown" if result.cost_usd is None else f"{result.cost_usd:.8f}"
    out["x-orchlab-decision"] = f"embedding {result.target}"[:200].encode("ascii", "replace").decode()
    took = time.perf_counter() - ex.started
    out["x-orchlab-overhead-ms"] = f"{max(took - result.latency_s, 0.0) * 1000:.3f}"
    return out
