"""A simulated internet: one SMTP server that plays every external MX, for dev mode and tests.

:class:`SimulatedInternet` listens on loopback and accepts mail for any
recipient domain. Each RCPT is answered by the recipient domain's
:class:`DomainProfile`, deterministically from a seed, so a run can be
repeated; a recipient whose local part names an outcome forces it
(``unknown@``, ``full@``, ``late-bounce+3@``...). Accepted mail whose fate
is a late bounce or a complaint is answered later, as real receivers do: an
RFC 3464 DSN (5.1.1) or an RFC 5965 ARF report (abuse), sent from ``<>`` to
the original's envelope sender (the fleet's VERP address) at the fleet's MX.

Outcomes and the replies given:

=============  ===================================================  =================
outcome        reply                                                decided per
=============  ===================================================  =================
throttle       ``421 4.7.0`` at RCPT (try again later)              attempt
unknown_user   ``550 5.1.1`` at RCPT                                address
mailbox_full   ``552 5.2.2`` at RCPT                                address
greylist       ``451 4.7.1`` at the first RCPT of a (sender,        address
               recipient) pair, accepted after
late_bounce    ``250``, then a DSN 5.1.1 after ``report_delay``      address
complaint      ``250``, then an ARF abuse report after the delay     address
delivered      ``250``                                              (the remainder)
=============  ===================================================  =================

An address's fate is the same on every attempt (an unknown user stays
unknown); throttling is drawn again for each attempt, before the fate. Only
this module knows the simulator: it imports the model and nothing else of
mailfleet, and knows no grant (mail to the fleet's own domains never comes
here in practice, and would be treated like any other domain's).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any
from weakref import WeakKeyDictionary

import aiosmtplib
import anyio
from aiosmtpd.smtp import SMTP, Envelope, Session
from anyio.abc import TaskGroup, TaskStatus

from ..model.errors import InvalidInput

__all__ = [
    "DEFAULT_PROFILES",
    "DomainProfile",
    "Outcome",
    "PendingReport",
    "SimulatedInternet",
    "profiles_with",
]

log = logging.getLogger("mailfleet.simulator")

HOSTNAME = "mx.simulated.invalid"
"""The name the simulator greets with and reports from."""
USER_AGENT = "mailfleet-simulator/1"


class Outcome(StrEnum):
    """What the simulated receiver does with one recipient."""

    DELIVERED = "delivered"
    UNKNOWN_USER = "unknown_user"
    MAILBOX_FULL = "mailbox_full"
    THROTTLE = "throttle"
    GREYLIST = "greylist"
    LATE_BOUNCE = "late_bounce"
    COMPLAINT = "complaint"


FORCED: Mapping[str, Outcome] = {
    "bounce": Outcome.UNKNOWN_USER,
    "unknown": Outcome.UNKNOWN_USER,
    "full": Outcome.MAILBOX_FULL,
    "throttle": Outcome.THROTTLE,
    "greylist": Outcome.GREYLIST,
    "late-bounce": Outcome.LATE_BOUNCE,
    "complain": Outcome.COMPLAINT,
    "complaint": Outcome.COMPLAINT,
}
"""Local parts (before any ``+tag``) that force an outcome whatever the profile."""

_FATES = (
    Outcome.UNKNOWN_USER,
    Outcome.MAILBOX_FULL,
    Outcome.GREYLIST,
    Outcome.LATE_BOUNCE,
    Outcome.COMPLAINT,
)
"""The per-address outcomes, in the order their rates are stacked on [0, 1)."""


@dataclass(frozen=True, slots=True)
class DomainProfile:
    """How one recipient domain answers: the fraction (0..1) of each outcome.

    ``throttle`` is the fraction of attempts answered 421; the other rates are
    fractions of addresses and may add up to at most 1 (the remainder is
    delivered). A wrong value raises :class:`~mailfleet.InvalidInput`.
    """

    unknown_user: float = 0.0
    mailbox_full: float = 0.0
    throttle: float = 0.0
    greylist: float = 0.0
    late_bounce: float = 0.0
    complaint: float = 0.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(item.name, "must be a number from 0 to 1", value=value)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise InvalidInput(item.name, "must be a fraction from 0 to 1", value=value)
        total = sum(getattr(self, fate.value) for fate in _FATES)
        if total > 1.0 + 1e-9:
            raise InvalidInput(
                "rates",
                f"the per-address rates add up to {total:g}, more than 1 "
                "(unknown_user + mailbox_full + greylist + late_bounce + complaint)",
                value=total,
            )

    @classmethod
    def of(cls, values: Mapping[str, Any], *, base: DomainProfile | None = None) -> DomainProfile:
        """A profile from a mapping of its fields, over ``base`` (default: all zero)."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            names = ", ".join(sorted(known))
            raise InvalidInput(unknown[0], f"no such profile field (fields: {names})")
        return replace(base or cls(), **values)

    def fate(self, draw: float) -> Outcome:
        """The per-address outcome of a draw in [0, 1)."""
        edge = 0.0
        for outcome in _FATES:
            edge += getattr(self, outcome.value)
            if draw < edge:
                return outcome
        return Outcome.DELIVERED

    def describe(self) -> str:
        """The non-zero rates, e.g. ``unknown_user 2%, complaint 0.2%`` (or ``all 250``)."""
        rates = [
            f"{item.name} {getattr(self, item.name) * 100:g}%"
            for item in fields(self)
            if getattr(self, item.name)
        ]
        return ", ".join(rates) or "all 250"


