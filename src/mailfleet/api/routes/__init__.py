"""The API's routers, one module per resource; :data:`ROUTERS` lists them all."""

from __future__ import annotations

from fastapi import APIRouter

from . import health, me, policy

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    health.router,
    me.router,
    policy.router,
]
