"""The JSON shapes of domains, workspaces and grants, and how records become them.

Each response model mirrors a record of :mod:`mailfleet.model.records` (and the
keys of the CLI's ``--json``), built by its ``of`` class method: the routes
call the fleet and hand its records here, nothing else. The policy is
:class:`~mailfleet.Policy` itself, so the OpenAPI document shows every field
with its range.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from ..auth.preflight import CheckStatus, DnsProblem, PreflightReport
from ..model.policy import Policy
from ..model.records import DnsRecord, Domain, Grant, GrantStatus, ProvisionOutcome, Workspace

__all__ = [
    "CheckReportOut",
    "DkimKeyOut",
    "DnsRecordOut",
    "DomainOut",
    "GrantOut",
    "GrantSummaryOut",
    "WorkspaceOut",
]

log = logging.getLogger("mailfleet.api")


class DnsRecordOut(BaseModel):
    """A DNS record to publish; ``strings`` are a TXT value's character-strings."""

    name: str = Field(description="the owner name, without the final dot")
    type: str = Field(description="`TXT` or `MX`")
    value: str = Field(description="the value; an MX's is `PREFERENCE HOST`")
    purpose: str = Field(description="`spf`, `dkim:<selector>`, `dmarc`, `mx`, `mta_sts`...")
    required: bool = Field(description="false for the records a domain is only advised to publish")
    strings: list[str] | None = Field(
        None, description="a TXT value split into the ≤255-byte strings DNS carries"
    )

    @classmethod
    def of(cls, record: DnsRecord) -> DnsRecordOut:
        """The JSON form of ``record``."""
        return cls.model_validate(record.as_json())


class DkimKeyOut(BaseModel):
    """A DKIM key of a domain (never its private part)."""

    selector: str
    algorithm: str = Field(description="`rsa` or `ed25519`")
    status: str = Field(description="`signing`, `next` (a rotation's, not signing yet), `retiring`")
    record: DnsRecordOut
    created_at: datetime | None = None


class CheckOut(BaseModel):
    """The verdict on one record of a domain."""

    name: str = Field(description="`mx`, `spf`, `dkim:<selector>`, `dmarc`, `mta_sts`...")
    record: str = Field(description="the DNS name looked at")
    status: CheckStatus
    explanation: str
    fix: str | None = Field(None, description="what to publish or change; null on a pass")
    dns_error: DnsProblem | None = Field(
        None, description="set when the lookup failed rather than the record being wrong"
    )
    found: list[str] = Field(default_factory=list, description="what is published there")


class CheckReportOut(BaseModel):
    """A domain's preflight: every check; ``state`` is `failed` when any check fails."""

    domain: str
    state: Literal["verified", "failed"]
    checked_at: datetime
    checks: list[CheckOut]

    @classmethod
    def of(cls, report: PreflightReport) -> CheckReportOut:
        """The JSON form of ``report``."""
        return cls.model_validate(report.as_json())


class DomainOut(BaseModel):
    """A sending and receiving domain of the application."""

    id: str
    name: str
    dkim_selector: str
    state: Literal["pending", "verified", "failed"] = Field(
        description="`pending` until first checked, then the last check's verdict"
    )
    authenticated: bool
    created_at: datetime
    audited_at: datetime | None
    audit: CheckReportOut | None = Field(description="the last check's report")
    dkim_keys: list[DkimKeyOut]

    @classmethod
    def of(cls, domain: Domain) -> DomainOut:
        """The JSON form of ``domain``."""
        audit = None
        if domain.audit is not None:
            try:
                audit = CheckReportOut.model_validate(domain.audit)
            except ValidationError:  # pragma: no cover - every stored audit is a report
                log.warning("domain %s: its stored audit is not a report", domain.name)
        return cls(
            id=domain.id,
            name=domain.name,
            dkim_selector=domain.dkim_selector,
            state=domain.state,
            authenticated=domain.authenticated,
            created_at=domain.created_at,
            audited_at=domain.audited_at,
            audit=audit,
            dkim_keys=[
                DkimKeyOut(
                    selector=key.selector,
                    algorithm=key.algorithm,
                    status=key.status,
                    record=DnsRecordOut.of(key.record._replace(purpose=f"dkim:{key.selector}")),
                    created_at=key.created_at,
                )
                for key in domain.dkim_keys
            ],
        )


class WorkspaceOut(BaseModel):
    """A workspace: the policy its grants inherit and the patterns that route new grants."""

    id: str
    name: str
    is_default: bool
    policy: Policy
    policy_version: int = Field(description="grows by one at each policy change")
    patterns: list[str] = Field(description="auto-group patterns: `domain` or `*.domain`")
    grant_count: int

    @classmethod
    def of(cls, workspace: Workspace, grant_count: int | None = None) -> WorkspaceOut:
        """The JSON form of ``workspace`` (``grant_count`` when the record lacks it)."""
        return cls(
            id=workspace.id,
            name=workspace.name,
            is_default=workspace.is_default,
            policy=workspace.policy,
            policy_version=workspace.policy_version,
            patterns=list(workspace.patterns),
            grant_count=workspace.grant_count if grant_count is None else grant_count,
        )


class GrantSummaryOut(BaseModel):
    """A grant without its policy (a batch gives the policies once per workspace)."""

    id: str
    address: str
    domain: str
    workspace_id: str
    workspace: str
    pinned: bool = Field(description="placed in its workspace explicitly: regroup leaves it")
    status: GrantStatus
    agent: str | None = Field(description="the agent class's name; null runs the default agent")
    metadata: dict[str, Any]
    stored_bytes: int
    created_at: datetime

    @classmethod
    def fields_of(cls, grant: Grant) -> dict[str, Any]:
        """The fields of ``grant`` this model holds."""
        return {
            "id": grant.id,
            "address": grant.address,
            "domain": grant.domain,
            "workspace_id": grant.workspace_id,
            "workspace": grant.workspace,
            "pinned": grant.workspace_pinned,
            "status": grant.status,
            "agent": grant.agent,
            "metadata": grant.metadata,
            "stored_bytes": grant.stored_bytes,
            "created_at": grant.created_at,
        }

    @classmethod
    def of(cls, grant: Grant) -> GrantSummaryOut:
        """The JSON form of ``grant``, without its policy."""
        return cls.model_construct(**cls.fields_of(grant))


class GrantOut(GrantSummaryOut):
    """A mailbox identity with its effective policy (its workspace's, now)."""

    policy: Policy

    @classmethod
    def of(cls, grant: Grant) -> GrantOut:
        """The JSON form of ``grant``."""
        return cls.model_construct(**cls.fields_of(grant), policy=grant.policy)


class ProvisionResultOut(BaseModel):
    """What a batch did for one address; ``code`` and ``reason`` say why one was refused."""

    address: str = Field(description="the address as given")
    outcome: ProvisionOutcome
    grant: GrantSummaryOut | None = None
    code: str | None = Field(
        None, description="for `invalid`: `invalid_address`, `domain_not_found`..."
    )
    reason: str | None = None
