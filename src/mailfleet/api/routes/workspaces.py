"""``/v1/workspaces``: policy containers, their auto-group patterns, bulk moves, regrouping."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from ...model.errors import WorkspaceNotFound
from ..resources import WorkspaceOut
from ..schemas import After, Body, Limit, Page, page
from ..tenants import Authorized

router = APIRouter(prefix="/v1/workspaces", tags=["workspaces"])

WorkspaceKey = Annotated[str, Path(description="the workspace's id or name", max_length=200)]

MAX_ASSIGN = 10_000
"""The most grants one bulk move names."""

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "`workspace_not_found`: no such workspace in the application"}
}
_POLICY_HELP = (
    "policy fields (see the `Policy` schema); a group (`thresholds`, `breaker`, `warmup`) may "
    "be given in part. An invalid value is a 422 `invalid_policy` naming the field"
)
_PATTERN_HELP = (
    "auto-group patterns, `domain` or `*.domain`: new grants of a matching domain land here"
)


class NewWorkspace(Body):
    """A workspace to create; unset policy fields take their defaults."""

    name: str = Field(min_length=1, max_length=200, pattern=r"\S", examples=["outreach"])
    policy: dict[str, Any] | None = Field(None, description=_POLICY_HELP)
    patterns: list[str] = Field(default_factory=list, max_length=1000, description=_PATTERN_HELP)


class WorkspaceChanges(Body):
    """Policy fields to change and/or the patterns that replace the workspace's own."""

    policy: dict[str, Any] | None = Field(None, description=_POLICY_HELP)
    patterns: list[str] | None = Field(
        None, max_length=1000, description=_PATTERN_HELP + " (replaces them all)"
    )


class Assignment(Body):
    """Grants (ids or addresses) to move into the workspace and pin there."""

    grants: list[str] = Field(min_length=1, max_length=MAX_ASSIGN)


class Moved(BaseModel):
    """How many grants changed workspace."""

    moved: int


@router.post(
    "",
    summary="Create a workspace with its policy and patterns",
    status_code=201,
    responses={
        200: {"model": WorkspaceOut, "description": "An identical workspace existed already"},
        409: {
            "description": "`workspace_exists` (with another policy or patterns), "
            "`pattern_in_use` (a pattern routes to another workspace)"
        },
    },
)
async def create_workspace(
    body: NewWorkspace, caller: Authorized, response: Response
) -> WorkspaceOut:
    """Idempotent: a workspace of that name with this policy and these patterns is
    answered 200 as it is; one that differs is a 409 `workspace_exists`."""
    fleet = caller.fleet
    try:
        existed = (await fleet.workspace(body.name.strip())).name == body.name.strip()
    except WorkspaceNotFound:
        existed = False
    workspace = await fleet.create_workspace(body.name, policy=body.policy, patterns=body.patterns)
    if existed:
        response.status_code = 200
        return WorkspaceOut.of(workspace, await fleet.count_grants(workspace=workspace.id))
    return WorkspaceOut.of(workspace, 0)


@router.get("", summary="The application's workspaces, the default first")
async def list_workspaces(
    caller: Authorized, limit: Limit = 100, after: After = None
) -> Page[WorkspaceOut]:
    """Every workspace with its policy, patterns and grant count."""
    every = await caller.fleet.workspaces()  # the default first, then by name
    if after is not None:
        default = next(w.name for w in every if w.is_default)
        cursor = (after != default, after)
        every = [w for w in every if (not w.is_default, w.name) > cursor]
    return page([WorkspaceOut.of(w) for w in every[: limit + 1]], limit, _name)


def _name(workspace: WorkspaceOut) -> str:
    return workspace.name


class RegroupFilters(Body):
    """Which grants to regroup (every grant not pinned, when absent)."""

    created_after: datetime | None = Field(
        None, description="only grants created after this time (ISO-8601; UTC if no offset)"
    )
    domain: str | None = Field(
        None, min_length=1, max_length=255, description="only grants of this registered domain"
    )


class Regrouped(BaseModel):
    """The finished regroup: grants its filters matched and how many moved."""

    moved: int = Field(description="grants that changed workspace")
    job_id: str = Field(description="the job's id, in its `workspace.regroup_*` events")
    total: int = Field(description="grants not pinned that the filters matched")
    done: int = Field(description="grants looked at (all of them, once finished)")
    created_after: datetime | None = None
    domain: str | None = None


@router.post(
    "/regroup",
    summary="Re-apply the auto-group patterns to unpinned grants",
    responses={404: {"description": "`domain_not_found`: `domain` is not registered"}},
)
async def regroup(caller: Authorized, body: RegroupFilters | None = None) -> Regrouped:
    """Grants not pinned to a workspace (created after `created_after`, of `domain`:
    both optional, as the body is) move to the one their domain's most specific pattern
    names (or the default), 1,000 per transaction so that the fleet runs on meanwhile.
    Answers once done, with how many it looked at and moved."""
    filters = body or RegroupFilters()
    job = await caller.fleet.regroup_job(created_after=filters.created_after, domain=filters.domain)
    return Regrouped(
        moved=job.moved,
        job_id=job.id,
        total=job.total,
        done=job.done,
        created_after=job.created_after,
        domain=job.domain,
    )


@router.get("/{workspace}", summary="A workspace", responses=_NOT_FOUND)
async def get_workspace(workspace: WorkspaceKey, caller: Authorized) -> WorkspaceOut:
    """By id or name."""
    found = await caller.fleet.workspace(workspace)
    return WorkspaceOut.of(found, await caller.fleet.count_grants(workspace=found.id))


@router.patch(
    "/{workspace}",
    summary="Change a workspace's policy and/or patterns",
    responses={
        **_NOT_FOUND,
        409: {"description": "`pattern_in_use`: a pattern routes to another workspace"},
    },
)
async def update_workspace(
    workspace: WorkspaceKey, body: WorkspaceChanges, caller: Authorized
) -> WorkspaceOut:
    """One write, effective for all its grants at once, whatever their number. Policy
    and patterns change together or not at all."""
    fleet = caller.fleet
    changed = await fleet.update_workspace(workspace, policy=body.policy, patterns=body.patterns)
    return WorkspaceOut.of(changed, await fleet.count_grants(workspace=changed.id))


@router.delete(
    "/{workspace}",
    summary="Delete an empty workspace",
    status_code=204,
    responses={
        **_NOT_FOUND,
        409: {
            "description": "`workspace_not_empty` (move its grants first), "
            "`default_workspace_protected`"
        },
    },
)
async def delete_workspace(workspace: WorkspaceKey, caller: Authorized) -> Response:
    """The default workspace, and one that still holds grants, cannot be deleted."""
    await caller.fleet.delete_workspace(workspace)
    return Response(status_code=204)


@router.post(
    "/{workspace}/assign",
    summary="Move grants into the workspace, in bulk",
    responses={
        404: {
            "description": "`workspace_not_found`, or `grant_not_found` naming the first "
            "unknown grant (nothing moves then)"
        }
    },
)
async def assign(workspace: WorkspaceKey, body: Assignment, caller: Authorized) -> Moved:
    """Up to 10,000 grants (ids or addresses) at once, pinned there: regrouping leaves
    them. Returns how many changed workspace."""
    return Moved(moved=await caller.fleet.move_grants(body.grants, workspace))
