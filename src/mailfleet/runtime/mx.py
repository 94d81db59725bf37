"""The runtime's side of the MX: recipients are grants, accepted mail goes to ``deliver``.

Bounce addresses are recipients too: ``bounces+TOKEN@domain`` (the VERP
envelope sender of every send) and ``bounces@domain`` (for feedback loops),
on the application's registered domains only. What reaches them, and mail to
a grant that looks automatic (a null envelope sender, a ``multipart/report``),
goes to ``report`` (:class:`~mailfleet.runtime.feedback.Feedback`) first.

Unsubscribe addresses are recipients as well: ``unsubscribe+TOKEN@domain``,
the mailto of a bulk send's ``List-Unsubscribe``, on the same domains, and
only for a token the application issued (any other is refused at RCPT, as an
unknown mailbox). A message to one unsubscribes its recipient
(:meth:`~mailfleet.runtime.consent.Consent.unsubscribe`, ``via="mail"``)
and is not stored: what it says does not matter (RFC 2369).

Every message is verified once, whatever its number of recipients, before
it is stored (``authenticate``: SPF, DKIM and DMARC, ``auth/verify.py``):
the results go with the message to ``deliver`` and into its bytes as an
``Authentication-Results`` header, after every such header claiming this
MX's name was removed.

With an :class:`~mailfleet.runtime.admission.Admission`, the workspace
policy's limits are decided once the message is read (the daily receive
limit, the attachments: refused before anything is stored for any
recipient), and every message a grant stores carries its spam verdict:
the signals are gathered once per message, the verdict made per recipient
at its workspace's threshold. A grant refused for storage is marked full
there.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from email.utils import formatdate
from typing import Any, TypeVar

import anyio

from ..mail.authresults import add_authentication_results, strip_authentication_results
from ..model.addresses import normalize_domain, parse_address
from ..model.authentication import Authentication
from ..model.errors import (
    GrantNotFound,
    InvalidInput,
    MessageBlocked,
    QueueFull,
    StoreUnavailable,
)
from ..model.messages import StoredMessage
from ..model.policy import PLATFORM_MAX_MESSAGE_BYTES
from ..model.records import Grant, GrantStatus
from ..model.spam import SpamInput, SpamSignal
from ..store.outage import Outage
from ..transports.smtp_in import Accepted, MxContext, Recipient
from .admission import Admission
from .feedback import Taken

__all__ = ["FleetMx"]

Lookup = Callable[[str], Awaitable[Grant | None]]
Deliver = Callable[..., Awaitable[StoredMessage]]
DomainLookup = Callable[[str], Awaitable[bool]]
Report = Callable[..., Awaitable[Taken]]
Unsubscribe = Callable[[str], Awaitable[object]]
"""``unsubscribe(token)``: act on a mail to an unsubscribe address."""
TokenLookup = Callable[[str], Awaitable[bool]]
"""``known(token)``: whether the application issued this unsubscribe token."""
Authenticate = Callable[..., Awaitable[Authentication]]
"""``authenticate(raw, *, ip, helo, mail_from)``: the verification results of a message."""
Screen = Callable[[Grant, str], Awaitable[str | None]]
"""``screen(grant, mail_from)``: the RCPT refusal of the grant's rules, or None."""

log = logging.getLogger("mailfleet.mx")

_T = TypeVar("_T")
_BOUNCE_ADDRESS = re.compile(r"bounces(?:\+[^@\s]+)?@[^@\s]+", re.IGNORECASE)
_UNSUBSCRIBE_ADDRESS = re.compile(r"unsubscribe\+([a-z2-7]{32})@[^@\s]+")
_REPORT_TYPE = re.compile(rb"^content-type:[ \t]*multipart/report", re.IGNORECASE | re.MULTILINE)


