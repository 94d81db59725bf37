"""The outbound gate on recipient domains: does each recipient's domain accept mail?"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ..auth.dns import Resolver

__all__ = ["RecipientDomains"]

log = logging.getLogger("mailfleet.outbox")


class RecipientDomains:
    """The outbound gate on recipient domains: which recipients' domains accept no mail.

    The fleet's own domains (``owns_domain``) are never looked up: their grants
    receive locally. Whether a domain is the fleet's is remembered for a minute;
    the DNS answers for their TTL, in the resolver's cache.
    """

    _OWNED_SECONDS = 60.0

    def __init__(
        self, resolver: Callable[[], Resolver], owns_domain: Callable[[str], Awaitable[bool]]
    ) -> None:
        self._resolver = resolver
        self._owns_domain = owns_domain
        self._owned: dict[str, tuple[float, bool]] = {}

    async def refused(self, recipients: Sequence[str]) -> list[tuple[str, str]]:
        """``(address, reason)`` for each recipient whose domain refuses mail."""
        from ..auth.recipients import check_recipient_domain

        domains = {address.rsplit("@", 1)[1] for address in recipients}
        verdicts: dict[str, str] = {}

        async def judge(domain: str) -> None:
            if await self._owned_domain(domain):
                return
            verdict = await check_recipient_domain(self._resolver(), domain)
            if verdict.accepts is False:
                verdicts[domain] = verdict.reason
            elif verdict.accepts is None:
                log.debug("recipient domain not checked: %s", verdict.reason)

        if len(domains) == 1:
            await judge(next(iter(domains)))
        else:
            async with anyio.create_task_group() as tasks:
                for domain in domains:
                    tasks.start_soon(judge, domain)
        return [
            (address, verdicts[domain])
            for address in recipients
            if (domain := address.rsplit("@", 1)[1]) in verdicts
        ]

    async def _owned_domain(self, domain: str) -> bool:
        now = time.monotonic()
        known = self._owned.get(domain)
        if known is not None and now - known[0] < self._OWNED_SECONDS:
            return known[1]
        if len(self._owned) > 10_000:
            self._owned.clear()
        owned = await self._owns_domain(domain)
        self._owned[domain] = (now, owned)
        return owned
