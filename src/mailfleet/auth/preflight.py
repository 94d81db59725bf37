"""Preflight: is a sending domain's published DNS what the fleet needs?

:func:`preflight` checks one domain against an :class:`Expected` (the
fleet's MX host, the relay's addresses and include, the DKIM keys, the
envelope domain) and answers a :class:`PreflightReport`: one
:class:`Check` per record, each ``pass``, ``warn`` or ``fail`` with what was
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
    "Check",
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
    """The verdict on one record: ``status``, what was found, what is wrong, the fix.

    ``name`` is ``mx``, ``spf``, ``dkim:<selector>``, ``dmarc``, ``mta_sts``,
    ``tls_rpt``, ``bounce_mx`` or ``bounce_spf``; ``record`` the DNS name
    looked at; ``fix`` None on a pass; ``dns_error`` set when the lookup
    failed rather than the record being wrong; ``found`` what is published.
    """

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


Check = PreflightCheck
"""A preflight check (:class:`PreflightCheck`, the name :mod:`mailfleet` exports)."""


@dataclass(frozen=True, slots=True)
class PreflightReport:
    """Every check of one domain; ``state`` is ``failed`` when any check fails."""

    domain: str
    checks: tuple[Check, ...]
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def state(self) -> Literal["verified", "failed"]:
        """``verified`` when no check fails (warnings allowed), else ``failed``."""
        return "failed" if self.failing else "verified"

    @property
    def failing(self) -> tuple[Check, ...]:
        """The checks that fail."""
        return tuple(check for check in self.checks if check.status == "fail")

    @property
    def warnings(self) -> tuple[Check, ...]:
        """The checks that warn."""
        return tuple(check for check in self.checks if check.status == "warn")

    @property
    def temporary(self) -> bool:
        """Whether every failing check failed for a lookup that could not be made now."""
        failing = self.failing
        return bool(failing) and all(check.temporary for check in failing)

    def check(self, name: str) -> Check:
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
                checks=tuple(Check.from_json(check) for check in data["checks"]),
                checked_at=datetime.fromisoformat(str(data["checked_at"])),
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("report", "not a preflight report") from None


async def preflight(resolver: Resolver, expected: Expected) -> PreflightReport:
    """Check ``expected.domain``'s published DNS against ``expected``.

    The checks run concurrently, each on its own lookups; none raises for
    what the DNS answers (a failed lookup is a failing check with
    ``dns_error``). When the domain itself does not exist, every check
    fails with ``dns_error="nxdomain"``.
    """
    domain = expected.domain.lower().rstrip(".")
    envelope = expected.envelope.rstrip(".")
    work: list[tuple[str, Callable[[], Awaitable[Check]]]] = [
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

    results: dict[str, Check] = {}

    async def run(name: str, job: Callable[[], Awaitable[Check]]) -> None:
        results[name] = await job()

    async with anyio.create_task_group() as tasks:
        for name, job in work:
            tasks.start_soon(run, name, job)
    checks = tuple(results[name] for name, _ in work)
    if results["mx"].dns_error == "nxdomain":  # the domain itself does not exist
        checks = tuple(_missing_domain(check, domain) for check in checks)
    return PreflightReport(domain, checks)


# -- the checks -------------------------------------------------------------------------------


async def _mx(resolver: Resolver, domain: str, hosts: tuple[str, ...], name: str) -> Check:
    wanted = [host.lower().rstrip(".") for host in hosts]
    fix = f"{domain}. IN MX 10 {wanted[0]}." if wanted else None
    try:
        records = await resolver.mx(domain)
    except DnsError as exc:
        return _lookup_failed(name, domain, exc, fix)
    found = tuple(f"{preference} {host or '.'}" for preference, host in records)
    if not records:
        return Check(name, domain, "fail", f"{domain} has no MX record", fix)
    if records == [(0, "")]:
        return Check(
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
        return Check(
            name,
            domain,
            "fail",
            f"{domain}'s MX points at {others}, not at the fleet's MX "
            f"host {', '.join(wanted)}: replies and bounces go elsewhere",
            fix,
            found=found,
        )
    return Check(name, domain, "pass", f"MX points at {pointed[0]}", found=found)


async def _spf(resolver: Resolver, domain: str, expected: Expected, name: str) -> Check:
    value = spf_value(expected.relay_addresses, expected.spf_include)
    fix = f'{domain}. IN TXT "{value}"'
    try:
        analysis = await analyse_spf(resolver, domain)
    except DnsError as exc:
        return _lookup_failed(name, domain, exc, fix)
    found = analysis.records
    if analysis.error is not None or analysis.record is None:
        why = analysis.error or "no SPF record"
        if analysis.count > 1:
            fix = f"merge them into one: {fix}"
        elif analysis.count == 1:
            why = f"the SPF record does not parse: {why}; receivers answer permerror"
        return Check(name, domain, "fail", why, fix, found=found)
    record = analysis.record
    if analysis.dns_errors:
        return _lookup_failed(name, domain, analysis.dns_errors[0], None, found)
    if analysis.problems:
        why = "; ".join(analysis.problems) + ": receivers answer permerror"
        return Check(name, domain, "fail", why, fix, found=found)
    if analysis.lookups > LOOKUP_LIMIT:
        return Check(
            name,
            domain,
            "fail",
            f"the record needs {analysis.lookups} DNS lookups (include, a, "
            f"mx, ptr, exists, redirect, nested includes counted); receivers stop at "
            f"{LOOKUP_LIMIT} and answer permerror",
            f"flatten includes into ip4:/ip6: terms, e.g. {value}",
            found=found,
        )
    if analysis.void_lookups > VOID_LOOKUP_LIMIT:
        return Check(
            name,
            domain,
            "fail",
            f"{analysis.void_lookups} of its lookups find nothing; "
            f"receivers allow {VOID_LOOKUP_LIMIT} and answer permerror",
            "remove the terms that name nothing",
            found=found,
        )
    if record.all is None and record.redirect is None:
        return Check(
            name,
            domain,
            "fail",
            "the record has no terminating all: mail from anyone else is neutral, not refused",
            fix,
            found=found,
        )
    qualifier = analysis.all_qualifier
    if qualifier == "+":
        return Check(
            name, domain, "fail", "+all authorises every host on the internet", fix, found=found
        )
    include = expected.spf_include
    if include and include.lower().rstrip(".") not in analysis.reached:
        return Check(
            name,
            domain,
            "fail",
            f"the record does not include {include} (the relay's)",
            fix,
            found=found,
        )
    for address in expected.relay_addresses:
        verdict = await check_host(resolver, address, sender=f"postmaster@{domain}", helo=domain)
        if verdict.result == "temperror":  # a lookup the evaluation needed failed
            problem: DnsProblem = (
                "timeout" if "no answer within" in verdict.explanation else "servfail"
            )
            return Check(
                name,
                domain,
                "fail",
                f"the relay's address {address} could not be checked, a lookup failed "
                f"({verdict.explanation}): a DNS failure, not a wrong record; "
                "check the nameservers and try again",
                None,
                problem,
                found,
            )
        if not verdict.passed:
            return Check(
                name,
                domain,
                "fail",
                f"the relay's address {address} gets SPF "
                f"{verdict.result} ({verdict.explanation}): receivers will not trust it",
                fix,
                found=found,
            )
    if not expected.relay_addresses and not include:
        return Check(
            name,
            domain,
            "warn",
            "the relay's addresses are not known, so whether they pass could not be checked",
            "set MAILFLEET_RELAY_ADDRESSES (or MAILFLEET_SPF_INCLUDE)",
            found=found,
        )
    if qualifier == "?":
        return Check(
            name,
            domain,
            "warn",
            "?all says nothing about other hosts: forged mail is neutral, not refused",
            fix,
            found=found,
        )
    checked = ", ".join(expected.relay_addresses) or f"include:{include}"
    return Check(
        name,
        domain,
        "pass",
        f"one valid record, {analysis.lookups} of {LOOKUP_LIMIT} lookups, "
        f"the relay ({checked}) authorised",
        found=found,
    )


def _dkim_work(
    resolver: Resolver, domain: str, selector: str, value: str
) -> Callable[[], Awaitable[Check]]:
    return lambda: _dkim(resolver, domain, selector, value)


async def _dkim(resolver: Resolver, domain: str, selector: str, ours: str) -> Check:
    name, record = f"dkim:{selector}", f"{selector}._domainkey.{domain}"
    fix = f'{record}. IN TXT "{ours}"'

    def failed(why: str, fix: str = fix) -> Check:
        return Check(name, record, "fail", why, fix, found=found)

    try:
        texts = await resolver.txt(record, missing_empty=True)
    except DnsError as exc:
        return _lookup_failed(name, record, exc, fix)
    found = tuple(texts)
    keys = [text for text in texts if _is_dkim(text)]
    if not keys:
        return failed(f"no DKIM record at {record}: receivers cannot verify our signatures")
    if len(keys) > 1:
        return failed(
            f"{len(keys)} DKIM records at {record}: receivers may take either", f"keep one: {fix}"
        )
    published, wanted = _dkim_tags(keys[0]), _dkim_tags(ours) or {}
    if published is None:
        return failed("the DKIM record does not parse (tag=value pairs separated by ;)")
    if published.get("v", "DKIM1") != "DKIM1":
        return failed(f"v={published['v']}, not DKIM1: receivers ignore the record")
    if "p" not in published:
        return failed("the DKIM record has no p= tag (the public key)")
    key = published["p"]
    if not key:
        return failed("the key is revoked (empty p=): mail signed with it fails DKIM")
    kind, our_kind = published.get("k", "rsa").lower(), wanted.get("k", "rsa").lower()
    if kind != our_kind:
        return failed(f"k={kind}, but our key is k={our_kind}: the published key is not ours")
    published_key = _key_bytes(key)
    if published_key is None:
        return failed("p= is not base64: receivers cannot read the key")
    if published_key != _key_bytes(wanted.get("p", "")):
        return failed("the published key is not ours: mail signed with our key will fail DKIM")
    services = {part.strip().lower() for part in published.get("s", "*").split(":")}
    if not services & {"*", "email"}:
        return failed(f"s={published['s']} does not allow email: receivers ignore the key")
    flags = {part.strip().lower() for part in published.get("t", "").split(":")}
    if "y" in flags:
        return Check(
            name,
            record,
            "warn",
            "the key is in testing mode (t=y): receivers may treat failures as unsigned mail",
            f"remove t=y: {fix}",
            found=found,
        )
    return Check(name, record, "pass", f"the record holds our {our_kind} key", found=found)


async def _dmarc(resolver: Resolver, domain: str, envelope: str) -> Check:
    record_name = f"_dmarc.{domain}"
    fix = f'{record_name}. IN TXT "v=DMARC1; p=none; adkim=r; aspf=r"'
    try:
        lookup = await lookup_dmarc(resolver, domain)
    except DnsError as exc:
        return _lookup_failed("dmarc", record_name, exc, fix)
    found = lookup.records
    if lookup.record is None:
        if not found:
            where = (
                record_name
                if lookup.record_domain == domain
                else f"{record_name} nor {lookup.name}"
            )
            why = f"no DMARC record at {where}: receivers apply no policy to forged mail"
            return Check("dmarc", record_name, "fail", why, fix)
        why = f"{lookup.problem}: receivers apply no policy"
        return Check("dmarc", lookup.name, "fail", why, fix, found=found)
    record = lookup.record
    where = (
        ""
        if lookup.record_domain == domain
        else f" (no record at {record_name}: the organizational domain "
        f"{lookup.record_domain}'s applies)"
    )
    policy = lookup.policy
    if not aligned(envelope, domain, record.aspf):
        relaxed_helps = aligned(envelope, domain, "r")
        return Check(
            "dmarc",
            lookup.name,
            "warn",
            f"p={policy}{where}; SPF cannot align: mail leaves "
            f"with the envelope domain {envelope}, which aspf={record.aspf} does not match "
            f"with {domain}, so DMARC rests on DKIM alone",
            f'{lookup.name}. IN TXT "{_relaxed(record.text)}"'
            if relaxed_helps
            else f"use a bounce domain under {domain} (MAILFLEET_BOUNCE_DOMAIN)",
            found=found,
        )
    return Check(
        "dmarc",
        lookup.name,
        "pass",
        f"p={policy}{where}; DKIM (d={domain}) and SPF ({envelope}) align",
        found=found,
    )


def _relaxed(text: str) -> str:
    """A DMARC record with ``aspf=r`` instead of ``aspf=s``."""
    parts = [part.strip() for part in text.split(";") if part.strip()]
    kept = [part for part in parts if part.partition("=")[0].strip().lower() != "aspf"]
    return "; ".join([*kept, "aspf=r"])


_ADVISED = {
    # name: (label, version, the tag a record needs, the record to publish, title, more)
    "mta_sts": (
        "_mta-sts",
        "v=STSv1",
        "id",
        "v=STSv1; id=20260101",
        "MTA-STS",
        "and serve its policy at https://mta-sts.{domain}/.well-known/mta-sts.txt",
    ),
    "tls_rpt": (
        "_smtp._tls",
        "v=TLSRPTv1",
        "rua",
        "v=TLSRPTv1; rua=mailto:tls-reports@{domain}",
        "TLS-RPT",
        "",
    ),
}


async def _advised_txt(resolver: Resolver, domain: str, name: str) -> Check:
    """MTA-STS (RFC 8461) or TLS-RPT (RFC 8460): advised, so a missing or unusable record
    only warns; a lookup that fails still fails (with ``dns_error``), like any other."""
    prefix, version, needed, example, title, more = _ADVISED[name]
    record = f"{prefix}.{domain}"
    fix = f'{record}. IN TXT "{example.format(domain=domain)}"' + (
        f" {more.format(domain=domain)}" if more else ""
    )
    try:
        texts = await resolver.txt(record, missing_empty=True)
    except DnsError as exc:
        return _lookup_failed(name, record, exc, fix)
    found = tuple(texts)
    published = [text for text in texts if _tags(text).get("v") == version[2:]]
    if not published:
        return Check(
            name,
            record,
            "warn",
            f"no {title} record: receivers cannot learn that mail to the domain must be encrypted"
            if name == "mta_sts"
            else f"no {title} record: receivers cannot report TLS failures to you",
            fix,
            found=found,
        )
    if len(published) > 1:
        return Check(
            name,
            record,
            "warn",
            f"{len(published)} {title} records: receivers use none",
            fix,
            found=found,
        )
    if not _tags(published[0]).get(needed):
        return Check(
            name, record, "warn", f"the {title} record has no {needed}= tag", fix, found=found
        )
    return Check(name, record, "pass", f"{title} is published", found=found)


def _tags(text: str) -> dict[str, str]:
    """``k=v; k=v`` as a dict (keys in lower case); what does not parse is left out."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            tags.setdefault(key.strip().lower(), value.strip())
    return tags


# -- helpers ----------------------------------------------------------------------------------


def _lookup_failed(
    name: str, record: str, exc: DnsError, fix: str | None, found: tuple[str, ...] = ()
) -> Check:
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
    return Check(name, record, "fail", why, fix, problem, found)


def _missing_domain(check: Check, domain: str) -> Check:
    return Check(
        check.name,
        check.record,
        "fail",
        f"{domain} does not exist (NXDOMAIN): publish its zone first",
        check.fix,
        "nxdomain",
        check.found,
    )


def _is_dkim(text: str) -> bool:
    """Whether a TXT record at a selector is meant as a DKIM key record."""
    compact = "".join(text.split())
    return compact.startswith("v=DKIM1") or compact.startswith("p=") or ";p=" in compact


def _dkim_tags(text: str) -> dict[str, str] | None:
    """The tags of a DKIM key record (RFC 6376 3.6.1), or None when it is not tag=value pairs."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or not key or key in tags:  # a tag twice makes the record invalid
            return None
        tags[key] = "".join(value.split())
    return tags


def _key_bytes(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
