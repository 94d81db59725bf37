"""SMTP out: a pool of reused aiosmtplib connections to one relay.

:meth:`SmtpRelay.send` never raises for what the relay says: every answer,
accepted or refused, per recipient or for the whole message, comes back as
an :class:`SmtpOutcome`. Connection failures become a ``421``-class outcome
(temporary), so the caller's retry schedule applies to them too.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosmtplib
import anyio

__all__ = ["RelayConfig", "SmtpOutcome", "SmtpRelay"]

log = logging.getLogger("mailfleet.relay")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Where outbound mail goes: a relay (smarthost) and how to talk to it."""

    host: str
    port: int = 587
    starttls: bool | None = None
    """True: require STARTTLS; None: use it when offered; False: never."""
    implicit_tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    pool_size: int = 4
    timeout: float = 60.0
    validate_certs: bool = True


@dataclass(frozen=True, slots=True)
class SmtpOutcome:
    """What the relay said about one message.

    ``code`` is the reply to the message as a whole (250 when at least one
    recipient was accepted and DATA went through); ``refused`` maps the
    recipients the relay refused to their ``(code, text)``.
    """

    code: int
    text: str
    accepted: tuple[str, ...] = ()
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def temporary(self) -> bool:
        """A 4xx answer: try again later."""
        return 400 <= self.code < 500


class SmtpRelay:
    """Sends over up to ``pool_size`` connections, each reused for many messages."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = anyio.Semaphore(config.pool_size)

    def _client(self) -> aiosmtplib.SMTP:
        c = self.config
        context = None
        if not c.validate_certs:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            username=c.username,
            password=c.password,
            use_tls=c.implicit_tls,
            start_tls=c.starttls,
            timeout=c.timeout,
            validate_certs=c.validate_certs,
            tls_context=context,
        )

    async def send(self, mail_from: str, recipients: Sequence[str], raw: bytes) -> SmtpOutcome:
        """Send one message; the outcome says what the relay answered."""
        async with self._slots:
            client = self._idle.pop() if self._idle else self._client()
            try:
                outcome = await self._send(client, mail_from, recipients, raw)
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError):
                # A pooled connection the relay closed meanwhile: one fresh try.
                await _close(client)
                client = self._client()
                try:
                    outcome = await self._send(client, mail_from, recipients, raw)
                except (aiosmtplib.SMTPException, OSError) as exc:
                    await _close(client)
                    return SmtpOutcome(421, f"relay unreachable: {exc}")
            except aiosmtplib.SMTPException as exc:
                await _close(client)
                return SmtpOutcome(421, f"relay error: {exc}")
            if client.is_connected:
                self._idle.append(client)
            return outcome

    async def _send(
        self, client: aiosmtplib.SMTP, mail_from: str, recipients: Sequence[str], raw: bytes
    ) -> SmtpOutcome:
        if not client.is_connected:
            await client.connect()
        try:
            refused, text = await client.sendmail(mail_from, list(recipients), raw)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await _reset(client)
            bad = {e.recipient: (e.code, e.message) for e in exc.recipients}
            worst = min(code for code, _ in bad.values())
            return SmtpOutcome(worst, "all recipients refused", refused=bad)
        except aiosmtplib.SMTPResponseException as exc:
            if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
                raise
            await _reset(client)
            return SmtpOutcome(exc.code, exc.message)
        bad = {rcpt: (r.code, r.message) for rcpt, r in refused.items()}
        accepted = tuple(r for r in recipients if r not in bad)
        return SmtpOutcome(250, text, accepted=accepted, refused=bad)

    async def aclose(self) -> None:
        """Close every pooled connection."""
        idle, self._idle = self._idle, []
        for client in idle:
            await _close(client)


async def _reset(client: aiosmtplib.SMTP) -> None:
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        await _close(client)


async def _close(client: aiosmtplib.SMTP) -> None:
    try:
        if client.is_connected:
            await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        client.close()
