"""``GET /metrics``: Prometheus's text format (or OpenMetrics, by ``Accept``).

Unauthenticated, as Prometheus scrapes: it carries counts per application
(labelled by name), never an address, a subject or a key. Keep the API's
port off the public internet, or let the proxy in front of it refuse
``/metrics`` from outside.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..metrics import Metrics

router = APIRouter(tags=["health"])

_TEXT = "text/plain"
_OPENMETRICS = "application/openmetrics-text"


@router.get(
    "/metrics",
    summary="Metrics of every application of the store, for Prometheus",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text exposition format (OpenMetrics when asked for)",
            "content": {
                _TEXT: {"schema": {"type": "string"}},
                _OPENMETRICS: {"schema": {"type": "string"}},
            },
        }
    },
)
async def metrics(request: Request) -> Response:
    """Grants by status, messages in and out, delivery outcomes, bounces and complaints by
    class, queue depths, dispatch latency and handler durations, webhook delivery lag."""
    collected: Metrics = request.app.state.metrics
    body, content_type = await collected.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
