"""``GET /healthz``: the store reachable, the MX and workers alive."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..tenants import tenants_of

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    summary="Liveness of the store, the MX and the workers",
    responses={503: {"description": "Something is down; the body says what"}},
)
async def healthz(request: Request) -> JSONResponse:
    """200 when every part is ``ok``; 503 with the same body when one is not."""
    report: dict[str, Any] = await tenants_of(request).health()
    healthy = all(value == "ok" for value in report.values() if isinstance(value, str))
    report["status"] = "ok" if healthy else "degraded"
    return JSONResponse(report, status_code=200 if healthy else 503)
