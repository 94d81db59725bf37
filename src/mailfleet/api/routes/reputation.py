"""Reputation of a grant, a workspace or a domain: ``GET /v1/.../reputation``.

Each answer lists the subject's level and every wider one up to the
application (a grant: grant, workspace, domain, application), each with its
bounce and complaint rates over the rolling window, the sample they rest on,
the state they imply and why.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ...model.reputation import ReputationLevel, ReputationState
from ..tenants import Authorized

__all__ = ["Level", "Reputation", "reputation_of", "router"]

router = APIRouter(prefix="/v1", tags=["reputation"])


class Level(BaseModel):
    """One level: its window's figures, its state and why."""

    kind: str = Field(description="grant, workspace, domain or application")
    subject: str = Field(description="its id (a domain: its name)")
    state: ReputationState
    sample: int = Field(description="sends in the window")
    bounces: int
    complaints: int
    bounce_rate: float
    complaint_rate: float
    reason: str = Field(description="why it is in this state")
    breaker: str = Field(description="a grant's circuit breaker: closed, slow or held")


class Reputation(BaseModel):
    """A subject's reputation: its own state, and every level from it to the application."""

    kind: str
    subject: str
    state: ReputationState
    levels: list[Level]


def reputation_of(levels: list[ReputationLevel]) -> Reputation:
    """The answer for ``levels`` (the subject's own first)."""
    own = levels[0]
    return Reputation(
        kind=own.kind,
        subject=own.subject,
        state=own.state,
        levels=[Level(**level.as_json()) for level in levels],
    )


@router.get(
    "/grants/{grant}/reputation",
    summary="A grant's reputation at each level",
    responses={404: {"description": "grant_not_found"}},
)
async def grant_reputation(grant: str, caller: Authorized) -> Reputation:
    """The grant, its workspace, its domain and the application."""
    return reputation_of(await caller.fleet.reputation_of(grant, kind="grant"))


@router.get(
    "/workspaces/{workspace}/reputation",
    summary="A workspace's reputation",
    responses={404: {"description": "workspace_not_found"}},
)
async def workspace_reputation(workspace: str, caller: Authorized) -> Reputation:
    """The workspace (name or id) and the application."""
    return reputation_of(await caller.fleet.reputation_of(workspace, kind="workspace"))


@router.get(
    "/domains/{domain}/reputation",
    summary="A domain's reputation",
    responses={404: {"description": "domain_not_found"}},
)
async def domain_reputation(domain: str, caller: Authorized) -> Reputation:
    """The domain and the application."""
    return reputation_of(await caller.fleet.reputation_of(domain, kind="domain"))
