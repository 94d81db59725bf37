"""``ImapMailbox``: an existing IMAP mailbox attached to a grant, as an inbound source."""

from __future__ import annotations

import logging
import random
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from aioimaplib import aioimaplib  # type: ignore[import-untyped]

from mailfleet import GrantNotFound, MailfleetError, MessageBlocked, QueueFull

from .config import ImapConfig
from .errors import ImapError
from .fingerprints import FingerprintRing, fingerprint
from .session import Session, open_session, secret_forms

if TYPE_CHECKING:
    from mailfleet.plugins import Deliverer

__all__ = ["ImapMailbox", "ImapStatistics"]

log = logging.getLogger("mailfleet.imap")

IDLE_MAX = 25 * 60.0
"""IDLE is re-issued at least this often (RFC 2177: servers may drop it after 30 minutes)."""

# Failures that are the network's or the server's: logged in one line, no traceback.
_EXPECTED = (OSError, TimeoutError, ImapError, MailfleetError, aioimaplib.AioImapException)


@dataclass(frozen=True, slots=True)
class ImapStatistics:
    """A snapshot of an :class:`ImapMailbox`."""

    connected: bool
    """A session is open and the mailbox selected."""
    idling: bool
    """The server has accepted IDLE and the source is waiting for its news."""
    uidvalidity: int | None
    """The mailbox's UIDVALIDITY as last seen."""
    last_uid: int | None
    """The highest UID taken from the mailbox under that UIDVALIDITY."""
    delivered: int
    """Messages handed to ``fleet.deliver`` since the source started."""
    skipped: int
    """Messages not delivered: the grant got them under an earlier UIDVALIDITY."""
    sessions: int
    """Sessions opened (the first connection and every reconnection)."""
    failures: int
    """Connection attempts and sessions that ended in an error."""
    last_error: str | None
    """The last error, without secrets."""


@dataclass(slots=True)
class _Position:
    uidvalidity: int
    uid: int
    ring: FingerprintRing


