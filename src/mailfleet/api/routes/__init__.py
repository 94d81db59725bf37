"""The API's routers, one module per resource; :data:`ROUTERS` lists them all."""

from __future__ import annotations

from fastapi import APIRouter

from . import (
    consent,
    health,
    me,
    messages,
    policy,
    reputation,
    restrictions,
    suppressions,
    threads,
)

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    health.router,
    me.router,
    messages.router,
    threads.router,
    suppressions.router,
    reputation.router,
    restrictions.router,
    consent.router,
    policy.router,
]
