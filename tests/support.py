"""Small helpers shared by the tests."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def wait_until(condition: Callable[[], bool], *, within: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``within`` seconds."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - the condition is plain state, not an event
            await anyio.sleep(0.01)
