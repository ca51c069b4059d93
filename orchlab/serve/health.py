"""``GET /healthz``: the process answers. ``GET /readyz``: the config is loaded and every provider
a served role uses says it is reachable (``Provider.is_available``), else 503 naming the ones
that are not."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from orchlab.serve.gateway import gateway, json_response

router = APIRouter()
CHECK_TIMEOUT_S = 5.0


@router.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    gw = getattr(request.app.state, "gateway", None)
    if gw is None:
        return json_response({"status": "starting"}, 503)
    gw = gateway(request)
    names = sorted({gw.client.binding(role).provider for role in gw.targets.roles})
    results = await asyncio.gather(*(_reachable(gw.client.provider(n)) for n in names))
    providers = dict(zip(names, results, strict=True))
    ready = all(providers.values())
    body = {"status": "ready" if ready else "unavailable", "providers": providers}
    return json_response(body, 200 if ready else 503)


async def _reachable(provider: object) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return bool(await provider.is_available())  # type: ignore[attr-defined]
    except Exception:
        return False