class FleetMx(MxContext):
    """Accepts mail for the fleet's grants and hands it to ``Fleet.deliver``."""

    def __init__(
        self,
        lookup: Lookup,
        deliver: Deliver,
        *,
        hostname: str,
        cache_seconds: float = 1.0,
        owns_domain: DomainLookup | None = None,
        report: Report | None = None,
        authenticate: Authenticate | None = None,
        unsubscribe: Unsubscribe | None = None,
        unsubscribe_known: TokenLookup | None = None,
        screen: Screen | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._lookup = lookup
        self._unsubscribe = unsubscribe
        self._unsubscribe_known = unsubscribe_known
        self._screen = screen
        self._admission = admission
        self._authenticate = authenticate
        self._deliver = deliver
        self._hostname = hostname
        self._cache_seconds = cache_seconds
        self._owns_domain = owns_domain
        self._report = report
        # address -> (looked up at, grant): RCPT lookups are mostly repeats; a
        # policy or status change is seen within ``cache_seconds``.
        self._cache: dict[str, tuple[float, Grant | None]] = {}
        self._domains: dict[str, tuple[float, bool]] = {}
        # address -> bytes stored since its grant was looked up
        self._grown: dict[str, int] = {}
        self._dated = (0, "")
        # The MX answers 451 4.3.0 while the store is away (transports/smtp_in.py); this
        # logs the outage once, and its end at the first message stored again.
        self._outage = Outage("receiving mail", log)

    async def _cached(
        self, cache: dict[str, tuple[float, _T]], key: str, load: Callable[[str], Awaitable[_T]]
    ) -> _T:
        now = time.monotonic()
        hit = cache.get(key)
        if hit is not None and now - hit[0] < self._cache_seconds:
            return hit[1]
        if len(cache) > 10_000:
            cache.clear()
            self._grown.clear()
        value = await load(key)
        cache[key] = (now, value)
        return value

    async def _grant(self, address: str) -> Grant | None:
        hit = self._cache.get(address)
        grant = await self._cached(self._cache, address, self._lookup)
        if self._cache.get(address) is not hit:  # looked up anew: its storage is current
            self._grown.pop(address, None)
        return grant

    def _date(self) -> str:
        """The RFC 5322 date for trace headers, formatted once a second."""
        now = int(time.time())
        if now != self._dated[0]:
            self._dated = (now, formatdate(now, localtime=False))
        return self._dated[1]

    def size_limit(self) -> int:
        """The platform's bound on ``max_message_bytes``: no workspace takes more."""
        return PLATFORM_MAX_MESSAGE_BYTES

    async def recipient(self, address: str, *, mail_from: str = "") -> Recipient | None:
        """The grant behind ``address``, with its workspace's limits (and the refusal of
        its rules for ``mail_from``, when a block rule on the envelope matches).
        Raises :class:`~mailfleet.StoreUnavailable` when the store cannot be read."""
        try:
            return await self._recipient(address, mail_from)
        except StoreUnavailable as exc:
            self._outage.failed(exc)
            raise

    async def _recipient(self, address: str, mail_from: str) -> Recipient | None:
        try:
            normal = str(parse_address(address))
        except InvalidInput:
            return None
        grant = await self._grant(normal)
        if grant is None or grant.status is GrantStatus.DELETED:
            return await self._bounce_address(normal) or await self._unsubscribe_address(normal)
        policy = grant.policy
        return Recipient(
            address=normal,
            grant_id=grant.id,
            max_message_bytes=policy.max_message_bytes,
            storage_left=policy.storage_limit_bytes
            - grant.stored_bytes
            - self._grown.get(normal, 0),
            refusal=None if self._screen is None else await self._screen(grant, mail_from),
        )

    async def takes_domain(self, domain: str) -> bool:
        """Whether ``domain`` (any case, Unicode or punycode) is one of the application's
        (or a bounce domain of one): not, for an address literal or a name that is no
        domain. Without ``owns_domain`` every domain is taken (an unknown mailbox)."""
        if self._owns_domain is None:
            return True
        try:
            normal = normalize_domain(domain)
        except InvalidInput:
            return False
        return await self._cached(self._domains, normal, self._owns_domain)

    async def _bounce_address(self, address: str) -> Recipient | None:
        """A bounce address on one of the application's domains, or None."""
        if self._report is None or self._owns_domain is None:
            return None
        if not _BOUNCE_ADDRESS.fullmatch(address):
            return None
        domain = address.rsplit("@", 1)[1]
        if not await self._cached(self._domains, domain, self._owns_domain):
            return None
        return Recipient(
            address=address,
            grant_id="",
            max_message_bytes=PLATFORM_MAX_MESSAGE_BYTES,
            storage_left=sys.maxsize,
            report=True,
        )

    async def _unsubscribe_address(self, address: str) -> Recipient | None:
        """An unsubscribe address with a token the application issued, on one of its
        domains, or None."""
        if self._unsubscribe_known is None or self._owns_domain is None:
            return None
        match = _UNSUBSCRIBE_ADDRESS.fullmatch(address)
        if match is None:
            return None
        domain = address.rsplit("@", 1)[1]
        if not await self._cached(self._domains, domain, self._owns_domain):
            return None
        if not await self._unsubscribe_known(match[1]):
            return None
        return Recipient(
            address=address,
            grant_id="",
            max_message_bytes=PLATFORM_MAX_MESSAGE_BYTES,
            storage_left=sys.maxsize,
            unsubscribe=True,
        )

    async def accept(
        self,
        recipients: Sequence[Recipient],
        data: bytes,
        *,
        mail_from: str,
        peer: str,
        helo: str | None,
    ) -> Accepted:
        """Store the message for every recipient; 250 only once all are committed.

        The source key is the hash of the message as received, so a client
        that retries after a 4xx (or a lost 250) does not store it twice. A
        store that cannot take it raises :class:`~mailfleet.StoreUnavailable`
        (the MX answers ``451 4.3.0``), whichever recipient it failed for.
        """
        try:
            accepted = await self._accept(
                recipients, data, mail_from=mail_from, peer=peer, helo=helo
            )
        except StoreUnavailable as exc:
            self._outage.failed(exc)
            raise
        self._outage.succeeded()
        return accepted

    async def _accept(
        self,
        recipients: Sequence[Recipient],
        data: bytes,
        *,
        mail_from: str,
        peer: str,
        helo: str | None,
    ) -> Accepted:
        key = "smtp:" + hashlib.sha256(data).hexdigest()[:48]
        authentication, data = await self._verified(data, mail_from=mail_from, peer=peer, helo=helo)
        trace = (
            f"Return-Path: <{mail_from}>\r\n"
            f"Received: from {helo or 'unknown'} ([{peer}])\r\n"
            f"\tby {self._hostname} (mailfleet) with ESMTP;\r\n"
            f"\t{self._date()}\r\n"
        ).encode()
        stored: list[str] = []
        failures: list[Exception] = []
        blocked: list[MessageBlocked] = []
        unavailable: list[StoreUnavailable] = []

        automatic = self._report is not None and _looks_automatic(mail_from, data)
        judged: dict[str, Any] = {}
        if self._admission is not None:
            refusal = await self._admit(
                recipients,
                trace + data,
                data,
                judged,
                automatic=automatic,
                peer=peer,
                helo=helo,
                mail_from=mail_from,
                authentication=authentication,
            )
            if refusal is not None:
                return Accepted(refusal)

        async def one(recipient: Recipient) -> None:
            try:
                await store(recipient)
            except StoreUnavailable as exc:  # not raised in the task group: no other is cancelled
                unavailable.append(exc)

        async def store(recipient: Recipient) -> None:
            if recipient.unsubscribe:
                assert self._unsubscribe is not None
                match = _UNSUBSCRIBE_ADDRESS.fullmatch(recipient.address)
                assert match is not None
                await self._unsubscribe(match[1])
                stored.append("unsubscribe")
                return
            if recipient.report or automatic:
                assert self._report is not None
                taken = await self._report(
                    trace + data,
                    recipient=recipient.address,
                    source_key=f"{key}:{recipient.address}",
                    grant_id=None if recipient.report else recipient.grant_id,
                )
                if taken.taken:
                    stored.append("report")
                    return
            try:
                message = await self._deliver(
                    recipient.grant_id,
                    trace + data,
                    source_key=key,
                    authentication=authentication,
                    mail_from=mail_from,
                    **judged.get(recipient.grant_id, {}),
                )
            except MessageBlocked as exc:
                blocked.append(exc)
            except (QueueFull, GrantNotFound) as exc:
                failures.append(exc)
            else:
                stored.append(message.id)
                if self._admission is not None:
                    self._admission.received(recipient.grant_id)
                # the cached storage use keeps step with what was just stored
                self._grown[recipient.address] = self._grown.get(recipient.address, 0) + len(
                    message.raw
                )

        if len(recipients) == 1:  # the common case needs no task group
            await one(recipients[0])
        else:
            async with anyio.create_task_group() as tg:
                for recipient in recipients:
                    tg.start_soon(one, recipient)
        if unavailable:
            raise unavailable[0]
        if failures:
            if any(isinstance(f, QueueFull) for f in failures):
                return Accepted("451 4.3.0 Mailbox busy, please try again later")
            return Accepted("450 4.2.0 Mailbox unavailable, please try again later")
        if not stored:  # every recipient's rules refused it
            return Accepted("550 5.7.1 Message refused by policy")
        if stored[0] == "report":
            return Accepted("250 2.0.0 Ok: report received")
        if stored[0] == "unsubscribe":
            return Accepted("250 2.0.0 Ok: unsubscribed")
        return Accepted(f"250 2.0.0 Ok: queued as {stored[0]}")

    async def mailbox_full(self, recipient: Recipient, size: int) -> None:
        """A grant refused for storage is marked full (its ``grant.storage_full`` event)."""
        if self._admission is not None and recipient.grant_id:
            await self._admission.storage_full(recipient.grant_id, refused_bytes=size)

    async def _admit(
        self,
        recipients: Sequence[Recipient],
        raw: bytes,
        data: bytes,
        judged: dict[str, Any],
        *,
        automatic: bool,
        peer: str,
        helo: str | None,
        mail_from: str,
        authentication: Authentication | None,
    ) -> str | None:
        """The policy's refusal of the message for one of its grants, or None; then each
        grant's spam verdict (and the header read) in ``judged``, for ``deliver``."""
        from ..mail.headers import parse_headers
        from ..mail.spamfacts import header_facts

        admission = self._admission
        assert admission is not None
        headers = parse_headers(raw)
        grants: list[Grant] = []
        for recipient in recipients:
            if recipient.report or not recipient.grant_id:
                continue
            grant = await self._grant(recipient.address)
            if grant is None:
                continue
            if not automatic:  # reports are never refused for their parts
                refusal = await admission.refusal(grant, data, headers)
                if refusal is not None:
                    log.info(
                        "refused a message from %s for %s: %s",
                        peer,
                        recipient.address,
                        refusal,
                        extra={"grant_id": grant.id},
                    )
                    return refusal
            grants.append(grant)
        if not grants:
            return None
        message = SpamInput(
            raw=data,
            headers=headers.headers,
            peer=peer,
            helo=helo,
            mail_from=mail_from,
            authentication=authentication,
            facts=header_facts(headers.headers),
        )
        signals: list[SpamSignal] = await admission.spam.signals(message)
        for grant in grants:
            verdict = await admission.verdict(grant, signals, message)
            judged[grant.id] = {"spam": verdict, "headers": headers}
        return None

    async def _verified(
        self, data: bytes, *, mail_from: str, peer: str, helo: str | None
    ) -> tuple[Authentication | None, bytes]:
        """The message's verification results, and its bytes with our
        Authentication-Results header in place of any that claimed our name."""
        if self._authenticate is None:
            return None, strip_authentication_results(data, self._hostname)
        try:
            found = await self._authenticate(data, ip=peer, helo=helo or "", mail_from=mail_from)
        except Exception:  # a bug in verification must not lose mail: store it unverified
            log.exception("verifying a message from %s failed; it is stored unverified", peer)
            return None, strip_authentication_results(data, self._hostname)
        return found, add_authentication_results(data, found.header, authserv_id=found.authserv_id)


def _looks_automatic(mail_from: str, data: bytes) -> bool:
    """Whether a message may be a delivery or feedback report: a null envelope
    sender (RFC 5321 for every DSN), or a ``multipart/report`` at the top."""
    if not mail_from or mail_from == "<>":
        return True
    ends = [
        at for at in (data.find(b"\r\n\r\n", 0, 65536), data.find(b"\n\n", 0, 65536)) if at >= 0
    ]
    return _REPORT_TYPE.search(data, 0, min(ends, default=65536)) is not None
