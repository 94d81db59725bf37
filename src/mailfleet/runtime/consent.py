"""One-click unsubscribe and double opt-in: what the links, the mail paths and the gate call.

:class:`ConsentTokens` holds the application's signing key and makes the
tokens and links of bulk and campaign mail (``model/consent.py`` says how a
token is built and why). :class:`Consent` acts on them:

- :meth:`Consent.unsubscribe`, for the one-click ``POST /v1/unsubscribe/TOKEN``
  (RFC 8058) and for mail to ``unsubscribe+TOKEN@domain`` (the MX): the
  recipient is suppressed in the grant's workspace at once, ``recipient.unsubscribed``
  recorded and the agent's ``on_unsubscribe`` queued, all in one transaction;
  asked again, it answers the same and records nothing more;
- :meth:`Consent.request_opt_in` sends a confirmation (a signed link to
  ``/v1/opt-in/TOKEN``; a reply confirms too, see the intake) and
  :meth:`Consent.confirm_opt_in` takes the link's answer. Only confirmed
  recipients get ``campaign`` mail; a confirmation expires after
  ``opt_in_expiry_days``, checked when it is answered and when a campaign
  send looks at it.

Every method is a plain coroutine that returns a record or raises from the
``model/errors.py`` tree (:class:`~mailfleet.InvalidToken`,
:class:`~mailfleet.TokenExpired`), so an HTTP route is a thin wrapper.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import anyio

from ..model.addresses import parse_address
from ..model.consent import (
    KEY_BYTES,
    OptIn,
    OptInStatus,
    Token,
    UnsubscribeResult,
    opt_in_token,
    parse_token,
    unsubscribe_token,
)
from ..model.errors import InvalidInput, InvalidToken, TokenExpired
from ..model.outbound import SendCategory, SendResult, SendStatus
from ..model.records import Grant
from ..store import consent
from ..store.consent import OptInRow, UnsubscribeRow
from ..store.scope import Scope, Tx
from ..store.tables import utcnow

if TYPE_CHECKING:
    from ..settings import Settings
    from .outbox import Outbox

__all__ = ["UNSUBSCRIBE_VIAS", "Consent", "ConsentTokens"]

log = logging.getLogger("mailfleet.consent")

UNSUBSCRIBE_VIAS = ("one_click", "mail")
"""How an unsubscribe arrives: the link's HTTPS POST, or mail to the mailto address."""
_OPT_IN_VIAS = ("link", "reply")
_SECRET_NAME = "consent"

DEFAULT_SUBJECT = "Please confirm: mail from {sender}"
DEFAULT_TEXT = """\
{sender} would like to send you mail, and asks you to confirm first.

To confirm, open this link:

    {link}

or simply reply to this message.

If you did not ask for this, ignore this message: without your confirmation
you will get nothing more. The link works until {expires}.
"""


