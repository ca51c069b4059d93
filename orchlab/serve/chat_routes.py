"""The LOR-3000 endpoints for frontends: ``POST /chat`` and ``GET /config``."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
