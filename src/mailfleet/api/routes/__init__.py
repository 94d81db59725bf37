"""The API's routers, one module per resource; :data:`ROUTERS` lists them all."""

from __future__ import annotations

from fastapi import APIRouter

from . import domains, grants, health, me, workspaces

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    health.router,
    me.router,
    domains.router,
    workspaces.router,
    grants.router,
]
