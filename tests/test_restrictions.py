"""Restrictions: an operator blocks a grant, a workspace, a domain or the application from
sending (``restricted``, HTTP 403), whatever the rates, and lifts it; both recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mailfleet import Fleet, InvalidInput, NotFound, SendResult
from mailfleet.model.outbound import SendStatus

pytestmark = pytest.mark.anyio


async def send(fleet: Fleet, sender: str) -> SendResult:
    return await fleet.send(sender, "you@example.org", subject="Hi", text="Hello.")


@pytest.fixture
async def fleet(database_url: str) -> AsyncIterator[Fleet]:
    async with Fleet(database_url=database_url) as opened:
        for domain in ("example.com", "example.net"):
            await opened.add_domain(domain)
        await opened.create_workspace("outreach")
        await opened.provision("a@example.com", workspace="outreach")
        await opened.provision("b@example.com")
        await opened.provision("c@example.net")
        yield opened


@pytest.mark.parametrize(
    ("kind", "target", "blocked", "free"),
    [
        ("grant", "a@example.com", ["a@example.com"], ["b@example.com", "c@example.net"]),
        ("workspace", "outreach", ["a@example.com"], ["b@example.com", "c@example.net"]),
        ("domain", "example.com", ["a@example.com", "b@example.com"], ["c@example.net"]),
        ("application", "any", ["a@example.com", "b@example.com", "c@example.net"], []),
    ],
)
async def test_every_scope_blocks_its_grants_until_lifted(
    fleet: Fleet, kind: str, target: str, blocked: list[str], free: list[str]
) -> None:
    await fleet.restrict(target, kind=kind, reason="spam complaints from a partner", by="abuse")
    for sender in blocked:
        result = await send(fleet, sender)
        assert result.status is SendStatus.RESTRICTED, (sender, result)
        detail = result.detail or ""
        assert detail in ("grant_restricted", f"{kind}_restricted: spam complaints from a partner")
    for sender in free:
        assert (await send(fleet, sender)).ok
    (event,) = await fleet.events(type=f"{kind}.restricted")
    assert (event.payload["reason"], event.payload["by"]) == (
        "spam complaints from a partner",
        "abuse",
    )

    assert await fleet.lift(target, kind=kind, reason="partner confirmed a mistake", by="abuse")
    assert not await fleet.lift(target, kind=kind, reason="again", by="abuse")  # nothing left
    for sender in blocked:
        assert (await send(fleet, sender)).ok
    (lifted,) = await fleet.events(type=f"{kind}.restriction_lifted")
    assert lifted.payload["reason"] == "partner confirmed a mistake"


async def test_a_restriction_says_who_and_why_on_a_subject_that_exists(fleet: Fleet) -> None:
    with pytest.raises(InvalidInput, match="reason"):
        await fleet.restrict("a@example.com", reason="", by="abuse")
    with pytest.raises(InvalidInput, match="kind"):
        await fleet.restrict("a@example.com", reason="x", kind="continent")
    with pytest.raises(NotFound):
        await fleet.restrict("nowhere.example.org", reason="x", kind="domain")
    with pytest.raises(NotFound):
        await fleet.restrict("nobody@example.com", reason="x")
