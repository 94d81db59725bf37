"""A real HTTP receiver for the webhook tests: asyncio streams on 127.0.0.1, HTTP/1.1
with keep-alive, answering each POST with the status its test sets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook as Verifier

from mailfleet import Event, Fleet
from mailfleet.store.tables import events_table


@dataclass(frozen=True)
class Received:
    """One request as it came: path, lower-case headers, body."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def verified(self, secret: str) -> Any:
        """The envelope, once the ``standardwebhooks`` package verified it under ``secret``."""
        return Verifier(secret).verify(self.body, self.headers)


@dataclass
class Receiver:
    """Records every request; ``status`` (or ``answer(request)``) says what it answers."""

    status: int = 200
    answer: Callable[[Received], int] | None = None
    reply: bytes = b"ok"
    delay: float = 0.0
    """Seconds each answer waits."""
    keep: bool = True
    """Whether to record the requests (a benchmark's receiver does not)."""
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def ok(self) -> list[Received]:
        """The requests answered 2xx, in order."""
        return [r for r in self.received if 200 <= self._status_of(r) < 300]

    def _status_of(self, request: Received) -> int:
        return int(request.headers.get("x-answered", "0"))

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every open connection: further POSTs are refused."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _version = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Received(path, headers, body)
                status = self.answer(request) if self.answer is not None else self.status
                if self.delay:
                    await asyncio.sleep(self.delay)
                request.headers["x-answered"] = str(status)
                if self.keep:
                    self.received.append(request)
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-length: {len(self.reply)}\r\n"
                    "content-type: text/plain\r\n\r\n".encode()
                    + self.reply
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()


async def in_delivery_order(fleet: Fleet, events: list[Event]) -> list[Event]:
    """``events`` in the order webhooks deliver them: by their transaction, then id (on
    PostgreSQL two concurrent transactions may commit their ids out of order; on
    SQLite this is id order)."""
    ids = [e.id for e in events]

    def read(conn: sa.Connection) -> dict[int, int]:
        rows = conn.execute(
            sa.select(events_table.c.id, events_table.c.txid).where(events_table.c.id.in_(ids))
        )
        return {row.id: row.txid for row in rows}

    txids = await fleet.database.read(read)
    return sorted(events, key=lambda e: (txids[e.id], e.id))


@asynccontextmanager
async def receiver(**options: Any) -> AsyncIterator[Receiver]:
    """A receiver on a free loopback port for the duration of the block."""
    server = Receiver(**options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _serve_forever(port: int) -> None:
    server = Receiver(port=port, keep=False)
    await server.start()
    print(server.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":  # a receiver in a process of its own (benchmarks): PORT (0: any)
    import sys

    asyncio.run(_serve_forever(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
