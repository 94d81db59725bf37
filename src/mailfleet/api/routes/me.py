"""``GET /v1/me``: who the key is (its application, its name, whether it is admin)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from ..tenants import Authorized

router = APIRouter(prefix="/v1", tags=["keys"])


class Me(BaseModel):
    """The caller's key and application."""

    application_id: str
    application: str
    key_id: str
    key: str
    admin: bool


@router.get("/me", summary="The caller's application and key")
async def me(caller: Authorized) -> Me:
    """What the API key is: a client can check its configuration with it."""
    return Me(
        application_id=caller.application.id,
        application=caller.application.name,
        key_id=caller.key.id,
        key=caller.key.name,
        admin=caller.key.admin,
    )
