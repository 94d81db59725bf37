"""The operator's acts, with an admin key: reinstate a paused grant, restrict, lift.

``POST /v1/grants/{grant}/reinstate`` lifts a pause the rates set (a pause
never lifts by itself). ``POST /v1/restrictions`` blocks a grant, workspace,
domain or the whole application from sending, whatever the rates;
``DELETE /v1/restrictions/{id}`` lifts it; ``GET /v1/restrictions`` lists
them. A restriction's id is ``<kind>:<subject>`` (``grant:<grant id>``,
``domain:example.com``...). Every act is an event naming the key that made
it (``by``: ``api-key:NAME``) and why. A key that is not an admin key gets
``403 admin_required``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from ...model.errors import NotFound
from ...model.records import Restriction
from ..problems import Problem
from ..schemas import Body, Page, page
from ..tenants import Admin, Caller
from .messages import After, Limit
from .reputation import Reputation, reputation_of

__all__ = ["RestrictionOut", "router"]

router = APIRouter(prefix="/v1", tags=["operator"])

Kind = Literal["grant", "workspace", "domain", "application"]

_ADMIN: dict[int | str, dict[str, Any]] = {
    403: {"description": "admin_required: this act needs an admin key"}
}


class ReinstateIn(Body):
    """Why the grant may send again."""

    reason: str = Field(min_length=1, max_length=2000)


class RestrictIn(Body):
    """What to block, and why."""

    kind: Kind = "grant"
    subject: str | None = Field(
        None,
        max_length=320,
        description="a grant (address or id), workspace (name or id) or domain; "
        "the application: omit it (or its id)",
    )
    reason: str = Field(min_length=1, max_length=2000)


class RestrictionOut(BaseModel):
    """A block on sending, for abuse, whatever the rates."""

    id: str = Field(description="`<kind>:<subject>`: DELETE /v1/restrictions/{id} lifts it")
    kind: Kind
    subject: str = Field(
        description="the grant's or workspace's id, the domain, the application's id"
    )
    reason: str | None
    by: str | None
    created_at: datetime | None

    @classmethod
    def of(cls, restriction: Restriction) -> RestrictionOut:
        """The JSON form of ``restriction``."""
        kind: Kind = restriction.kind  # type: ignore[assignment]  # one of the four
        return cls(
            id=restriction.id,
            kind=kind,
            subject=restriction.subject,
            reason=restriction.reason,
            by=restriction.by,
            created_at=restriction.created_at,
        )


@router.post(
    "/grants/{grant}/reinstate",
    summary="Reinstate a paused grant (admin)",
    responses={**_ADMIN, 404: {"description": "grant_not_found"}},
)
async def reinstate(grant: str, body: ReinstateIn, caller: Admin) -> Reputation:
    """Lift the pause the rates set: the grant is active again and its window restarts
    empty (``grant.reinstated`` records who and why). Answers its reputation now."""
    record = await caller.fleet.grant(grant)
    await caller.fleet.reinstate(record.id, reason=body.reason, by=caller.who)
    return reputation_of(await caller.fleet.reputation_of(record.id))


@router.post(
    "/restrictions",
    status_code=201,
    summary="Restrict a grant, workspace, domain or the application (admin)",
    responses={
        **_ADMIN,
        404: {"description": "grant_not_found, workspace_not_found, domain_not_found"},
    },
)
async def restrict(body: RestrictIn, caller: Admin) -> RestrictionOut:
    """Every send under the subject answers ``403 grant_restricted`` until it is lifted."""
    target = _application(caller, body.subject) if body.kind == "application" else body.subject
    if target is None:
        raise Problem(422, "validation_failed", "subject: required for this kind", field="subject")
    restriction = await caller.fleet.restrict(
        target, reason=body.reason, by=caller.who, kind=body.kind
    )
    return RestrictionOut.of(restriction)


@router.get("/restrictions", summary="The application's restrictions (admin)", responses=_ADMIN)
async def list_restrictions(
    caller: Admin,
    kind: Annotated[Kind | None, Query()] = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[RestrictionOut]:
    """Restricted grants, workspaces, domains and the application, by id."""
    found = [r for r in await caller.fleet.restrictions(kind=kind) if after is None or r.id > after]
    shown = page(found[: limit + 1], limit, lambda r: r.id)
    return Page[RestrictionOut](
        items=[RestrictionOut.of(r) for r in shown.items], next_cursor=shown.next_cursor
    )


@router.delete(
    "/restrictions/{restriction}",
    status_code=204,
    summary="Lift a restriction (admin)",
    responses={**_ADMIN, 404: {"description": "restriction_not_found"}},
)
async def lift(
    restriction: str,
    caller: Admin,
    reason: Annotated[str, Query(min_length=1, max_length=2000)] = "lifted over the API",
) -> Response:
    """The subject may send again (``<kind>.restriction_lifted`` records who and why)."""
    kind, _, subject = restriction.partition(":")
    if kind not in ("grant", "workspace", "domain", "application") or not subject:
        raise _unknown(restriction)
    if kind == "application" and subject != caller.application.id:
        raise _unknown(restriction)
    try:
        lifted = await caller.fleet.lift(subject, reason=reason, by=caller.who, kind=kind)
    except NotFound:
        raise _unknown(restriction) from None
    if not lifted:
        raise _unknown(restriction)
    return Response(status_code=204)


def _application(caller: Caller, subject: str | None) -> str:
    """The application's own id: the only application a key may restrict."""
    if subject not in (None, caller.application.id, caller.application.name):
        raise Problem(
            404,
            "application_not_found",
            f"no application {subject!r} of this key",
            field="subject",
        )
    return caller.application.id


def _unknown(restriction: str) -> Problem:
    return Problem(
        404, "restriction_not_found", f"no restriction {restriction!r}", field="restriction"
    )
