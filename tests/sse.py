"""A Server-Sent Events reader for the tests: the events of a streaming httpx response.

A task reads the response and parses it into a memory stream, so a test may wait for
the next event with a time limit without cutting the response's reader in the middle.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


@dataclass(frozen=True)
class SseEvent:
    """One event as the stream framed it."""

    id: str
    event: str
    data: dict[str, Any]


@dataclass(frozen=True)
class SseComment:
    """A comment line (``: keep-alive``)."""

    text: str


class SseReader:
    """The events and comments of one stream, in order."""

    def __init__(self, received: MemoryObjectReceiveStream[SseEvent | SseComment]) -> None:
        self._received = received

    async def _item(self, within: float) -> SseEvent | SseComment:
        with anyio.fail_after(within):
            try:
                return await self._received.receive()
            except anyio.EndOfStream:
                raise EOFError("the stream ended") from None

    async def next(self, *, within: float = 10.0) -> SseEvent:
        """The next event (comments skipped); fail after ``within`` seconds without one."""
        with anyio.fail_after(within):
            while True:
                item = await self._item(within)
                if isinstance(item, SseEvent):
                    return item

    async def take(self, count: int, *, within: float = 10.0) -> list[SseEvent]:
        """The next ``count`` events."""
        return [await self.next(within=within) for _ in range(count)]

    async def nothing_for(self, seconds: float) -> None:
        """Assert that no event arrives for ``seconds``."""
        with anyio.move_on_after(seconds):
            event = await self.next(within=seconds + 1)
            raise AssertionError(f"an unexpected event: {event}")

    async def comment(self, *, within: float = 10.0) -> str:
        """The next item, which must be a comment."""
        item = await self._item(within)
        assert isinstance(item, SseComment), f"an event before a comment: {item}"
        return item.text


async def _parse(
    response: httpx.Response, sink: MemoryObjectSendStream[SseEvent | SseComment]
) -> None:
    async with sink:
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if not line:
                if "data" in fields:
                    data = json.loads(fields["data"])
                    await sink.send(SseEvent(fields["id"], fields["event"], data))
                fields = {}
            elif line.startswith(":"):
                await sink.send(SseComment(line[1:].strip()))
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, *, params: Any = None, headers: dict[str, str] | None = None
) -> AsyncIterator[SseReader]:
    """``GET /v1/events/stream`` over a real socket, read as events; closed at the end."""
    async with client.stream(
        "GET", "/v1/events/stream", params=params, headers=headers
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        sink, received = anyio.create_memory_object_stream[SseEvent | SseComment](10_000)
        async with anyio.create_task_group() as tg, received:
            tg.start_soon(_parse, response, sink)
            reader = SseReader(received)
            assert await reader.comment(within=10) == "connected"
            yield reader
            tg.cancel_scope.cancel()
