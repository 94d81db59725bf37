"""``/v1/grants``: provisioning (one identity, or thousands at once), listing, teardown."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field
from pydantic_core import to_json

from ...model.errors import GrantNotFound, MailfleetError
from ...model.policy import Policy
from ...model.records import GrantStatus, ProvisionOutcome, ProvisionResult
from ..problems import from_error
from ..resources import GrantOut, GrantSummaryOut, ProvisionResultOut
from ..schemas import After, Body, Limit, Page, page
from ..tenants import Authorized

router = APIRouter(prefix="/v1/grants", tags=["grants"])

GrantKey = Annotated[str, Path(description="the grant's id or address", max_length=320)]

MAX_BATCH = 10_000
"""The most addresses one ``POST /v1/grants/batch`` provisions."""

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "`grant_not_found`: no such grant in the application"}
}
_WORKSPACE_HELP = "a workspace id or name; none: the auto-group patterns, else the default"
_AGENT_HELP = "the agent class that serves it (`module:Class` or its name); none: the default"


class NewGrant(Body):
    """One identity to provision."""

    address: str = Field(max_length=320, examples=["support@example.com"])
    workspace: str | None = Field(
        None,
        max_length=200,
        description=_WORKSPACE_HELP,
    )
    agent: str | None = Field(None, max_length=200, description=_AGENT_HELP)
    metadata: dict[str, Any] = Field(default_factory=dict, description="yours, kept as given")


class NewGrants(Body):
    """Up to 10,000 identities to provision at once, sharing workspace, agent and metadata."""

    addresses: list[str] = Field(min_length=1, max_length=MAX_BATCH)
    workspace: str | None = Field(None, max_length=200, description=_WORKSPACE_HELP)
    agent: str | None = Field(None, max_length=200, description=_AGENT_HELP)
    metadata: dict[str, Any] = Field(default_factory=dict, description="given to every grant")


class BatchOut(BaseModel):
    """One result per address given, in order, and the effective policy of each workspace
    the grants are in (by workspace id)."""

    created: int
    existing: int
    invalid: int
    results: list[ProvisionResultOut]
    policies: dict[str, Policy] = Field(description="by workspace id")


@router.post(
    "",
    summary="Provision one identity",
    status_code=201,
    responses={
        200: {"model": GrantOut, "description": "The address was provisioned already"},
        404: {
            "description": "`domain_not_found` (the address's domain is not registered), "
            "`workspace_not_found`"
        },
    },
)
async def provision(body: NewGrant, caller: Authorized, response: Response) -> GrantOut:
    """The workspace is the one given, else the most specific auto-group pattern of the
    address's domain, else the default. Idempotent on the address: an existing grant is
    answered 200 as it is (its workspace, agent and metadata unchanged)."""
    (result,) = await caller.fleet.provision_many(
        [body.address], workspace=body.workspace, agent=body.agent, metadata=body.metadata
    )
    if result.grant is None:
        assert isinstance(result.error, MailfleetError)
        raise result.error
    if result.outcome is ProvisionOutcome.EXISTING:
        response.status_code = 200
    return GrantOut.of(result.grant)


@router.post(
    "/batch",
    summary="Provision up to 10,000 identities at once",
    response_model=BatchOut,
    responses={404: {"description": "`workspace_not_found`"}},
)
async def provision_batch(body: NewGrants, caller: Authorized) -> Response:
    """Each address is `created`, `existing` or `invalid` (with a `code` and a `reason`);
    an invalid address does not stop the others."""
    results = await caller.fleet.provision_many(
        body.addresses, workspace=body.workspace, agent=body.agent, metadata=body.metadata
    )
    counts = dict.fromkeys(ProvisionOutcome, 0)
    policies: dict[str, Policy] = {}
    shown = []
    for result in results:
        counts[result.outcome] += 1
        shown.append(_result(result))
        if result.grant is not None:
            policies.setdefault(result.grant.workspace_id, result.grant.policy)
    # Ten thousand results: plain values serialised at once, rather than a model each.
    answer = {
        "created": counts[ProvisionOutcome.CREATED],
        "existing": counts[ProvisionOutcome.EXISTING],
        "invalid": counts[ProvisionOutcome.INVALID],
        "results": shown,
        "policies": policies,
    }
    return Response(to_json(answer), media_type="application/json")


def _result(result: ProvisionResult) -> dict[str, Any]:
    """A :class:`ProvisionResultOut`, as plain values."""
    if result.grant is not None:
        grant = GrantSummaryOut.fields_of(result.grant)
        return {
            "address": result.address,
            "outcome": result.outcome,
            "grant": grant,
            "code": None,
            "reason": None,
        }
    error = result.error
    code = from_error(error).code if isinstance(error, MailfleetError) else "invalid_input"
    return {
        "address": result.address,
        "outcome": result.outcome,
        "grant": None,
        "code": code,
        "reason": str(error),
    }


@router.get(
    "",
    summary="The application's grants, by address",
    responses={404: {"description": "`workspace_not_found`: the `workspace` filter names none"}},
)
async def list_grants(
    caller: Authorized,
    workspace: Annotated[str | None, Query(max_length=200, description="id or name")] = None,
    status: GrantStatus | None = None,
    agent: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[GrantOut]:
    """Filter by ``workspace`` (id or name), ``status`` and ``agent``; page with ``limit``
    and ``after``."""
    found = await caller.fleet.grants(
        workspace=workspace, status=status, agent=agent, limit=limit + 1, after=after
    )
    return page([GrantOut.of(grant) for grant in found], limit, _address)


def _address(grant: GrantOut) -> str:
    return grant.address


@router.get("/{grant}", summary="A grant with its effective policy", responses=_NOT_FOUND)
async def get_grant(grant: GrantKey, caller: Authorized) -> GrantOut:
    """By id or address."""
    return GrantOut.of(await caller.fleet.grant(grant))


@router.delete("/{grant}", summary="Tear a grant down", status_code=204, responses=_NOT_FOUND)
async def deprovision(grant: GrantKey, caller: Authorized) -> Response:
    """Its messages and queued work go with it; `grant.deleted` is recorded."""
    if not await caller.fleet.deprovision(grant):
        raise GrantNotFound(grant)
    return Response(status_code=204)
