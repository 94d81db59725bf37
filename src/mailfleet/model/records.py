"""The records the public API hands out: plain, immutable values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from .policy import Policy

__all__ = [
    "ApiKey",
    "Application",
    "DkimKeyInfo",
    "DnsRecord",
    "Domain",
    "Event",
    "Grant",
    "GrantStatus",
    "ProvisionOutcome",
    "ProvisionResult",
    "RegroupJob",
    "Restriction",
    "Workspace",
    "txt_strings",
]

TXT_STRING_BYTES = 255
"""The most a DNS character-string holds (RFC 1035 3.3)."""


def txt_strings(value: str) -> tuple[str, ...]:
    """A TXT value as the character-strings DNS carries it, each at most 255 bytes.

    A longer value (an RSA-2048 DKIM key is about 410 characters) is published
    as several strings, which receivers join without a separator (RFC 6376
    3.6.2.2, RFC 7208 3.3): their concatenation is ``value``. Splits fall
    between characters, so a non-ASCII value stays valid UTF-8 in each string.
    """
    strings: list[str] = []
    start = size = 0
    for index, char in enumerate(value):
        width = len(char.encode())
        if size + width > TXT_STRING_BYTES:
            strings.append(value[start:index])
            start, size = index, 0
        size += width
    strings.append(value[start:])
    return tuple(strings)


class DnsRecord(NamedTuple):
    """A DNS record to publish: ``name`` (no trailing dot), ``value``, ``type``.

    ``purpose`` says what it is for (``spf``, ``dkim:<selector>``, ``dmarc``,
    ``mx``, ``bounce_mx``, ``bounce_spf``, ``mta_sts``, ``tls_rpt``), the name
    of the preflight check that looks at it; ``required`` is False for the
    records a domain is only advised to publish (MTA-STS, TLS-RPT). An MX
    value is ``PREFERENCE HOST`` (``10 mx.example.com``).
    """

    name: str
    value: str
    type: str = "TXT"
    purpose: str = ""
    required: bool = True

    @property
    def strings(self) -> tuple[str, ...]:
        """A TXT value split into the character-strings DNS carries (:func:`txt_strings`)."""
        return txt_strings(self.value)

    def zone_line(self) -> str:
        """The record as a zone file line (``NAME. IN TXT "..."``, ``NAME. IN MX 10 HOST.``)."""
        if self.type != "TXT":
            return f"{self.name}. IN {self.type} {self.value.rstrip('.')}."
        quoted = (s.replace("\\", "\\\\").replace('"', '\\"') for s in self.strings)
        return f"{self.name}. IN TXT " + " ".join(f'"{s}"' for s in quoted)

    def as_json(self) -> dict[str, Any]:
        """``{"name", "type", "value", "purpose", "required"}``, and ``"strings"`` for TXT."""
        data: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "value": self.value,
            "purpose": self.purpose,
            "required": self.required,
        }
        if self.type == "TXT":
            data["strings"] = list(self.strings)
        return data


class GrantStatus(StrEnum):
    """Lifecycle and deliverability state of a grant."""

    ACTIVE = "active"
    UNDER_REVIEW = "under_review"
    PAUSED = "paused"
    RESTRICTED = "restricted"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Application:
    """A tenant: its domains, workspaces, grants and API keys."""

    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DkimKeyInfo:
    """A DKIM key of a domain, without its private part.

    ``status`` is ``signing`` (signs outbound mail), ``next`` (a rotation's
    new key: published, signing once a check finds its record) or
    ``retiring`` (replaced: still published so mail in flight verifies,
    until it is retired).
    """

    selector: str
    algorithm: str
    status: str
    record: DnsRecord
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Domain:
    """A sending and receiving domain registered to an application."""

    id: str
    application_id: str
    name: str
    dkim_selector: str
    authenticated: bool
    created_at: datetime
    dkim_records: tuple[DnsRecord, ...] = ()
    """The DNS TXT records to publish, one per DKIM key (``(name, value)`` pairs)."""
    state: str = "pending"
    """``pending`` (never checked), ``verified`` or ``failed``: the last check's verdict."""
    audit: dict[str, Any] | None = None
    """The last check's report (``PreflightReport.as_json()``): each record's status."""
    audited_at: datetime | None = None
    """When the domain was last checked."""
    dkim_keys: tuple[DkimKeyInfo, ...] = ()
    """Its DKIM keys: selector, algorithm, status, record (no private part)."""


@dataclass(frozen=True, slots=True)
class Workspace:
    """A policy container; its grants inherit ``policy`` by reference."""

    id: str
    application_id: str
    name: str
    is_default: bool
    policy: Policy
    policy_version: int
    patterns: tuple[str, ...]
    grant_count: int | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """One mailbox identity.

    ``policy`` is the effective policy: the workspace's, read at the time this
    record was loaded (never a copy stored with the grant).
    """

    id: str
    application_id: str
    address: str
    workspace_id: str
    workspace: str
    status: GrantStatus
    agent: str | None
    policy: Policy
    workspace_pinned: bool
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    stored_bytes: int = 0
    """Mail stored for this grant, in bytes (counted against the storage limit)."""

    @property
    def domain(self) -> str:
        """The domain part of the address."""
        return self.address.rsplit("@", 1)[1]


class ProvisionOutcome(StrEnum):
    """What provisioning did for one address."""

    CREATED = "created"
    EXISTING = "existing"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    """The result of provisioning one address in a batch.

    ``grant`` is set for ``created`` and ``existing``; ``reason`` (and the
    ``error``) for ``invalid``.
    """

    address: str
    outcome: ProvisionOutcome
    grant: Grant | None = None
    error: Exception | None = None

    @property
    def reason(self) -> str | None:
        """Why the address was refused, for ``invalid``."""
        return None if self.error is None else str(self.error)

    @property
    def ok(self) -> bool:
        """Whether a grant exists for the address now."""
        return self.grant is not None


@dataclass(frozen=True, slots=True)
class Event:
    """A fact from the outbox: ``type`` (``grant.created``...), its grant, its payload."""

    id: int
    application_id: str
    grant_id: str | None
    type: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's public part; the secret is shown once, at creation, and stored hashed."""

    id: str
    application_id: str
    name: str
    created_at: datetime
    admin: bool = False
    """Whether the key may also act as the operator (reinstate, restrict, lift)."""


@dataclass(frozen=True, slots=True)
class Restriction:
    """An operator's block on sending, for abuse: a grant, workspace, domain or the
    application (``kind``), its stored key (``subject``: an id, a domain's name), why,
    who decided and when."""

    kind: str
    subject: str
    reason: str | None
    by: str | None
    created_at: datetime | None

    @property
    def id(self) -> str:
        """``<kind>:<subject>``: how the API names it (``DELETE /v1/restrictions/{id}``)."""
        return f"{self.kind}:{self.subject}"


@dataclass(frozen=True, slots=True)
class RegroupJob:
    """A regroup: the auto-group patterns re-applied to existing grants not pinned to
    a workspace, in bounded batches. ``total`` is how many grants its filters matched
    when it started, ``done`` how many it has looked at, ``moved`` how many changed
    workspace; ``finished_at`` is set once it is over. The events
    ``workspace.regroup_started`` / ``_progress`` / ``_finished`` carry the same
    figures under its ``id``."""

    id: str
    created_after: datetime | None
    domain: str | None
    total: int
    done: int = 0
    moved: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The job as JSON (times ISO-8601)."""
        return {
            "id": self.id,
            "created_after": _iso(self.created_after),
            "domain": self.domain,
            "total": self.total,
            "done": self.done,
            "moved": self.moved,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
