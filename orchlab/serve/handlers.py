"""FastAPI's own error answers (no route: 404, wrong method: 405, validation: 422, anything
unexpected: 500) replaced by OpenAI-shaped ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchlab.serve.errors import INVALID, SERVER, HTTPError
from orchlab.serve.gateway import Exchange, error_response

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import Response


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPError, _ours)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


async def _http(request: Request, exc: StarletteHTTPException) -> Response:
    status = exc.status_code
    if status == 404:
        message = f"no route {request.method} {request.url.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    kind = INVALID if status < 500 else SERVER
    answer = HTTPError(status, message, type=kind, code="not_found" if status == 404 else None)
    return error_response(answer, {**(exc.headers or {}), "x-request-id": Exchange(request, "").request_id})


async def _validation(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    first = errors[0] if errors else {}
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    answer = HTTPError(400, f"invalid request: {first.get('msg', 'invalid')}", param=param)
    return error_response(answer, {"x-request-id": Exchange(request, "").request_id})


async def _ours(request: Request, exc: HTTPError) -> Response:
    return error_response(exc, {"x-request-id": Exchange(request, "").request_id})


async def _unexpected(request: Request, exc: Exception) -> Response:
    return Exchange(request, request.url.path).error(exc)
