"""The API's routers, one module per resource; :data:`ROUTERS` lists them all."""

from __future__ import annotations

from fastapi import APIRouter

from . import (
    consent,
    domains,
    events,
    grants,
    health,
    me,
    messages,
    metrics,
    policy,
    reputation,
    restrictions,
    suppressions,
    threads,
    webhooks,
    workspaces,
)

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    health.router,
    metrics.router,
    me.router,
    domains.router,
    workspaces.router,
    grants.router,
    events.router,
    messages.router,
    threads.router,
    suppressions.router,
    reputation.router,
    restrictions.router,
    webhooks.router,
    consent.router,
    policy.router,
]
