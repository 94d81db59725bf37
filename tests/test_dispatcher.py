"""The in-memory dispatcher: order per key, one handler per key, bounds, retries, idleness."""

from __future__ import annotations

import random
from collections import defaultdict

import anyio
import anyio.lowlevel
import pytest

from mailfleet.runtime.dispatcher import Dispatcher, QueueFull

pytestmark = pytest.mark.anyio


async def test_order_per_key_and_never_two_handlers_of_one_key() -> None:
    seen: dict[int, list[int]] = defaultdict(list)
    running: dict[int, int] = defaultdict(int)
    overlap = 0
    concurrent = 0
    peak = 0

    async def handle(key: int, item: int) -> None:
        nonlocal overlap, concurrent, peak
        running[key] += 1
        concurrent += 1
        peak = max(peak, concurrent)
        overlap += running[key] > 1
        await anyio.sleep(random.random() / 1000)  # let other keys interleave
        seen[key].append(item)
        running[key] -= 1
        concurrent -= 1

    dispatcher: Dispatcher[int, int] = Dispatcher(handle, concurrency=16, batch=3)
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.serve)
        for n in range(3000):
            dispatcher.put_nowait(n % 50, n)
            if n % 97 == 0:
                await anyio.lowlevel.checkpoint()
        with anyio.fail_after(30):
            await dispatcher.wait_idle()
        tg.cancel_scope.cancel()

    assert overlap == 0
    assert 1 < peak <= 16  # keys ran side by side, within the limit
    for key, items in seen.items():
        assert items == list(range(key, 3000, 50))
    assert dispatcher.statistics().handled == 3000


async def test_a_full_queue_is_reported_to_the_producer() -> None:
    release = anyio.Event()

    async def handle(key: str, item: int) -> None:
        await release.wait()

    dispatcher: Dispatcher[str, int] = Dispatcher(handle, concurrency=1, queue_limit=3)
    for n in range(3):
        dispatcher.put_nowait("g", n)
    assert not dispatcher.has_room("g")
    with pytest.raises(QueueFull, match="full"):
        dispatcher.put_nowait("g", 3)
    dispatcher.put_nowait("other", 0)  # other keys are unaffected
    assert dispatcher.queued("g") == 3
    assert dispatcher.statistics().queued == 4
    assert dispatcher.discard("g") == 3
    assert dispatcher.has_room("g")


async def test_a_delay_retries_the_item_first_and_keeps_order() -> None:
    seen: list[tuple[str, int]] = []
    failures = {1: 2}  # item 1 asks for a retry twice

    async def handle(key: str, item: int) -> float | None:
        if failures.get(item):
            failures[item] -= 1
            seen.append(("retry", item))
            return 0.01
        seen.append(("ok", item))
        return None

    dispatcher: Dispatcher[str, int] = Dispatcher(handle, concurrency=4)
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.serve)
        for n in range(4):
            dispatcher.put_nowait("g", n)
        with anyio.fail_after(5):
            await dispatcher.wait_idle()
        tg.cancel_scope.cancel()
    assert seen == [
        ("ok", 0),
        ("retry", 1),
        ("retry", 1),
        ("ok", 1),
        ("ok", 2),
        ("ok", 3),
    ]


async def test_idle_keys_are_deactivated_and_come_back() -> None:
    retired: list[str] = []
    handled: list[str] = []
    changed = anyio.Event()

    async def handle(key: str, item: int) -> None:
        handled.append(key)

    async def deactivate(key: str) -> None:
        nonlocal changed
        retired.append(key)
        changed.set()

    async def wait_retired(count: int) -> None:
        nonlocal changed
        with anyio.fail_after(5):
            while len(retired) < count:
                await changed.wait()
                changed = anyio.Event()

    dispatcher: Dispatcher[str, int] = Dispatcher(handle, idle_timeout=0.05, deactivate=deactivate)
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.serve)
        dispatcher.put_nowait("a", 1)
        dispatcher.put_nowait("b", 1)
        await wait_retired(2)
        assert sorted(retired) == ["a", "b"]
        assert dispatcher.statistics().active_keys == 0
        dispatcher.put_nowait("a", 2)
        await wait_retired(3)
        tg.cancel_scope.cancel()
    assert handled.count("a") == 2
    assert retired[-1] == "a"


async def test_a_raising_handler_does_not_stop_the_dispatcher(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[int] = []

    async def handle(key: str, item: int) -> None:
        if item == 0:
            raise RuntimeError("boom")
        seen.append(item)

    dispatcher: Dispatcher[str, int] = Dispatcher(handle)
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.serve)
        for n in range(3):
            dispatcher.put_nowait("g", n)
        with anyio.fail_after(5):
            await dispatcher.wait_idle()
        tg.cancel_scope.cancel()
    assert seen == [1, 2]
    assert "dispatch handler failed for g" in caplog.text


def test_bad_limits_are_refused() -> None:
    async def handle(key: str, item: int) -> None:
        return None

    with pytest.raises(ValueError, match="at least 1"):
        Dispatcher(handle, concurrency=0)
