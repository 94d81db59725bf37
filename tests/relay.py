"""A real SMTP relay peer for the tests: aiosmtpd on 127.0.0.1, answering from a script."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class RelayPeer:
    """Records what it accepts; ``data_replies`` / ``rcpt_replies`` script its answers."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    connections: int = 0
    data_commands: int = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_commands += 1
        if self.data_replies:
            reply = self.data_replies.pop(0)
            if not reply.startswith("250"):
                return reply
        data = envelope.original_content or b""
        self.received.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos), data))
        return "250 2.0.0 Ok: queued"


@asynccontextmanager
async def relay_peer(peer: RelayPeer | None = None) -> AsyncIterator[RelayPeer]:
    """An aiosmtpd relay on a free loopback port, for the duration of the block
    (``peer``: a :class:`RelayPeer` of the test's own, e.g. a subclass)."""
    peer = RelayPeer() if peer is None else peer

    def factory() -> SMTP:
        peer.connections += 1
        return SMTP(peer, enable_SMTPUTF8=True)

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        await server.wait_closed()
