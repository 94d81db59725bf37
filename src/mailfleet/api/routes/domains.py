"""``/v1/domains``: register a domain, list them, the records to publish, the preflight."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from ...model.addresses import normalize_domain
from ..resources import CheckReportOut, DnsRecordOut, DomainOut
from ..schemas import After, Body, Limit, Page, page
from ..tenants import Authorized

router = APIRouter(prefix="/v1/domains", tags=["domains"])

DomainName = Annotated[str, Path(description="a registered domain", max_length=253)]

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "`domain_not_found`: no such domain in the application"}
}


class NewDomain(Body):
    """A domain to register."""

    name: str = Field(max_length=253, examples=["example.com"])
    selector: str = Field(
        "mailfleet", max_length=63, description="the DKIM selector of its first keys"
    )


class DomainRecords(BaseModel):
    """The DNS records a domain publishes: MX, SPF, one DKIM record per key, DMARC, the
    bounce domain's when it differs, and the advised MTA-STS and TLS-RPT records."""

    domain: str
    records: list[DnsRecordOut]


@router.post(
    "",
    summary="Register a domain (idempotent), with its DKIM keys",
    status_code=201,
    responses={
        200: {"model": DomainOut, "description": "The domain was registered already"},
        409: {"description": "`domain_taken`: another application registered it"},
    },
)
async def add_domain(body: NewDomain, caller: Authorized, response: Response) -> DomainOut:
    """A new domain gets an RSA-2048 and an Ed25519 key (201); registering a domain the
    application has already is answered 200 with it as it is."""
    name = normalize_domain(body.name, field="name")
    known = {domain.name for domain in await caller.fleet.domains()}
    domain = await caller.fleet.add_domain(name, selector=body.selector)
    if domain.name in known:
        response.status_code = 200
    return DomainOut.of(domain)


@router.get("", summary="The application's domains, by name")
async def list_domains(
    caller: Authorized,
    state: Literal["pending", "verified", "failed"] | None = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[DomainOut]:
    """Filter by ``state``; page with ``limit`` and ``after``."""
    found = [
        domain
        for domain in await caller.fleet.domains()
        if (state is None or domain.state == state) and (after is None or domain.name > after)
    ]
    return page([DomainOut.of(domain) for domain in found[: limit + 1]], limit, _name)


def _name(domain: DomainOut) -> str:
    return domain.name


@router.get(
    "/{domain}/records", summary="The DNS records the domain publishes", responses=_NOT_FOUND
)
async def domain_records(domain: DomainName, caller: Authorized) -> DomainRecords:
    """What to publish in the domain's zone for it to send and receive."""
    records = await caller.fleet.domain_records(domain)
    return DomainRecords(
        domain=normalize_domain(domain), records=[DnsRecordOut.of(record) for record in records]
    )


@router.post(
    "/{domain}/check",
    summary="Check the domain's published DNS now",
    responses=_NOT_FOUND,
)
async def check_domain(domain: DomainName, caller: Authorized) -> CheckReportOut:
    """Looks up MX, SPF, DKIM, DMARC, MTA-STS and TLS-RPT and stores the verdict: the
    domain becomes `verified` or `failed`. Each check says what is wrong and the fix; a
    lookup that failed (rather than a wrong record) says so in `dns_error`."""
    return CheckReportOut.of(await caller.fleet.check_domain(domain))
