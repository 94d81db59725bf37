"""``GET /healthz``: the store reachable, the MX and workers alive."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..tenants import NOT_RUN_HERE, tenants_of

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """What each part reports (``ok``, or what is wrong), and the verdict."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "degraded"]
    store: str = Field(description="`ok`, or why the store cannot be reached")
    mx: str | None = Field(None, description="the MX beside this API, when it runs one")
    workers: str | None = Field(None, description="whether workers are alive")


@router.get(
    "/healthz",
    summary="Liveness of the store, the MX and the workers",
    responses={
        200: {"model": Health, "description": "Every part is `ok`"},
        503: {"model": Health, "description": "Something is down; the body says what"},
    },
)
async def healthz(request: Request) -> JSONResponse:
    """200 when every part is ``ok`` (or not run by this process); 503 with the same
    body when one is not."""
    report: dict[str, Any] = await tenants_of(request).health()
    parts = [value for value in report.values() if isinstance(value, str)]
    healthy = all(value in ("ok", NOT_RUN_HERE) for value in parts)
    report["status"] = "ok" if healthy else "degraded"
    return JSONResponse(report, status_code=200 if healthy else 503)