class ConsentTokens:
    """The application's signing key, and the tokens, links and headers made with it.

    The key is the setting ``unsubscribe_secret`` (hashed to 32 bytes); unset,
    a random 32-byte key the application makes once and keeps in the database
    (``application_secrets``), so every process on the store signs and checks
    alike, and links keep working across restarts. Changing the setting
    invalidates the links of mail sent before.
    """

    def __init__(self, scope: Scope, settings: Settings) -> None:
        self._scope = scope
        configured = settings.unsubscribe_secret
        self._secret: bytes | None = (
            None
            if configured is None
            else hashlib.sha256(configured.get_secret_value().encode("utf-8")).digest()
        )
        self._public_url = settings.public_url
        self._envelope_domain = settings.envelope_domain
        self._lock = anyio.Lock()

    async def secret(self) -> bytes:
        """The signing key (read from the store, or made there, on first use)."""
        if self._secret is None:
            async with self._lock:
                if self._secret is None:
                    self._secret = await self._scope.write(
                        lambda tx: consent.application_secret(tx, _SECRET_NAME)
                    )
                    log.info(
                        "unsubscribe_secret is unset: unsubscribe and opt-in tokens are signed "
                        "with the application's random key, kept in the database"
                    )
        return self._secret

    async def unsubscribe_token(self, grant_id: str, address: str) -> Token:
        """The one unsubscribe token of ``address`` for mail from ``grant_id``."""
        return unsubscribe_token(await self.secret(), self._scope.application_id, grant_id, address)

    async def list_headers(self, grant: Grant, address: str) -> tuple[dict[str, str], Token]:
        """The ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` fields of a bulk send from
        ``grant`` to ``address`` (RFC 2369, RFC 8058), and the token they carry."""
        token = await self.unsubscribe_token(grant.id, address)
        mailto = f"unsubscribe+{token.text}@{self._envelope_domain(grant.domain)}"
        headers = {
            "List-Unsubscribe": f"<mailto:{mailto}>, <{self.unsubscribe_link(token)}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        return headers, token

    def unsubscribe_link(self, token: Token) -> str:
        """The one-click URL of ``token`` (``public_url``/v1/unsubscribe/TOKEN)."""
        return f"{self._public_url}/v1/unsubscribe/{token.text}"

    def opt_in_link(self, token: Token) -> str:
        """The confirmation URL of ``token`` (``public_url``/v1/opt-in/TOKEN)."""
        return f"{self._public_url}/v1/opt-in/{token.text}"

    async def opt_in_token(self, grant_id: str, address: str, nonce: bytes) -> Token:
        """The token of one confirmation request."""
        return opt_in_token(
            await self.secret(), self._scope.application_id, grant_id, address, nonce
        )


class Consent:
    """Unsubscribes and double opt-in for one fleet (module docstring)."""

    def __init__(
        self,
        scope: Scope,
        tokens: ConsentTokens,
        outbox: Outbox,
        *,
        expiry_days: float,
        committed: Callable[[set[str]], None],
    ) -> None:
        self._scope = scope
        self._tokens = tokens
        self._outbox = outbox
        self._expiry = timedelta(days=expiry_days)
        self._committed = committed

    # -- unsubscribes -----------------------------------------------------------------

    async def unsubscribe(self, token: str, *, via: str = "one_click") -> UnsubscribeResult:
        """Unsubscribe the recipient ``token`` names from its grant's mail, at once.

        The recipient is suppressed in the grant's workspace (reason ``unsubscribe``),
        its opt-in for the grant withdrawn, ``recipient.unsubscribed`` recorded and the
        agent's ``on_unsubscribe`` queued, in one transaction. Asked again, it answers
        the same and changes nothing (unless an operator lifted the suppression since:
        then it suppresses again). ``via``: ``one_click`` (the HTTPS POST) or ``mail``.
        A token this application did not issue raises :class:`~mailfleet.InvalidToken`
        and changes nothing.
        """
        if via not in UNSUBSCRIBE_VIAS:
            raise InvalidInput("via", f"must be one of {', '.join(UNSUBSCRIBE_VIAS)}", value=via)
        given = parse_token(token, "unsubscribe")
        secret = await self._tokens.secret()

        def work(tx: Tx) -> tuple[UnsubscribeRow, bool]:
            row = _unsubscribe_row(tx, secret, given, token)
            for _ in range(2):  # once more if another transaction recorded it meanwhile
                if consent.still_unsubscribed(tx, row):
                    return row, False
                done = consent.record_unsubscribe(tx, row, via=via)
                if done is not None:
                    return done, True
                row = _unsubscribe_row(tx, secret, given, token)
            return row, False

        row, new = await self._scope.write(work)
        if new:
            self._committed({row.grant_id})
            log.info(
                "%s unsubscribed (%s) from the mail of grant %s",
                row.address,
                via,
                row.grant_id,
                extra={"grant_id": row.grant_id, "recipient": row.address, "via": via},
            )
        return _unsubscribe_result(row)

    async def unsubscribe_status(self, token: str) -> UnsubscribeResult:
        """Who ``token`` would unsubscribe from whom, and whether it did already
        (``unsubscribed_at``): for a page that asks before the one-click POST. Changes
        nothing; :class:`~mailfleet.InvalidToken` as for :meth:`unsubscribe`."""
        given = parse_token(token, "unsubscribe")
        secret = await self._tokens.secret()
        row = await self._scope.read(lambda tx: _unsubscribe_row(tx, secret, given, token))
        return _unsubscribe_result(row)

    async def knows_unsubscribe(self, token: str) -> bool:
        """Whether ``token`` is an unsubscribe token of this application (the MX asks at
        RCPT, and refuses any other ``unsubscribe+TOKEN@`` address)."""
        try:
            await self.unsubscribe_status(token)
        except InvalidToken:
            return False
        return True

    async def unsubscribe_by_mail(self, token: str) -> UnsubscribeResult | None:
        """:meth:`unsubscribe` for a mail to ``unsubscribe+TOKEN@domain``; a token that
        stopped being valid since RCPT (its grant deleted) is logged, not raised."""
        try:
            return await self.unsubscribe(token, via="mail")
        except InvalidToken as exc:
            log.warning("mail to an unsubscribe address: %s", exc)
            return None

    # -- double opt-in ----------------------------------------------------------------

    async def request_opt_in(
        self,
        grant: Grant,
        recipient: str,
        *,
        subject: str | None = None,
        text: str | None = None,
    ) -> OptIn:
        """Ask ``recipient`` to confirm that it wants ``grant``'s campaign mail.

        Sends a confirmation (through every gate of an ordinary send) with a signed link
        to ``public_url``/v1/opt-in/TOKEN; answering it by the link or by a reply
        confirms until ``opt_in_expiry_days`` have passed. Records
        ``recipient.opt_in_requested`` in the transaction that queues the mail. A
        recipient who confirmed, or whose confirmation is still pending, gets nothing
        new (``confirmation`` None); an expired one gets a new link. The answer's
        ``confirmation`` says whether the mail was queued or why not (suppressed,
        rate-limited...: then nothing was recorded). ``subject`` and ``text`` replace the
        default wording; ``{link}`` (which ``text`` must contain), ``{sender}`` and
        ``{expires}`` are filled in.
        """
        address = str(parse_address(recipient, field="recipient"))
        if text is not None and "{link}" not in text:
            raise InvalidInput("text", "must contain {link}, the confirmation link", value=text)
        now = utcnow()
        found = await self._scope.read(lambda tx: consent.opt_in_of(tx, grant.id, address))
        if found is not None and not found.expired(now):
            return _opt_in(found, grant.address, now)
        nonce = os.urandom(KEY_BYTES)
        token = await self._tokens.opt_in_token(grant.id, address, nonce)
        expires = now + self._expiry
        fill = {
            "{link}": self._tokens.opt_in_link(token),
            "{sender}": grant.address,
            "{expires}": expires.strftime("%d %B %Y, %H:%M UTC"),
        }

        def begin(tx: Tx, header_message_id: str) -> SendResult | None:
            """In the transaction that queues the confirmation: record the request, or
            refuse the mail when another request came first."""
            if consent.begin_opt_in(
                tx,
                grant.id,
                address,
                sender=grant.address,
                token_key=token.key_hex,
                header_message_id=header_message_id,
                expires_at=expires,
            ):
                return None
            return SendResult(SendStatus.REJECTED, detail="opt_in: a confirmation is pending")

        sent = await self._outbox.send(
            grant,
            [address],
            subject=_filled(subject or DEFAULT_SUBJECT, fill),
            text=_filled(text or DEFAULT_TEXT, fill),
            html=None,
            in_reply_to=None,
            category=SendCategory.TRANSACTIONAL,
            auto_submitted="auto-generated",
            on_queued=begin,
        )
        latest = await self._scope.read(lambda tx: consent.opt_in_of(tx, grant.id, address))
        now = utcnow()
        if sent.ok and latest is not None:
            log.info(
                "asked %s to confirm the campaign mail of grant %s (until %s)",
                address,
                grant.id,
                expires.isoformat(),
                extra={"grant_id": grant.id, "recipient": address},
            )
            return replace(_opt_in(latest, grant.address, now), confirmation=sent)
        if latest is not None and not latest.expired(now):
            return _opt_in(latest, grant.address, now)  # another request came first
        if latest is not None:  # expired, and the new confirmation was not sent
            return replace(_opt_in(latest, grant.address, now), confirmation=sent)
        return OptIn(
            address,
            grant.id,
            grant.address,
            OptInStatus.NOT_REQUESTED,
            None,
            None,
            None,
            None,
            confirmation=sent,
        )

    async def opt_in(self, grant: Grant, recipient: str) -> OptIn:
        """Where ``recipient`` stands with ``grant``'s campaign mail (changes nothing)."""
        address = str(parse_address(recipient, field="recipient"))
        found = await self._scope.read(lambda tx: consent.opt_in_of(tx, grant.id, address))
        if found is None:
            return OptIn(
                address, grant.id, grant.address, OptInStatus.NOT_REQUESTED, None, None, None, None
            )
        return _opt_in(found, grant.address, utcnow())

    async def confirm_opt_in(self, token: str, *, via: str = "link") -> OptIn:
        """Confirm the opt-in ``token`` names (the answer to the confirmation's link).

        Records ``recipient.opted_in``; asked again, it answers the same and records
        nothing more. A token this application did not issue, or one a newer request
        replaced, raises :class:`~mailfleet.InvalidToken`; one past its expiry
        :class:`~mailfleet.TokenExpired`. Either way nothing changes.
        """
        if via not in _OPT_IN_VIAS:
            raise InvalidInput("via", f"must be one of {', '.join(_OPT_IN_VIAS)}", value=via)
        given = parse_token(token, "opt_in")

        secret = await self._tokens.secret()

        def work(tx: Tx) -> tuple[OptInRow, bool]:
            row = _opt_in_row(tx, secret, given, token)
            if row.status == "confirmed":
                return row, False
            _check_unexpired(row, token)
            done = consent.confirm_opt_in(tx, row, via=via)
            if done is None:  # confirmed by another transaction, or it just expired
                row = _opt_in_row(tx, secret, given, token)
                if row.status != "confirmed":
                    _check_unexpired(row, token)
                return row, False
            return done, True

        row, new = await self._scope.write(work)
        if new:
            log.info(
                "%s confirmed (%s) the campaign mail of grant %s",
                row.address,
                via,
                row.grant_id,
                extra={"grant_id": row.grant_id, "recipient": row.address, "via": via},
            )
        return _opt_in(row, row.sender, utcnow())

    async def opt_in_status(self, token: str) -> OptIn:
        """The opt-in ``token`` names, without confirming it: for a page that asks before
        confirming. :class:`~mailfleet.InvalidToken` as for :meth:`confirm_opt_in` (an
        expired one answers status ``expired``)."""
        given = parse_token(token, "opt_in")
        secret = await self._tokens.secret()
        row = await self._scope.read(lambda tx: _opt_in_row(tx, secret, given, token))
        return _opt_in(row, row.sender, utcnow())

    async def campaign_refused(self, grant: Grant, recipient: str) -> str:
        """Why a campaign send to ``recipient`` answered ``opt_in_pending``: asks for the
        confirmation when none was ever asked for (never again by itself once one
        expired unanswered: ``request_opt_in`` asks again)."""
        state = await self.opt_in(grant, recipient)
        if state.status is OptInStatus.NOT_REQUESTED:
            state = await self.request_opt_in(grant, recipient)
            confirmation = state.confirmation
            if state.status is OptInStatus.PENDING and confirmation is not None:
                return (
                    f"opt_in_pending: {recipient} has not confirmed campaign mail from "
                    f"{grant.address}; a confirmation was sent, valid until "
                    f"{_when(state.expires_at)}"
                )
            if confirmation is not None and not confirmation.ok:
                return (
                    f"opt_in_pending: {recipient} has not confirmed campaign mail from "
                    f"{grant.address}, and the confirmation could not be sent: "
                    f"{confirmation.status.value} ({confirmation.detail})"
                )
        if state.status is OptInStatus.EXPIRED:
            return (
                f"opt_in_pending: {recipient} did not confirm campaign mail from "
                f"{grant.address}: the confirmation expired on {_when(state.expires_at)} "
                "(request_opt_in asks again)"
            )
        return (
            f"opt_in_pending: {recipient} has not confirmed campaign mail from "
            f"{grant.address} yet; the confirmation sent on {_when(state.requested_at)} "
            f"is valid until {_when(state.expires_at)}"
        )


def _unsubscribe_row(tx: Tx, secret: bytes, given: Token, token: str) -> UnsubscribeRow:
    """The recipient ``given`` names, its tag checked; InvalidToken when none matches."""
    for row in consent.unsubscribe_by_key(tx, given.key_hex):
        expected = unsubscribe_token(secret, tx.application_id, row.grant_id, row.address)
        if given.matches(expected):
            return row
    raise InvalidToken(
        "unsubscribe",
        "no such unsubscribe token (forged, mistyped, or of a grant deleted since)",
        value=token,
    )


def _opt_in_row(tx: Tx, secret: bytes, given: Token, token: str) -> OptInRow:
    """The opt-in ``given`` names, its tag checked; InvalidToken when none matches."""
    for row in consent.opt_in_by_key(tx, given.key_hex):
        expected = opt_in_token(secret, tx.application_id, row.grant_id, row.address, given.key)
        if given.matches(expected):
            return row
    raise InvalidToken(
        "opt_in",
        "no such opt-in token (forged, mistyped, replaced by a newer request, or of a grant "
        "deleted since)",
        value=token,
    )


def _check_unexpired(row: OptInRow, token: str) -> None:
    if row.expired(utcnow()):
        raise TokenExpired(
            "opt_in",
            f"this confirmation expired on {_when(row.expires_at)}: ask for a new one",
            expired_at=row.expires_at,
            value=token,
        )


def _unsubscribe_result(row: UnsubscribeRow) -> UnsubscribeResult:
    return UnsubscribeResult(
        recipient=row.address,
        grant_id=row.grant_id,
        sender=row.sender,
        workspace_id=row.workspace_id,
        unsubscribed_at=row.unsubscribed_at,
        via=row.via,
    )


def _opt_in(row: OptInRow, sender: str, now: datetime) -> OptIn:
    if row.status == "confirmed":
        status = OptInStatus.CONFIRMED
    else:
        status = OptInStatus.EXPIRED if row.expired(now) else OptInStatus.PENDING
    return OptIn(
        recipient=row.address,
        grant_id=row.grant_id,
        sender=sender,
        status=status,
        requested_at=row.requested_at,
        expires_at=row.expires_at,
        confirmed_at=row.confirmed_at,
        via=row.via,
    )


def _filled(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace(name, value)
    return template


def _when(moment: datetime | None) -> str:
    return "?" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")
