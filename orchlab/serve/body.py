"""Reading a request body within bounds: ``gateway.max_body_bytes`` (413, from Content-Length
and while a chunked body arrives) and ``gateway.read_timeout_s`` for the whole body (408: a
client that sends half a body and stalls is answered, not waited for)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from orchlab.serve.errors import HTTPError, bad_request

if TYPE_CHECKING:
    from starlette.requests import Request

    from orchlab.config.schema import GatewayConfig


def too_large(limit: int) -> HTTPError:
    return HTTPError(
        413,
        f"the request body is larger than this gateway's limit of {limit:,} bytes",
        code="request_too_large",
    )


async def read_body(request: Request, settings: GatewayConfig) -> bytes:
    """The whole body, or an `HTTPError` (400 bad length, 408 too slow, 413 too large)."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise bad_request(f"Content-Length {declared[:40]!r} is not a number")
        if int(declared) > limit:
            raise too_large(limit)
    parts: list[bytes] = []
    size = 0
    from starlette.requests import ClientDisconnect

    try:
        async with asyncio.timeout(settings.read_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                parts.append(chunk)
    except TimeoutError:
        raise HTTPError(
            408,
            f"the request body did not arrive within {settings.read_timeout_s:g} s ({size:,} bytes received)",
            code="request_timeout",
        ) from None
    except ClientDisconnect:
        raise bad_request("the client disconnected before sending the whole body") from None
    return b"".join(parts)


def decode_json(raw: bytes) -> Any:
    """The body as JSON; a 400 saying where it is not UTF-8 or not JSON."""
    if not raw:
        raise bad_request("the request has no body; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"the request body is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"the request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise bad_request("the request body is nested too deeply") from None
