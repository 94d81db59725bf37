"""Small helpers shared by the tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio


async def wait_until(condition: Callable[[], bool], *, within: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``within`` seconds."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - the condition is plain state, not an event
            await anyio.sleep(0.01)


async def wait_for_events(fleet: Any, kind: str, *, count: int = 1, within: float = 20.0) -> None:
    """Wait until the fleet's outbox holds ``count`` events of type ``kind``."""
    with anyio.fail_after(within):
        while len(await fleet.events(type=kind, limit=10_000)) < count:  # noqa: ASYNC110
            await anyio.sleep(0.02)
