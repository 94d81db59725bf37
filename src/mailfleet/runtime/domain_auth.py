"""Domain authentication: the records a domain publishes, checking them, and audits.

:meth:`DomainAuth.records` says what to publish for a registered domain,
from its DKIM keys and the settings (``mx_host``, ``relay_addresses``,
``spf_include``, ``bounce_domain``, ``dmarc_policy``).
:meth:`DomainAuth.check` runs the preflight against the published zone
(through the fleet's one resolver) and stores the report: the domain is
then ``verified`` or ``failed``, and a move between the two is an event
(``domain.audit_passed`` / ``domain.audit_failed``). A check that failed only
because the DNS could not be asked (SERVFAIL, timeout) keeps the state it
had: the fleet's own DNS trouble does not stop its mail.

:meth:`DomainAuth.run` audits every registered domain each
``domain_audit_interval`` seconds. Each round claims the due domains in the
store (one worker wins each, however many run on PostgreSQL), checks them
a few at a time, and stores their reports. Outside dev mode the outbox
refuses sends from a domain that is not ``verified``
(``domain_not_authenticated``), so drift stops mail at the audit that finds
it and a fix restores it at the next.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from ..model.errors import DnsError
from ..model.records import DnsRecord, Domain
from ..settings import Settings
from ..store import domain_checks, domains
from ..store.outage import Outage
from ..store.scope import Scope
from ..store.tables import utcnow

if TYPE_CHECKING:
    from ..auth.dns import Resolver
    from ..auth.preflight import PreflightReport
    from ..auth.records import DomainSetup

__all__ = ["DomainAuth"]

log = logging.getLogger("mailfleet.domains")

_AUDIT_BATCH = 50  # domains claimed per round
_AUDIT_CONCURRENCY = 8  # domains checked at once
_LONGEST_NAP = 60.0  # seconds between rounds, at most


class DomainAuth:
    """Records, checks and audits of the application's domains."""

    def __init__(
        self,
        scope: Scope,
        settings: Settings,
        resolver: Callable[[], Resolver],
        *,
        keys_changed: Callable[[str], None] = lambda domain: None,
    ) -> None:
        self._scope = scope
        self._settings = settings
        self._resolver = resolver  # the fleet's, made when first needed
        self._keys_changed = keys_changed

    async def setup(self, name: str) -> DomainSetup:
        """What ``name``'s DNS must hold: the settings' view and the domain's published keys."""
        return await self._setup(await self._scope.read(lambda tx: domains.get_domain(tx, name)))

    async def _setup(self, domain: Domain) -> DomainSetup:
        from ..auth.records import DomainSetup

        settings = self._settings
        return DomainSetup(
            domain=domain.name,
            mx_host=settings.effective_mx_host,
            dkim=_published_keys(domain),
            relay_addresses=tuple(await self._relay_addresses()),
            spf_include=settings.spf_include,
            envelope_domain=settings.envelope_domain(domain.name),
            dmarc_policy=settings.dmarc_policy,
            created_at=domain.created_at,
        )

    async def records(self, name: str) -> list[DnsRecord]:
        """The records to publish for the registered domain ``name``."""
        from ..auth.records import records_to_publish

        return records_to_publish(await self.setup(name))

    async def check(self, name: str) -> PreflightReport:
        """Check ``name``'s published DNS now, store the report and move its state."""
        from ..auth.preflight import preflight
        from ..auth.records import expected

        domain = await self._scope.read(lambda tx: domains.get_domain(tx, name))
        setup = await self._setup(domain)
        waiting = frozenset(k.selector for k in domain.dkim_keys if k.status == "next")
        report = _only_signing_keys_required(
            await preflight(self._resolver().fresh(), expected(setup)), waiting
        )
        state = None if report.temporary else report.state
        interval = self._settings.domain_audit_interval
        next_audit = utcnow() + timedelta(seconds=interval) if interval > 0 else None
        before, after = await self._scope.write(
            lambda tx: domain_checks.save_check(
                tx, setup.domain, report.as_json(), state=state, next_audit_at=next_audit
            )
        )
        _log_check(setup.domain, report, before, after)
        if waiting and all(report.check(f"dkim:{s}").status == "pass" for s in waiting):
            if await self._scope.write(lambda tx: domains.promote_next_keys(tx, setup.domain)):
                log.info(
                    "DKIM keys %s of %s published: they sign from now on",
                    ", ".join(sorted(waiting)),
                    setup.domain,
                )
                self._keys_changed(setup.domain)
        return report

    async def audit_due(self) -> int:
        """Check every domain whose audit is due and that this worker claims; how many."""
        interval = self._settings.domain_audit_interval
        names = await self._scope.write(
            lambda tx: domain_checks.claim_due_audits(tx, interval=interval, limit=_AUDIT_BATCH)
        )
        limiter = anyio.CapacityLimiter(_AUDIT_CONCURRENCY)

        async def audit(name: str) -> None:
            async with limiter:
                try:
                    await self.check(name)
                except Exception:
                    log.exception("audit of %s failed", name, extra={"domain": name})

        async with anyio.create_task_group() as tasks:
            for name in names:
                tasks.start_soon(audit, name)
        return len(names)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Audit due domains until cancelled (nothing when ``domain_audit_interval`` is 0)."""
        interval = self._settings.domain_audit_interval
        task_status.started()
        if interval <= 0:
            return
        nap = min(max(interval / 4, 0.2), _LONGEST_NAP)
        log.info("auditing domains every %g s", interval)
        outage = Outage("domain audit round", log)
        while True:
            try:
                await self.audit_due()
            except Exception as exc:  # tried again after the nap (longer while it fails)
                await anyio.sleep(max(outage.failed(exc), nap))
                continue
            outage.succeeded()
            await anyio.sleep(nap)

    async def _relay_addresses(self) -> list[str]:
        """``relay_addresses``, else the relay host's own addresses (looked up, when a name)."""
        settings = self._settings
        if settings.relay_addresses:
            return list(settings.relay_addresses)
        host = settings.relay_host
        if not host:
            return []
        try:
            return [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            pass
        try:
            return await self._resolver().addresses(host)
        except DnsError as exc:
            log.warning("cannot look up the relay %s for SPF: %s", host, exc)
            return []


def _published_keys(domain: Domain) -> tuple[tuple[str, str], ...]:
    """``(selector, TXT value)`` of every published DKIM key of ``domain``."""
    return tuple(
        (record.name.split("._domainkey.", 1)[0], record.value) for record in domain.dkim_records
    )


def _only_signing_keys_required(
    report: PreflightReport, not_signing: frozenset[str]
) -> PreflightReport:
    """A key that does not sign yet cannot fail the domain: its failing check is a warning."""
    if not not_signing:
        return report
    checks = tuple(
        replace(
            check,
            status="warn",
            explanation=check.explanation + " (this key does not sign yet)",
        )
        if check.status == "fail" and check.name.removeprefix("dkim:") in not_signing
        else check
        for check in report.checks
    )
    return replace(report, checks=checks)


def _log_check(name: str, report: PreflightReport, before: str, after: str) -> None:
    extra = {"domain": name, "state": after}
    failing = ", ".join(check.name for check in report.failing)
    if report.temporary and report.failing:
        log.warning(
            "DNS check of %s could not be made (%s); it stays %s", name, failing, after, extra=extra
        )
    elif after != before and after == "failed":
        log.warning("domain %s failed its DNS check: %s", name, failing, extra=extra)
    elif after != before:
        log.info("domain %s is %s", name, after, extra=extra)
    else:
        log.debug("domain %s checked: %s", name, after, extra=extra)