DEFAULT_PROFILES: Mapping[str, DomainProfile] = {
    # a mailbox provider, gmail-like: a few unknown users, rare complaints, greylisting
    "inbox.example.com": DomainProfile(unknown_user=0.02, complaint=0.002, greylist=0.05),
    # a strict corporate gateway: accepts everything, bounces later; full mailboxes
    "corp.example.net": DomainProfile(late_bounce=0.08, mailbox_full=0.02),
    # a receiver that throttles: 421 on 30 % of attempts
    "throttle.example.org": DomainProfile(throttle=0.30),
    # every other domain: plain delivery
    "default": DomainProfile(),
}
"""The profiles a simulator starts from; ``default`` answers any other domain."""


def profiles_with(overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, DomainProfile]:
    """:data:`DEFAULT_PROFILES` with ``overrides`` (domain -> profile fields) merged over
    them: a known domain keeps the fields not given, a new one starts from zero.

    A wrong field or value raises :class:`~mailfleet.InvalidInput` naming the domain.
    """
    merged = dict(DEFAULT_PROFILES)
    for domain, values in overrides.items():
        name = domain.strip().lower().rstrip(".")
        if not isinstance(values, Mapping):
            raise InvalidInput(name, "a profile is an object of rates", value=values)
        try:
            merged[name] = DomainProfile.of(values, base=merged.get(name))
        except InvalidInput as exc:
            raise InvalidInput(f"{name}.{exc.field}", exc.message, value=exc.value) from None
    return merged


