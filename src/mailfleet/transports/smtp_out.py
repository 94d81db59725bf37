"""SMTP out: a pool of reused aiosmtplib connections to one relay.

:meth:`SmtpRelay.send` never raises for what the relay says: every answer,
accepted or refused, per recipient or for the whole message, comes back as
an :class:`SmtpOutcome`. Failures of the connection or the relay become a
temporary outcome (``421`` unreachable or connection lost, ``451`` no answer
within ``timeout``), so the caller's retry schedule applies to them too; the
text says where (connect, EHLO, MAIL, RCPT, DATA). See "Faults: a misbehaving
relay" in docs/ARCHITECTURE.md for which fault may duplicate a message.
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
    """Seconds the relay has to accept the connection and to answer each command."""
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


class _Stale(Exception):
    """A pooled connection failed before the relay took anything of the message (at
    EHLO or MAIL: closed meanwhile, or a ``421`` as it closes): open another."""

    def __init__(self, outcome: SmtpOutcome) -> None:
        super().__init__(outcome.text)
        self.outcome = outcome


class SmtpRelay:
    """Sends over up to ``pool_size`` connections, each reused for many messages.

    One message is one try: a failure of the connection or the relay becomes a
    4xx outcome, never a second send in the same call, with one exception that
    cannot duplicate: a pooled connection that fails before the relay accepted
    MAIL (the relay closed it while it was idle) is replaced by a fresh one at once.
    """

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = anyio.Semaphore(config.pool_size)
        self._failed_sessions = 0
        """Sessions in a row that failed at the connection (logged once, then counted)."""

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
        """Send one message; the outcome says what the relay answered.

        Cancelled (the caller's deadline), the connection is closed, never pooled.
        """
        async with self._slots:
            client = self._pooled()
            try:
                if client is not None:
                    try:
                        return self._keep(
                            client, await self._transaction(client, mail_from, recipients, raw)
                        )
                    except _Stale as exc:
                        log.debug("a pooled relay connection was closed (%s): opening another", exc)
                        client.close()
                client = self._client()
                try:
                    outcome = await self._transaction(client, mail_from, recipients, raw)
                except _Stale as exc:
                    outcome = exc.outcome
                return self._keep(client, outcome)
            except BaseException:
                if client is not None:
                    client.close()
                raise

    def _pooled(self) -> aiosmtplib.SMTP | None:
        """An idle connection still open, if there is one (closed ones are dropped)."""
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
            client.close()
        return None

    def _keep(self, client: aiosmtplib.SMTP, outcome: SmtpOutcome) -> SmtpOutcome:
        if client.is_connected:
            self._idle.append(client)
        else:
            client.close()
        return outcome

    async def _transaction(
        self, client: aiosmtplib.SMTP, mail_from: str, recipients: Sequence[str], raw: bytes
    ) -> SmtpOutcome:
        """One SMTP transaction, each failure turned into an outcome; :class:`_Stale`
        when a reused connection fails before MAIL was accepted."""
        reused = client.is_connected
        phase = "connect"
        try:
            if not reused:
                await client.connect()
            phase = "EHLO"
            if client.is_ehlo_or_helo_needed:
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    if not client.is_connected:
                        raise
                    await client.helo()  # an SMTP-only relay
            phase = "MAIL"
            options = [f"SIZE={len(raw)}"] if client.supports_extension("size") else []
            await client.mail(mail_from, options=options)
            self._answering()
            phase = "RCPT"
            refused: dict[str, tuple[int, str]] = {}
            for rcpt in recipients:
                try:
                    await client.rcpt(rcpt)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    if not client.is_connected:
                        raise
                    refused[rcpt] = (exc.code, exc.message)
            if len(refused) == len(recipients):
                await _reset(client)
                worst = min(code for code, _ in refused.values())
                return SmtpOutcome(worst, "all recipients refused", refused=refused)
            phase = "DATA"
            response = await client.data(raw)
        except aiosmtplib.SMTPTimeoutError:
            client.close()  # its state is unknown: a late answer must not meet the next command
            where = "relay unreachable" if phase == "connect" else f"relay timed out at {phase}"
            return self._broken(
                phase,
                421 if phase == "connect" else 451,
                where,
                f"no answer within {self.config.timeout:g} s",
            )
        except aiosmtplib.SMTPResponseException as exc:
            if phase in ("connect", "EHLO"):  # the relay will not talk to us now
                client.close()
                code = exc.code if 400 <= exc.code < 500 else 421
                return self._broken(
                    phase,
                    code,
                    f"relay refused the session at {phase}",
                    f"{exc.code} {exc.message}",
                )
            if reused and phase == "MAIL" and exc.code == 421:
                client.close()
                raise _Stale(SmtpOutcome(exc.code, exc.message)) from exc
            if exc.code == 421 or not client.is_connected:
                client.close()
            else:
                await _reset(client)
            return SmtpOutcome(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            detail = str(exc) or type(exc).__name__
            if reused and phase in ("EHLO", "MAIL"):
                raise _Stale(SmtpOutcome(421, f"4.4.2 connection lost: {detail}")) from exc
            if phase != "connect":
                where = f"relay connection lost at {phase}"
            elif isinstance(exc, OSError):
                where = "relay unreachable"
            else:  # STARTTLS or AUTH required but not offered...
                where = "relay refused the session at connect"
            return self._broken(phase, 421, where, detail)
        bad = {rcpt: refused[rcpt] for rcpt in recipients if rcpt in refused}
        accepted = tuple(r for r in recipients if r not in bad)
        return SmtpOutcome(250, response.message, accepted=accepted, refused=bad)

    def _broken(self, phase: str, code: int, what: str, detail: str) -> SmtpOutcome:
        """The temporary outcome of a session the connection or the relay broke off.

        Logged at WARNING for the first of a run of such sessions, then at DEBUG
        (an outage gives one line, not one a message) until the relay answers again.
        """
        c = self.config
        status = "4.4.1" if phase == "connect" or code == 451 else "4.4.2"
        text = f"{status} {what} ({c.host}:{c.port}): {detail}"
        if phase == "DATA":
            text += "; the relay may have taken the message, it is sent again"
        self._failed_sessions += 1
        log.log(
            logging.WARNING if self._failed_sessions == 1 else logging.DEBUG,
            "%s:%d: %s (%s); its messages are deferred and retried",
            c.host,
            c.port,
            what,
            detail,
            extra={"relay": f"{c.host}:{c.port}", "phase": phase, "code": code},
        )
        return SmtpOutcome(code, text)

    def _answering(self) -> None:
        """The relay took a MAIL command: it is up (say so after a run of failures)."""
        if self._failed_sessions:
            c = self.config
            log.info(
                "%s:%d: the relay answers again (failed sessions before: %d)",
                c.host,
                c.port,
                self._failed_sessions,
                extra={"relay": f"{c.host}:{c.port}", "failed_sessions": self._failed_sessions},
            )
            self._failed_sessions = 0

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
