"""The API's routers, one module per resource; :data:`ROUTERS` lists them all."""

from __future__ import annotations

from fastapi import APIRouter

from . import (
    consent,
    events,
    health,
    me,
    messages,
    metrics,
    policy,
    reputation,
    restrictions,
    suppressions,
    threads,
)

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    health.router,
    metrics.router,
    me.router,
    events.router,
    messages.router,
    threads.router,
    suppressions.router,
    reputation.router,
    restrictions.router,
    consent.router,
    policy.router,
]
