"""``/v1/suppressions``: the addresses the application (or one workspace) must not mail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field, model_validator

from ...model.deliverability import Suppression, SuppressionReason
from ...model.errors import InvalidInput
from ...runtime.directory import SuppressionRow
from ..problems import Problem
from ..schemas import Body, Page, page
from ..tenants import Authorized, Caller
from .messages import After, Limit

__all__ = ["SuppressionOut", "router"]

router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"])

Workspace = Annotated[
    str | None, Query(description="a workspace's list (name or id); unset: the application's")
]


class SuppressionOut(BaseModel):
    """An address the fleet will not mail, and why."""

    id: int
    address: str
    reason: SuppressionReason
    detail: str | None
    workspace: str | None = Field(description="the workspace it applies to; null: all of them")
    event_id: int | None = Field(description="the bounce or complaint event that caused it")
    created_at: datetime

    @classmethod
    def of(cls, entry: Suppression) -> SuppressionOut:
        """The JSON form of ``entry``."""
        return cls(
            id=entry.id,
            address=entry.address,
            reason=entry.reason,
            detail=entry.detail,
            workspace=entry.workspace,
            event_id=entry.event_id,
            created_at=entry.created_at,
        )


class SuppressionIn(Body):
    """One address to suppress."""

    address: str = Field(max_length=320)
    reason: SuppressionReason = SuppressionReason.MANUAL
    detail: str | None = Field(None, max_length=2000)
    workspace: str | None = Field(None, description="only this workspace's grants (name or id)")


class SuppressionsIn(Body):
    """One address (``address``...), or many at once (``items``)."""

    address: str | None = Field(None, max_length=320)
    reason: SuppressionReason = SuppressionReason.MANUAL
    detail: str | None = Field(None, max_length=2000)
    workspace: str | None = Field(None, description="only this workspace's grants (name or id)")
    items: Annotated[list[SuppressionIn] | None, Field(max_length=10_000)] = None

    @model_validator(mode="after")
    def _one_or_many(self) -> Self:
        if (self.address is None) == (self.items is None):
            raise ValueError("give either address or items")
        return self

    def rows(self) -> list[SuppressionRow]:
        """What ``fleet.suppress_many`` takes."""
        if self.items is None:
            assert self.address is not None
            return [SuppressionRow(self.address, self.reason, self.detail, self.workspace)]
        return [SuppressionRow(i.address, i.reason, i.detail, i.workspace) for i in self.items]


class SuppressionsAdded(BaseModel):
    """How many of the addresses given were new on the list (a listed one keeps its reason)."""

    added: int
    received: int


@router.get(
    "",
    summary="The suppression list, in the order entries were added",
    responses={404: {"description": "workspace_not_found"}},
)
async def list_suppressions(
    caller: Authorized,
    reason: Annotated[SuppressionReason | None, Query()] = None,
    workspace: Workspace = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[SuppressionOut]:
    """One page of the application's (or a workspace's) suppressed addresses."""
    position = 0
    if after is not None:
        if not after.isdigit() or len(after) > 18:
            raise InvalidInput("after", "not a cursor this list gave", value=after)
        position = int(after)
    found = await caller.fleet.suppressions(
        reason=reason, workspace=workspace, after=position, limit=limit + 1
    )
    shown = page(found, limit, lambda entry: entry.id)
    return Page[SuppressionOut](
        items=[SuppressionOut.of(e) for e in shown.items], next_cursor=shown.next_cursor
    )


@router.post(
    "",
    summary="Suppress one address or many",
    responses={404: {"description": "workspace_not_found"}},
)
async def add_suppressions(body: SuppressionsIn, caller: Authorized) -> SuppressionsAdded:
    """Add the addresses in one transaction (every row checked first: one bad row refuses
    them all, naming each)."""
    rows = body.rows()
    added = await caller.fleet.suppress_many(
        rows, field="address" if body.items is None else "items"
    )
    return SuppressionsAdded(added=added, received=len(rows))


@router.get(
    "/{address}",
    summary="Why an address is suppressed",
    responses={404: {"description": "suppression_not_found, workspace_not_found"}},
)
async def read_suppression(
    address: str, caller: Authorized, workspace: Workspace = None
) -> SuppressionOut:
    """The entry that stops mail to ``address`` (for a grant of ``workspace``)."""
    found = await caller.fleet.suppression(address, workspace=workspace)
    if found is None:
        raise _not_listed(address)
    return SuppressionOut.of(found)


@router.delete(
    "/{address}",
    status_code=204,
    summary="Take an address off the list",
    responses={404: {"description": "suppression_not_found, workspace_not_found"}},
)
async def delete_suppression(
    address: str, caller: Authorized, workspace: Workspace = None
) -> Response:
    """Mail to ``address`` is allowed again (its soft-bounce count restarts)."""
    await _remove(caller, address, workspace)
    return Response(status_code=204)


@router.delete(
    "",
    status_code=204,
    summary="Take an address off the list (`?address=`)",
    responses={404: {"description": "suppression_not_found, workspace_not_found"}},
)
async def delete_suppression_by_query(
    caller: Authorized,
    address: Annotated[str, Query(max_length=320)],
    workspace: Workspace = None,
) -> Response:
    """The same as ``DELETE /v1/suppressions/{address}``."""
    await _remove(caller, address, workspace)
    return Response(status_code=204)


async def _remove(caller: Caller, address: str, workspace: str | None) -> None:
    if not await caller.fleet.unsuppress(address, workspace=workspace):
        raise _not_listed(address)


def _not_listed(address: str) -> Problem:
    return Problem(404, "suppression_not_found", f"{address} is not on the list", field="address")
