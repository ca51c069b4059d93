"""Key management over HTTP, for an admin key only (`orchlab.serve.auth` checks it):
``POST /admin/keys`` (the plain key is in this answer only), ``GET /admin/keys``,
``DELETE /admin/keys/{id or prefix}`` (revoke), ``GET /admin/usage`` (the ledger per user and key)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import Field, ValidationError
from starlette.responses import Response

from orchlab.serve.body import decode_json, read_body
from orchlab.serve.errors import HTTPError, bad_request
from orchlab.serve.gateway import Exchange, gateway, json_response
from orchlab.serve.openai_wire import _Wire, validation_error

if TYPE_CHECKING:
    from orchlab.store.keys import Keys

router = APIRouter()


class KeyBody(_Wire):
    user: str = Field(min_length=1, max_length=200)
    roles: list[str] | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    budget: str | float | None = None
    expires_in_days: float | None = Field(default=None, gt=0)
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    admin: bool = False


def _keys(request: Request) -> Keys:
    keys: Keys = request.app.state.guard.keys
    return keys


@router.post("/admin/keys")
async def create_key(request: Request) -> Response:
    ex = Exchange(request, "/admin/keys")
    try:
        data = decode_json(await read_body(request, gateway(request).settings))
        if not isinstance(data, dict):
            raise bad_request("the request body must be a JSON object")
        try:
            body = KeyBody.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from None
        new = await asyncio.to_thread(_keys(request).create, **body.model_dump())
    except Exception as exc:
        return ex.error(exc)
    return json_response({**new.info.as_dict(), "key": new.key}, 201, ex.headers())


@router.get("/admin/keys")
async def list_keys(request: Request, user: str | None = None) -> Response:
    ex = Exchange(request, "/admin/keys")
    try:
        found = await asyncio.to_thread(_keys(request).list, user)
    except Exception as exc:
        return ex.error(exc)
    return json_response({"object": "list", "data": [k.as_dict() for k in found]}, headers=ex.headers())


@router.delete("/admin/keys/{ref}")
async def revoke_key(ref: str, request: Request) -> Response:
    ex = Exchange(request, "/admin/keys")
    try:
        revoked = await asyncio.to_thread(_keys(request).try_revoke, ref)
        request.app.state.guard.forget_keys()
        if revoked is None:
            raise HTTPError(404, f"no key {ref[:40]!r} (GET /admin/keys lists them)", code="not_found")
    except Exception as exc:
        return ex.error(exc)
    return json_response(revoked.as_dict(), headers=ex.headers())


@router.get("/admin/usage")
async def usage(request: Request) -> Response:
    ex = Exchange(request, "/admin/usage")
    try:
        rows: list[dict[str, Any]] = await asyncio.to_thread(_keys(request).usage)
    except Exception as exc:
        return ex.error(exc)
    return json_response({"object": "list", "data": rows}, headers=ex.headers())
