"""``GET /metrics``: the Prometheus text format of `orchlab.metrics` (importing this module turns
metrics on for the worker). With ``PROMETHEUS_MULTIPROC_DIR`` set before the workers start, each
worker's answer adds up every worker's series."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from orchlab import metrics

router = APIRouter()
metrics.enable()


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
