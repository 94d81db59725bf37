"""The runtime's side of the MX: recipients are grants, accepted mail goes to ``deliver``."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from email.utils import formatdate

import anyio

from ..model.addresses import parse_address
from ..model.errors import GrantNotFound, InvalidInput, QueueFull
from ..model.messages import StoredMessage
from ..model.policy import PLATFORM_MAX_MESSAGE_BYTES
from ..model.records import Grant, GrantStatus
from ..transports.smtp_in import Accepted, MxContext, Recipient

__all__ = ["FleetMx"]

Lookup = Callable[[str], Awaitable[Grant | None]]
Deliver = Callable[..., Awaitable[StoredMessage]]


class FleetMx(MxContext):
    """Accepts mail for the fleet's grants and hands it to ``Fleet.deliver``."""

    def __init__(
        self, lookup: Lookup, deliver: Deliver, *, hostname: str, cache_seconds: float = 1.0
    ) -> None:
        self._lookup = lookup
        self._deliver = deliver
        self._hostname = hostname
        self._cache_seconds = cache_seconds
        # address -> (looked up at, grant): RCPT lookups are mostly repeats; a
        # policy or status change is seen within ``cache_seconds``.
        self._cache: dict[str, tuple[float, Grant | None]] = {}
        # address -> bytes stored since its grant was looked up
        self._grown: dict[str, int] = {}
        self._dated = (0, "")

    async def _grant(self, address: str) -> Grant | None:
        now = time.monotonic()
        hit = self._cache.get(address)
        if hit is not None and now - hit[0] < self._cache_seconds:
            return hit[1]
        if len(self._cache) > 10_000:
            self._cache.clear()
            self._grown.clear()
        grant = await self._lookup(address)
        self._cache[address] = (now, grant)
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

    async def recipient(self, address: str) -> Recipient | None:
        """The grant behind ``address``, with its workspace's limits."""
        try:
            normal = str(parse_address(address))
        except InvalidInput:
            return None
        grant = await self._grant(normal)
        if grant is None or grant.status is GrantStatus.DELETED:
            return None
        policy = grant.policy
        return Recipient(
            address=normal,
            grant_id=grant.id,
            max_message_bytes=policy.max_message_bytes,
            storage_left=policy.storage_limit_bytes
            - grant.stored_bytes
            - self._grown.get(normal, 0),
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
        that retries after a 4xx (or a lost 250) does not store it twice.
        """
        key = "smtp:" + hashlib.sha256(data).hexdigest()[:48]
        trace = (
            f"Return-Path: <{mail_from}>\r\n"
            f"Received: from {helo or 'unknown'} ([{peer}])\r\n"
            f"\tby {self._hostname} (mailfleet) with ESMTP;\r\n"
            f"\t{self._date()}\r\n"
        ).encode()
        stored: list[str] = []
        failures: list[Exception] = []

        async def one(recipient: Recipient) -> None:
            try:
                message = await self._deliver(recipient.grant_id, trace + data, source_key=key)
            except (QueueFull, GrantNotFound) as exc:
                failures.append(exc)
            else:
                stored.append(message.id)
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
        if failures:
            if any(isinstance(f, QueueFull) for f in failures):
                return Accepted("451 4.3.0 Mailbox busy, please try again later")
            return Accepted("450 4.2.0 Mailbox unavailable, please try again later")
        return Accepted(f"250 2.0.0 Ok: queued as {stored[0]}")
