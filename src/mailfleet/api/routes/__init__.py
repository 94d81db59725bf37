"""The API's routers, one module per resource; :data:`ROUTERS` lists them all."""

from __future__ import annotations

from fastapi import APIRouter

from . import events, health, me, metrics

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    health.router,
    metrics.router,
    me.router,
    events.router,
]