class ImapMailbox:
    """Feeds one IMAP mailbox to one grant; runs until cancelled (``serve``).

    It waits with IDLE when the server offers it (and ``config.idle``), else
    polls every ``poll_interval`` seconds. Each message is delivered once per
    UID with ``source_key = "<name>:<uidvalidity>:<uid>"``, then the cursor
    ``{"uidvalidity": V, "uid": last, "ring": [...]}`` advances: delivering
    again after a crash between the two is harmless (the key is idempotent).
    When the UIDVALIDITY changes, the mailbox is read again from UID 1,
    skipping the messages whose Message-ID the grant got under an earlier
    UIDVALIDITY (see :mod:`mailfleet_imap.fingerprints`). Any error closes the
    session and reconnects after an exponential, capped backoff.
    """

    def __init__(self, config: ImapConfig, /) -> None:
        self.config = config
        self.name = config.source_name
        self._connected = False
        self._idling = False
        self._uidvalidity: int | None = None
        self._last_uid: int | None = None
        self._delivered = 0
        self._skipped = 0
        self._sessions = 0
        self._failures = 0
        self._last_error: str | None = None
        self._healthy = False

    def __repr__(self) -> str:
        return f"ImapMailbox({self.name!r}, grant={self.config.grant!r})"

    def statistics(self) -> ImapStatistics:
        """What the source is doing and has done."""
        return ImapStatistics(
            connected=self._connected,
            idling=self._idling,
            uidvalidity=self._uidvalidity,
            last_uid=self._last_uid,
            delivered=self._delivered,
            skipped=self._skipped,
            sessions=self._sessions,
            failures=self._failures,
            last_error=self._last_error,
        )

    async def serve(self, fleet: Deliverer) -> None:
        """Deliver the mailbox's messages to the grant until cancelled; never raises otherwise."""
        config = self.config
        delay = config.backoff_initial
        grant_id: str | None = None
        while True:
            self._healthy = False
            failure: Exception | None = None
            try:
                if grant_id is None:
                    grant_id = (await fleet.grant(config.grant)).id
                await self._serve_session(fleet, grant_id)
            except Exception as exc:
                failure = exc
            finally:
                self._connected = self._idling = False
            if self._healthy:
                delay = config.backoff_initial
            if failure is not None:
                self._failed(failure, grant_id or config.grant, delay)
            if isinstance(failure, GrantNotFound):
                grant_id = None  # a grant provisioned again comes back with a new id
            await anyio.sleep(delay * random.uniform(0.8, 1.0))
            delay = min(delay * 2, config.backoff_max)

    def _failed(self, exc: Exception, grant: str, delay: float) -> None:
        self._failures += 1
        described = self._redact(f"{type(exc).__name__}: {exc}".rstrip(": "))
        self._last_error = described
        if isinstance(exc, _EXPECTED):
            log.warning(
                "imap %s (grant %s): %s; reconnecting in %.1fs", self.name, grant, described, delay
            )
        else:
            log.error(
                "imap %s (grant %s): unexpected error; reconnecting in %.1fs\n%s",
                self.name,
                grant,
                delay,
                self._redact("".join(traceback.format_exception(exc)).rstrip()),
            )

    def _redact(self, text: str) -> str:
        for secret in secret_forms(self.config):
            text = text.replace(secret, "********")
        return text

    async def _serve_session(self, fleet: Deliverer, grant_id: str) -> None:
        config = self.config
        async with open_session(config) as session:
            self._connected = True
            self._sessions += 1
            position = await self._position(fleet, grant_id, session)
            idle = config.idle and session.can_idle
            log.info(
                "imap %s (grant %s): connected, UIDVALIDITY %d, last UID %d, %s",
                self.name,
                grant_id,
                position.uidvalidity,
                position.uid,
                "waiting with IDLE" if idle else f"polling every {config.poll_interval:g}s",
            )
            while True:
                await self._sync(fleet, grant_id, session, position)
                self._healthy = True
                news = False
                if idle:
                    news = await session.wait_for_news(
                        min(config.poll_interval, IDLE_MAX), idling=self._set_idling
                    )
                else:
                    await anyio.sleep(config.poll_interval)
                if not news:  # the periodic check: is it still the same mailbox?
                    await session.reselect()
                    if session.uidvalidity != position.uidvalidity:
                        position = await self._position(fleet, grant_id, session)

    def _set_idling(self, idling: bool) -> None:
        self._idling = idling

    async def _position(self, fleet: Deliverer, grant_id: str, session: Session) -> _Position:
        """Where to resume: the cursor, unless the mailbox's UIDVALIDITY changed."""
        config = self.config
        validity = session.uidvalidity
        cursor = await fleet.cursor(grant_id, self.name)
        ring = FingerprintRing(fleet, grant_id, self.name, window=config.dedupe_window)
        if cursor is not None and not _valid_cursor(cursor):
            log.warning(
                "imap %s (grant %s): unreadable cursor %r, starting over",
                self.name,
                grant_id,
                cursor,
            )
            cursor = None
        await ring.load(None if cursor is None else cursor.get("ring"), validity)
        if cursor is None:
            uid = 0 if config.backfill else await session.highest_uid()
        elif cursor["uidvalidity"] == validity:
            uid = cursor["uid"]
        else:
            log.warning(
                "imap %s (grant %s): UIDVALIDITY changed from %d to %d; reading the mailbox "
                "again from UID 1, skipping the messages already delivered under the old one",
                self.name,
                grant_id,
                cursor["uidvalidity"],
                validity,
            )
            uid = 0
        position = _Position(validity, uid, ring)
        if cursor is None or cursor["uidvalidity"] != validity:
            await self._save(fleet, grant_id, position)
        self._uidvalidity, self._last_uid = validity, uid
        return position

    async def _sync(
        self, fleet: Deliverer, grant_id: str, session: Session, position: _Position
    ) -> None:
        """Deliver every message newer than the cursor, in UID order, batch by batch."""
        uids = await session.uids_after(position.uid)
        batch = self.config.fetch_batch
        for start in range(0, len(uids), batch):
            wanted = uids[start : start + batch]
            fetched = await session.fetch(wanted)
            for uid in wanted:
                raw = fetched.get(uid)
                if raw is not None:  # else expunged since the search
                    await self._take(fleet, grant_id, position, uid, raw)
                position.uid = self._last_uid = uid
            await self._save(fleet, grant_id, position)

    async def _take(
        self, fleet: Deliverer, grant_id: str, position: _Position, uid: int, raw: bytes
    ) -> None:
        print_ = fingerprint(raw)
        if position.ring.seen_before(print_):
            self._skipped += 1
            log.info(
                "imap %s (grant %s): UID %d skipped, delivered under an earlier UIDVALIDITY",
                self.name,
                grant_id,
                uid,
            )
        else:
            key = f"{self.name}:{position.uidvalidity}:{uid}"
            await self._deliver(fleet, grant_id, raw, key)
            self._delivered += 1
        position.ring.add(print_, position.uidvalidity)

    async def _deliver(self, fleet: Deliverer, grant_id: str, raw: bytes, key: str) -> None:
        """``fleet.deliver``, waiting while the grant's queue is full (backpressure)."""
        wait = min(0.5, self.config.poll_interval)
        while True:
            try:
                await fleet.deliver(grant_id, raw, source_key=key)
                return
            except MessageBlocked as exc:  # an inbound rule refused it: skipped, not retried
                log.info("imap %s (grant %s): %s; skipped", self.name, grant_id, exc)
                return
            except QueueFull:
                log.info(
                    "imap %s (grant %s): the grant's queue is full; waiting %.1fs",
                    self.name,
                    grant_id,
                    wait,
                )
            await anyio.sleep(wait)
            wait = min(wait * 2, max(self.config.poll_interval, 0.5), 30.0)

    async def _save(self, fleet: Deliverer, grant_id: str, position: _Position) -> None:
        await position.ring.save()
        await fleet.set_cursor(
            grant_id,
            self.name,
            {
                "uidvalidity": position.uidvalidity,
                "uid": position.uid,
                "ring": position.ring.position(),
            },
        )


def _valid_cursor(value: dict[str, Any]) -> bool:
    return all(
        isinstance(value.get(key), int) and not isinstance(value.get(key), bool)
        for key in ("uidvalidity", "uid")
    )
