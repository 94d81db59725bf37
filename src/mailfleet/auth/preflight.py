"""Preflight: is a sending domain's published DNS what the fleet needs?

:func:`preflight` checks one domain against an :class:`Expected` (the
fleet's MX host, the relay's addresses and include, the DKIM keys, the
envelope domain) and answers a :class:`PreflightReport`: one
:class:`PreflightCheck` per record, each ``pass``, ``warn`` or ``fail`` with what was
found, what is wrong in plain words, and the fix.

- ``mx``: an MX record points at the fleet's MX host (replies and bounces
  reach the fleet); a null MX or another host fails.
- ``spf``: exactly one valid ``v=spf1`` record, at most 10 DNS-querying terms
  and 2 void lookups (nested includes counted), a terminating ``all`` that
  is not ``+all``, the configured include reached, and each relay address
  passing ``check_host``.
- ``dkim:<selector>``: the record holds our public key (compared as bytes),
  not revoked, not in testing mode.
- ``dmarc``: one valid record (the organizational domain's when the domain
  has none), and whether SPF can align with the envelope domain; DKIM
  always aligns, since we sign with ``d=`` the domain itself.
- ``mta_sts``, ``tls_rpt``: advised; their absence only warns.
- ``bounce_mx``, ``bounce_spf``: the envelope domain's MX and SPF, when it is
  not the domain itself.

A lookup that could not be made is told apart from a wrong record: the
check fails with ``dns_error`` (``servfail`` or ``timeout``, both
``temporary``), and a domain that does not exist fails every check with
``nxdomain``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

import anyio

from mailfleet.model.errors import (
    DnsError,
    DnsNameNotFound,
    DnsServerFailure,
    DnsTimeout,
    InvalidInput,
)

from .dmarc import aligned, lookup_dmarc
from .spf import LOOKUP_LIMIT, VOID_LOOKUP_LIMIT, analyse_spf, spf_value
from .spfcheck import check_host

if TYPE_CHECKING:
    from .dns import Resolver

__all__ = [
    "CheckStatus",
    "DnsProblem",
    "Expected",
    "PreflightCheck",
    "PreflightReport",
    "preflight",
]

CheckStatus = Literal["pass", "warn", "fail"]
"""What a check answers."""

DnsProblem = Literal["nxdomain", "servfail", "timeout"]
"""Why a lookup could not answer: the name does not exist, no server would say, no answer."""

_STATUSES: tuple[CheckStatus, ...] = ("pass", "warn", "fail")
_PROBLEMS: tuple[DnsProblem, ...] = ("nxdomain", "servfail", "timeout")


@dataclass(frozen=True, slots=True)
class Expected:
    """What the fleet needs of one domain's DNS.

    ``dkim`` holds ``(selector, TXT value we publish)`` for every key to
    check; ``relay_addresses`` single IP addresses that must pass SPF;
    ``envelope_domain`` the MAIL FROM (VERP) domain.
    """

    domain: str
    mx_hosts: tuple[str, ...]
    relay_addresses: tuple[str, ...] = ()
    spf_include: str | None = None
    dkim: tuple[tuple[str, str], ...] = ()
    envelope_domain: str = ""

    @property
    def envelope(self) -> str:
        """The envelope domain (the domain itself when unset)."""
        return (self.envelope_domain or self.domain).lower()


@dataclass(frozen=True, slots=True)
class PreflightCheck:
    """The verdict on one record: ``status``, what was found, what is wrong, the fix."""

    name: str
    record: str
    status: CheckStatus
    explanation: str
    fix: str | None = None
    dns_error: DnsProblem | None = None
    found: tuple[str, ...] = ()

    @property
    def temporary(self) -> bool:
        """Whether the check failed because the DNS could not answer now."""
        return self.dns_error in ("servfail", "timeout")

    def as_json(self) -> dict[str, Any]:
        """``{"name", "record", "status", "explanation", "fix", "dns_error", "found"}``."""
        return {
            "name": self.name,
            "record": self.record,
            "status": self.status,
            "explanation": self.explanation,
            "fix": self.fix,
            "dns_error": self.dns_error,
            "found": list(self.found),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PreflightCheck:
        """The check :meth:`as_json` gave; :class:`InvalidInput` for anything else."""
        try:
            status, problem = data["status"], data.get("dns_error")
            if status not in _STATUSES or (problem is not None and problem not in _PROBLEMS):
                raise ValueError(status)
            return cls(
                name=str(data["name"]),
                record=str(data["record"]),
                status=cast(CheckStatus, status),
                explanation=str(data["explanation"]),
                fix=None if data.get("fix") is None else str(data["fix"]),
                dns_error=cast("DnsProblem | None", problem),
                found=tuple(str(item) for item in data.get("found") or ()),
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("check", f"not a preflight check: {data!r}") from None


@dataclass(frozen=True, slots=True)
class PreflightReport:
    """Every check of one domain; ``state`` is ``failed`` when any check fails."""

    domain: str
    checks: tuple[PreflightCheck, ...]
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def state(self) -> Literal["verified", "failed"]:
        """``verified`` when no check fails (warnings allowed), else ``failed``."""
        return "failed" if self.failing else "verified"

    @property
    def failing(self) -> tuple[PreflightCheck, ...]:
        """The checks that fail."""
        return tuple(check for check in self.checks if check.status == "fail")

    @property
    def warnings(self) -> tuple[PreflightCheck, ...]:
        """The checks that warn."""
        return tuple(check for check in self.checks if check.status == "warn")

    @property
    def temporary(self) -> bool:
        """Whether every failing check failed for a lookup that could not be made now."""
        failing = self.failing
        return bool(failing) and all(check.temporary for check in failing)

    def check(self, name: str) -> PreflightCheck:
        """The check called ``name``; KeyError when there is none."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def as_json(self) -> dict[str, Any]:
        """``{"domain", "state", "checked_at", "checks": [...]}`` (ISO 8601 time)."""
        return {
            "domain": self.domain,
            "state": self.state,
            "checked_at": self.checked_at.isoformat(),
            "checks": [check.as_json() for check in self.checks],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PreflightReport:
        """The report :meth:`as_json` gave."""
        try:
            return cls(
                domain=str(data["domain"]),
                checks=tuple(PreflightCheck.from_json(check) for check in data["checks"]),
                checked_at=datetime.fromisoformat(str(data["checked_at"])),
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("report", "not a preflight report") from None


async def preflight(resolver: Resolver, expected: Expected) -> PreflightReport:
    """PreflightCheck ``expected.domain``'s published DNS; the lookups run concurrently."""
    domain = expected.domain.lower().rstrip(".")
    envelope = expected.envelope.rstrip(".")
    work: list[tuple[str, Callable[[], Awaitable[PreflightCheck]]]] = [
        ("mx", lambda: _mx(resolver, domain, expected.mx_hosts, "mx")),
        ("spf", lambda: _spf(resolver, domain, expected, "spf")),
    ]
    for selector, value in expected.dkim:
        work.append((f"dkim:{selector}", _dkim_work(resolver, domain, selector, value)))
    work.append(("dmarc", lambda: _dmarc(resolver, domain, envelope)))
    if envelope != domain:
        work.append(("bounce_mx", lambda: _mx(resolver, envelope, expected.mx_hosts, "bounce_mx")))
        work.append(("bounce_spf", lambda: _spf(resolver, envelope, expected, "bounce_spf")))
    work.append(("mta_sts", lambda: _advised_txt(resolver, domain, "mta_sts")))
    work.append(("tls_rpt", lambda: _advised_txt(resolver, domain, "tls_rpt")))

    results: dict[str, PreflightCheck] = {}

    async def run(name: str, job: Callable[[], Awaitable[PreflightCheck]]) -> None:
        results[name] = await job()

    async with anyio.create_task_group() as tasks:
        for name, job in work:
            tasks.start_soon(run, name, job)
    checks = tuple(results[name] for name, _ in work)
    if results["mx"].dns_error == "nxdomain":  # the domain itself does not exist
        checks = tuple(_missing_domain(check, domain) for check in checks)
    return PreflightReport(domain, checks)


# -- the checks -------------------------------------------------------------------------------


async def _mx(resolver: Resolver, domain: str, hosts: tuple[str, ...], name: str) -> PreflightCheck:
    wanted = [host.lower().rstrip(".") for host in hosts]
    fix = f"{domain}. IN MX 10 {wanted[0]}." if wanted else None
    try:
        records = await resolver.mx(domain)
    except DnsError as exc:
        return _lookup_failed(name, domain, exc, fix)
    found = tuple(f"{preference} {host or '.'}" for preference, host in records)
    if not records:
        return PreflightCheck(name, domain, "fail", f"{domain} has no MX record", fix)
    if records == [(0, "")]:
        return PreflightCheck(
            name,
            domain,
            "fail",
            f"{domain} has a null MX: it says it receives no mail "
            "(RFC 7505), so replies and bounces cannot reach the fleet",
            fix,
            found=found,
        )
    pointed = [host for _, host in records if host in wanted]
    if not pointed:
        others = ", ".join(host for _, host in records)
        return PreflightCheck(
            name,
            domain,
            "fail",
            f"{domain}'s MX points at {others}, not at the fleet's MX "
            f"host {', '.join(wanted)}: replies and bounces go elsewhere",
            fix,
            found=found,
        )
    return PreflightCheck(name, domain, "pass", f"MX points at {pointed[0]}", found=found)


async def _spf(resolver: Resolver, domain: str, expected: Expected, name: str) -> PreflightCheck:
    value = spf_value(expected.relay_addresses, expected.spf_include)
    fix = f'{domain}. IN TXT "{value}"'
    try:
        analysis = await analyse_spf(resolver, domain)
    except DnsError as exc:
        return _lookup_failed(name, domain, exc, fix)
    found = analysis.records
    if analysis.error is not None or analysis.record is None:
        why = analysis.error or "no SPF record"
        if len(found) > 1:
            fix = f"merge them into one: {fix}"
        return PreflightCheck(name, domain, "fail", why, fix, found=found)
    record = analysis.record
    if analysis.dns_errors:
        return _lookup_failed(name, domain, analysis.dns_errors[0], None, found)
    if analysis.problems:
        return PreflightCheck(name, domain, "fail", "; ".join(analysis.problems), fix, found=found)
    if analysis.lookups > LOOKUP_LIMIT:
        return PreflightCheck(
            name,
            domain,
            "fail",
            f"the record needs {analysis.lookups} DNS lookups (include, a, "
            f"mx, ptr, exists, redirect, nested includes counted); receivers stop at "
            f"{LOOKUP_LIMIT} and answer permerror",
            "flatten includes into ip4:/ip6: terms",
            found=found,
        )
    if analysis.void_lookups > VOID_LOOKUP_LIMIT:
        return PreflightCheck(
            name,
            domain,
            "fail",
            f"{analysis.void_lookups} of its lookups find nothing; "
            f"receivers allow {VOID_LOOKUP_LIMIT} and answer permerror",
            "remove the terms that name nothing",
            found=found,
        )
    every = record.all
    if every is None and record.redirect is None:
        return PreflightCheck(
            name,
            domain,
            "fail",
            "the record has no terminating all: mail from anyone else is neutral, not refused",
            fix,
            found=found,
        )
    if every is not None and every.qualifier == "+":
        return PreflightCheck(
            name, domain, "fail", "+all authorises every host on the internet", fix, found=found
        )
    include = expected.spf_include
    if include and include.lower() not in analysis.reached:
        return PreflightCheck(
            name,
            domain,
            "fail",
            f"the record does not include {include} (the relay's)",
            fix,
            found=found,
        )
    for address in expected.relay_addresses:
        verdict = await check_host(resolver, address, sender=f"postmaster@{domain}", helo=domain)
        if not verdict.passed:
            return PreflightCheck(
                name,
                domain,
                "fail",
                f"the relay's address {address} gets SPF "
                f"{verdict.result} ({verdict.explanation}): receivers will not trust it",
                fix,
                found=found,
            )
    if not expected.relay_addresses and not include:
        return PreflightCheck(
            name,
            domain,
            "warn",
            "the relay's addresses are not known, so whether they pass could not be checked",
            "set MAILFLEET_RELAY_ADDRESSES (or MAILFLEET_SPF_INCLUDE)",
            found=found,
        )
    if every is not None and every.qualifier == "?":
        return PreflightCheck(
            name,
            domain,
            "warn",
            "?all says nothing about other hosts: forged mail is neutral",
            fix,
            found=found,
        )
    checked = ", ".join(expected.relay_addresses) or f"include:{include}"
    return PreflightCheck(
        name,
        domain,
        "pass",
        f"one valid record, {analysis.lookups} of {LOOKUP_LIMIT} lookups, "
        f"the relay ({checked}) authorised",
        found=found,
    )


def _dkim_work(
    resolver: Resolver, domain: str, selector: str, value: str
) -> Callable[[], Awaitable[PreflightCheck]]:
    return lambda: _dkim(resolver, domain, selector, value)


async def _dkim(resolver: Resolver, domain: str, selector: str, ours: str) -> PreflightCheck:
    name, record = f"dkim:{selector}", f"{selector}._domainkey.{domain}"
    fix = f'{record}. IN TXT "{ours}"'
    try:
        texts = await resolver.txt(record)
    except DnsNameNotFound:
        texts = []
    except DnsError as exc:
        return _lookup_failed(name, record, exc, fix)
    keys = [text for text in texts if "p=" in text.replace(" ", "")]
    found = tuple(texts)
    if not keys:
        return PreflightCheck(name, record, "fail", f"no DKIM record at {record}", fix, found=found)
    if len(keys) > 1:
        return PreflightCheck(
            name,
            record,
            "fail",
            f"{len(keys)} DKIM records at {record}: receivers may take either",
            f"keep one: {fix}",
            found=found,
        )
    published, wanted = _dkim_tags(keys[0]), _dkim_tags(ours)
    if published is None:
        return PreflightCheck(
            name, record, "fail", "the DKIM record does not parse", fix, found=found
        )
    if published.get("v", "DKIM1") != "DKIM1":
        return PreflightCheck(name, record, "fail", "v= is not DKIM1", fix, found=found)
    key = published.get("p", "")
    if not key:
        return PreflightCheck(
            name, record, "fail", "the key is revoked (empty p=)", fix, found=found
        )
    wanted_tags = wanted or {}
    if published.get("k", "rsa").lower() != wanted_tags.get("k", "rsa").lower():
        return PreflightCheck(
            name,
            record,
            "fail",
            f"k={published.get('k', 'rsa')}, but our key is k={wanted_tags.get('k', 'rsa')}",
            fix,
            found=found,
        )
    if _key_bytes(key) != _key_bytes(wanted_tags.get("p", "")):
        return PreflightCheck(
            name,
            record,
            "fail",
            "the published key is not ours: mail signed with our key will fail DKIM",
            fix,
            found=found,
        )
    services = {part.strip() for part in published.get("s", "*").split(":")}
    if not services & {"*", "email"}:
        return PreflightCheck(name, record, "fail", "s= does not allow email", fix, found=found)
    flags = {part.strip() for part in published.get("t", "").split(":")}
    if "y" in flags:
        return PreflightCheck(
            name,
            record,
            "warn",
            "the key is in testing mode (t=y): receivers may ignore failures",
            "remove t=y",
            found=found,
        )
    return PreflightCheck(name, record, "pass", "the record holds our key", found=found)


async def _dmarc(resolver: Resolver, domain: str, envelope: str) -> PreflightCheck:
    record_name = f"_dmarc.{domain}"
    fix = f'{record_name}. IN TXT "v=DMARC1; p=none; adkim=r; aspf=r"'
    try:
        lookup = await lookup_dmarc(resolver, domain)
    except DnsError as exc:
        return _lookup_failed("dmarc", record_name, exc, fix)
    found = lookup.records
    if lookup.record is None:
        return PreflightCheck(
            "dmarc", lookup.name, "fail", lookup.problem or "no record", fix, found=found
        )
    record = lookup.record
    where = (
        ""
        if lookup.record_domain == domain
        else (f" (the organizational domain {lookup.record_domain}'s record applies)")
    )
    policy = lookup.policy
    if not aligned(envelope, domain, record.aspf):
        return PreflightCheck(
            "dmarc",
            lookup.name,
            "warn",
            f"p={policy}{where}; SPF cannot align: mail leaves "
            f"with the envelope domain {envelope}, which aspf={record.aspf} does not match "
            f"with {domain}, so DMARC rests on DKIM alone",
            "use aspf=r and a bounce domain under the domain",
            found=found,
        )
    return PreflightCheck(
        "dmarc",
        lookup.name,
        "pass",
        f"p={policy}{where}; DKIM (d={domain}) and SPF ({envelope}) align",
        found=found,
    )


_ADVISED = {
    "mta_sts": (
        "_mta-sts",
        "v=STSv1",
        "v=STSv1; id=20260101",
        "MTA-STS",
        "and serve its policy at https://mta-sts.{domain}/.well-known/mta-sts.txt",
    ),
    "tls_rpt": (
        "_smtp._tls",
        "v=TLSRPTv1",
        "v=TLSRPTv1; rua=mailto:tls-reports@{domain}",
        "TLS-RPT",
        "",
    ),
}


async def _advised_txt(resolver: Resolver, domain: str, name: str) -> PreflightCheck:
    prefix, version, example, title, more = _ADVISED[name]
    record = f"{prefix}.{domain}"
    fix = f'{record}. IN TXT "{example.format(domain=domain)}"' + (
        f" {more.format(domain=domain)}" if more else ""
    )
    try:
        texts = await resolver.txt(record)
    except DnsNameNotFound:
        texts = []
    except DnsError as exc:
        failed = _lookup_failed(name, record, exc, fix)
        return PreflightCheck(name, record, "warn", failed.explanation, fix, failed.dns_error)
    found = tuple(texts)
    if not any(text.strip().startswith(version) for text in texts):
        return PreflightCheck(
            name,
            record,
            "warn",
            f"no {title} record: receivers cannot learn that mail to the domain must be encrypted"
            if name == "mta_sts"
            else f"no {title} record: receivers cannot report TLS failures to you",
            fix,
            found=found,
        )
    return PreflightCheck(name, record, "pass", f"{title} is published", found=found)


# -- helpers ----------------------------------------------------------------------------------


def _lookup_failed(
    name: str, record: str, exc: DnsError, fix: str | None, found: tuple[str, ...] = ()
) -> PreflightCheck:
    """A check that could not be made: the lookup failed, the record is not known wrong."""
    problem: DnsProblem
    if isinstance(exc, DnsNameNotFound):
        problem, why = "nxdomain", f"{exc.name} does not exist (NXDOMAIN)"
    elif isinstance(exc, DnsTimeout):
        problem, why = "timeout", f"the lookup got no answer in time ({exc})"
    else:
        problem = "servfail"
        why = (
            f"no nameserver would answer ({exc})" if isinstance(exc, DnsServerFailure) else str(exc)
        )
    if problem != "nxdomain":
        why += ": a DNS failure, not a wrong record; check the nameservers and try again"
    return PreflightCheck(name, record, "fail", why, fix, problem, found)


def _missing_domain(check: PreflightCheck, domain: str) -> PreflightCheck:
    return PreflightCheck(
        check.name,
        check.record,
        "fail",
        f"{domain} does not exist (NXDOMAIN): publish its zone first",
        check.fix,
        "nxdomain",
        check.found,
    )


def _dkim_tags(text: str) -> dict[str, str] | None:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            return None
        tags[key.strip().lower()] = "".join(value.split())
    return tags


def _key_bytes(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
