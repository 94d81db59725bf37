"""The helpdesk example answers each message in its thread."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import anyio
import pytest

from mailfleet import Agent, Fleet

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "helpdesk" / "helpdesk.py"


def load_helpdesk() -> type[Agent]:
    spec = importlib.util.spec_from_file_location("helpdesk_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    helpdesk: type[Agent] = module.Helpdesk
    return helpdesk


async def test_the_helpdesk_replies_in_thread(database_url: str) -> None:
    helpdesk = load_helpdesk()
    async with Fleet(database_url=database_url, poll_interval=0.05) as fleet:
        help_desk, _ = await fleet.register(helpdesk)
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.serve)
            for n in (1, 2):
                await fleet.deliver(
                    "help@example.com",
                    (
                        f"From: Ada <ada@example.org>\r\nTo: help@example.com\r\n"
                        f"Subject: Printer {n}\r\nMessage-ID: <p{n}@example.org>\r\n\r\nHelp!\r\n"
                    ).encode(),
                )
            with anyio.fail_after(20):
                await fleet.wait_idle()
            tg.cancel_scope.cancel()
        replies = await fleet.events(type="message.queued")
        assert [r.payload["subject"] for r in replies] == ["Re: Printer 1", "Re: Printer 2"]
        assert {r.grant_id for r in replies} == {help_desk.id}
        assert replies[0].payload["to"] == ["ada@example.org"]
        assert await fleet.agent_state(help_desk.id) == {"tickets": 2}
