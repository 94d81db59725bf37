"""The API's routers, one module per resource; :data:`ROUTERS` lists them all."""

from __future__ import annotations

from fastapi import APIRouter

from . import consent, health, me

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    health.router,
    me.router,
    consent.router,
]