def _draw(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts`` (a hash, the same in every process)."""
    digest = hashlib.sha256("\x00".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True, slots=True)
class PendingReport:
    """A DSN or ARF report the simulator will mail back to the envelope sender."""

    outcome: Outcome
    """``late_bounce`` (a DSN) or ``complaint`` (an ARF report)."""
    mail_from: str
    """The original's envelope sender, where the report goes (the VERP address)."""
    recipient: str
    original: bytes
    arrived: float
    """When the original was accepted (``time.time()``)."""

    def message(self) -> bytes:
        """The report as the receiver would send it."""
        if self.outcome is Outcome.LATE_BOUNCE:
            return _dsn(self)
        return _arf(self)


class SimulatedInternet:
    """Every external MX at once: an aiosmtpd server on loopback answering by profile.

    Run it with ``port = await tg.start(internet.run)``; cancelling the task
    stops it. ``mx`` is where late reports go (the fleet's MX, ``(host,
    port)``); with None they are logged and dropped. ``stats`` counts each
    decision per recipient domain and outcome.
    """

    def __init__(
        self,
        profiles: Mapping[str, DomainProfile] | None = None,
        *,
        seed: int = 0,
        report_delay: float = 2.0,
        mx: tuple[str, int] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.profiles = dict(DEFAULT_PROFILES if profiles is None else profiles)
        self.profiles.setdefault("default", DomainProfile())
        self.seed = seed
        self.report_delay = report_delay
        self.mx = mx
        self.host = host
        self.port = port
        self.stats: dict[str, Counter[Outcome]] = {}
        """Decisions so far: recipient domain -> outcome -> count (RCPTs answered)."""
        self.reports_sent = 0
        self.reports_failed = 0
        self._attempts: Counter[str] = Counter()
        self._greylisted: set[tuple[str, str]] = set()
        self._pending: list[PendingReport] = []
        self._tasks: TaskGroup | None = None

    # -- deciding -------------------------------------------------------------------------

    def profile(self, domain: str) -> DomainProfile:
        """The profile answering ``domain`` (``default`` for a domain without its own)."""
        return self.profiles.get(domain.lower(), self.profiles["default"])

    def decide(self, recipient: str, *, mail_from: str = "") -> Outcome:
        """The outcome of one RCPT (counted as an attempt, and in ``stats``)."""
        address = recipient.strip().lower()
        local, _, domain = address.rpartition("@")
        attempt = self._attempts[address]
        self._attempts[address] += 1
        profile = self.profile(domain)
        forced = FORCED.get(local.split("+", 1)[0])
        if forced is Outcome.THROTTLE or (
            forced is None and _draw(self.seed, "attempt", address, attempt) < profile.throttle
        ):
            outcome = Outcome.THROTTLE
        else:
            outcome = forced or profile.fate(_draw(self.seed, "address", address))
        if outcome is Outcome.GREYLIST:
            pair = (mail_from.lower(), address)
            if pair in self._greylisted:
                outcome = Outcome.DELIVERED
            else:
                self._greylisted.add(pair)
        self.stats.setdefault(domain, Counter())[outcome] += 1
        log.debug(
            "%s (attempt %d, from %s): %s",
            address,
            attempt + 1,
            mail_from or "<>",
            outcome.value,
            extra={"recipient": address, "outcome": outcome.value},
        )
        return outcome

    # -- serving --------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; report the bound port with ``task_status.started``.

        Reports still pending when it stops are logged, one line each.
        """
        if self.mx is None:
            log.warning("no MX to mail reports to: late bounces and complaints will be dropped")
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(_Handler(self), hostname=HOSTNAME), self.host, self.port
        )
        try:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                self.port = server.sockets[0].getsockname()[1]
                task_status.started(self.port)
                await anyio.sleep_forever()
        finally:
            self._tasks = None
            server.close()
            with anyio.CancelScope(shield=True):
                await server.wait_closed()
            for report in self._pending:
                log.info(
                    "simulator stopped: %s report for %s to %s not sent",
                    report.outcome.value,
                    report.recipient,
                    report.mail_from,
                )
            self._pending.clear()

    def accepted(self, mail_from: str, recipient: str, outcome: Outcome, data: bytes) -> None:
        """A message accepted for ``recipient``: schedule its report, if its fate has one."""
        if outcome not in (Outcome.LATE_BOUNCE, Outcome.COMPLAINT):
            return
        if not mail_from:
            log.debug("no report for %s: the message had a null sender", recipient)
            return
        report = PendingReport(outcome, mail_from, recipient, data, time.time())
        if self.mx is None or self._tasks is None:
            log.debug("%s report for %s dropped: no MX", outcome.value, recipient)
            return
        self._pending.append(report)
        self._tasks.start_soon(self._report_later, report)

    async def _report_later(self, report: PendingReport) -> None:
        await anyio.sleep(self.report_delay)
        await self.send_report(report)
        self._pending.remove(report)  # not on a cancel: then it is logged as not sent

    async def send_report(self, report: PendingReport) -> bool:
        """Mail ``report`` from ``<>`` to its envelope sender at the MX; False if refused
        or unreachable (logged at WARNING)."""
        assert self.mx is not None
        host, port = self.mx
        try:
            async with aiosmtplib.SMTP(
                hostname=host, port=port, start_tls=False, local_hostname=HOSTNAME, timeout=30
            ) as client:
                await client.sendmail("", [report.mail_from], report.message())
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.reports_failed += 1
            log.warning(
                "the MX %s:%d refused the %s report for %s to %s: %s",
                host,
                port,
                report.outcome.value,
                report.recipient,
                report.mail_from,
                exc,
            )
            return False
        self.reports_sent += 1
        log.debug("%s report for %s sent to %s", report.outcome.value, report.recipient, host)
        return True

    def describe(self) -> str:
        """The profiles, one ``domain (rates)`` each, for a log line."""
        return "; ".join(f"{name} ({p.describe()})" for name, p in sorted(self.profiles.items()))


class _Handler:
    """aiosmtpd's handler: RCPT by profile, DATA schedules the reports."""

    def __init__(self, internet: SimulatedInternet) -> None:
        self.internet = internet
        self.outcomes: WeakKeyDictionary[Envelope, dict[str, Outcome]] = WeakKeyDictionary()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        outcome = self.internet.decide(address, mail_from=envelope.mail_from or "")
        reply = _REPLIES.get(outcome)
        if reply is not None:
            return reply.format(address=address)
        envelope.rcpt_tos.append(address)
        self.outcomes.setdefault(envelope, {})[address] = outcome
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        for recipient, outcome in self.outcomes.pop(envelope, {}).items():
            self.internet.accepted(envelope.mail_from or "", recipient, outcome, data)
        return "250 2.0.0 OK: queued by the simulated internet"


_REPLIES: Mapping[Outcome, str] = {
    Outcome.UNKNOWN_USER: "550 5.1.1 <{address}>: Recipient address rejected: user unknown",
    Outcome.MAILBOX_FULL: "552 5.2.2 <{address}>: mailbox full, over quota",
    Outcome.THROTTLE: "421 4.7.0 Too many messages from your address, try again later",
    Outcome.GREYLIST: "451 4.7.1 <{address}>: greylisted, try again later",
}


# -- the reports --------------------------------------------------------------------------


def _crlf(data: bytes) -> str:
    """``data`` as text with CRLF line ends."""
    return data.replace(b"\r\n", b"\n").decode("utf-8", "replace").replace("\n", "\r\n")


def _headers_of(original: bytes) -> str:
    """The header block of ``original``, CRLF-terminated lines, as text."""
    head = original.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    return _crlf(head) + "\r\n"


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2] or HOSTNAME


def _boundary(kind: str, report: PendingReport) -> str:
    digest = hashlib.sha256(f"{report.recipient}\x00{report.arrived}".encode()).hexdigest()
    return f"={kind}-{digest[:24]}"


def _date(when: float) -> str:
    return email.utils.formatdate(when)


def _dsn(report: PendingReport) -> bytes:
    """An RFC 3464 report: the original's recipient failed, 5.1.1, with its headers."""
    domain = _domain_of(report.recipient)
    boundary = _boundary("dsn", report)
    diagnostic = f"550 5.1.1 <{report.recipient}>: user unknown"
    return (
        f"From: MAILER-DAEMON@{domain} (Mail Delivery System)\r\n"
        f"To: {report.mail_from}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {_date(time.time())}\r\n"
        f"Message-ID: {email.utils.make_msgid('dsn', domain=HOSTNAME)}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f' boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"This is the mail gateway of {domain}. Your message was accepted but\r\n"
        "could not be delivered to the recipient below.\r\n\r\n"
        f"<{report.recipient}>: {diagnostic}\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; {domain}\r\n"
        f"Arrival-Date: {_date(report.arrived)}\r\n\r\n"
        f"Final-Recipient: rfc822; {report.recipient}\r\n"
        f"Original-Recipient: rfc822; {report.recipient}\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        f"Remote-MTA: dns; {domain}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"{_headers_of(report.original)}\r\n"
        f"--{boundary}--\r\n"
    ).encode()


def _arf(report: PendingReport) -> bytes:
    """An RFC 5965 feedback report (abuse) about the original, which it carries whole."""
    domain = _domain_of(report.recipient)
    boundary = _boundary("arf", report)
    return (
        f"From: Feedback Loop <fbl@{domain}>\r\n"
        f"To: {report.mail_from}\r\n"
        "Subject: Abuse report (complaint)\r\n"
        f"Date: {_date(time.time())}\r\n"
        f"Message-ID: {email.utils.make_msgid('arf', domain=HOSTNAME)}\r\n"
        "Auto-Submitted: auto-generated\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=feedback-report;\r\n"
        f' boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"This is an email abuse report: a user of {domain} marked the\r\n"
        "attached message as spam.\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Version: 1\r\n"
        f"Original-Mail-From: <{report.mail_from}>\r\n"
        f"Original-Rcpt-To: <{report.recipient}>\r\n"
        f"Arrival-Date: {_date(report.arrived)}\r\n"
        f"Reporting-MTA: dns; {domain}\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/rfc822\r\n"
        "Content-Disposition: inline\r\n\r\n"
        f"{_crlf(report.original)}\r\n"
        f"--{boundary}--\r\n"
    ).encode()
