"""Scopes: two applications, and two agent classes within one, on one database.

Every fleet serves one application and the agent classes it runs; its worker
claims only those grants, its sender sends only that application's outbox,
through its own relay. A grant whose class nobody serves keeps its mail until
a process that serves it starts. Each test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from email import message_from_bytes
from typing import Any, ClassVar

import anyio
import pytest

from mailfleet import (
    Agent,
    Conflict,
    Fleet,
    GrantNotFound,
    InboundMessage,
    SendStatus,
)
from relay import RelayPeer, relay_peer
from support import wait_until

pytestmark = pytest.mark.anyio

# These tests are about scoping, not leases: a lease long enough that a loaded machine's
# slow renewal never suspends a handler (its rerun, allowed by at-least-once, would
# break the exact counts asserted here).
FAST = {
    "poll_interval": 0.05,
    "lease_ttl": 10.0,
    "handler_timeout": 5.0,
    "shutdown_grace": 2.0,
    "plugins": "",
}
PER_GRANT = 15


class Handled:
    """What every handler saw: (application, class, grant address, subject), in order."""

    runs: ClassVar[list[tuple[str, str, str, str]]] = []

    @classmethod
    def reset(cls) -> None:
        cls.runs = []


class Red(Agent):
    async def on_message(self, message: InboundMessage) -> None:
        Handled.runs.append((self.grant.application_id, "Red", self.address, message.subject or ""))
        await self.reply(message, text=f"red saw {message.subject}")


class Blue(Agent):
    async def on_message(self, message: InboundMessage) -> None:
        Handled.runs.append(
            (self.grant.application_id, "Blue", self.address, message.subject or "")
        )
        await self.reply(message, text=f"blue saw {message.subject}")


def mail(to: str, subject: str) -> bytes:
    return (
        f"From: someone@outside.example\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}.{to}@outside.example>\r\n\r\nHello.\r\n"
    ).encode()


def fleet_of(url: str, application: str, agent: type[Agent], relay: RelayPeer) -> Fleet:
    return Fleet(
        database_url=url,
        application=application,
        agents=[agent],
        relay_host="127.0.0.1",
        relay_port=relay.port,
        relay_starttls=False,
        **FAST,
    )


@asynccontextmanager
async def serving(*fleets: Fleet) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        for fleet in fleets:
            await tg.start(fleet.serve)
        yield
        tg.cancel_scope.cancel()


def claimed_elsewhere(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Warnings of workers that took a grant they do not serve (claims must never)."""
    return [r.getMessage() for r in caplog.records if "does not serve grant" in r.getMessage()]


async def test_each_message_is_handled_by_its_own_class_of_its_own_application(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    Handled.reset()
    async with relay_peer() as alpha_relay, relay_peer() as beta_relay, AsyncExitStack() as stack:
        alpha_red = await stack.enter_async_context(
            fleet_of(database_url, "alpha", Red, alpha_relay)
        )
        alpha_blue = await stack.enter_async_context(
            fleet_of(database_url, "alpha", Blue, alpha_relay)
        )
        # The same class runs in the other application: it must not take alpha's grants.
        beta_red = await stack.enter_async_context(fleet_of(database_url, "beta", Red, beta_relay))
        await alpha_red.add_domain("alpha.example")
        await beta_red.add_domain("beta.example")
        grants = {
            "red@alpha.example": await alpha_red.provision("red@alpha.example", agent=Red),
            "blue@alpha.example": await alpha_red.provision("blue@alpha.example", agent=Blue),
            "red@beta.example": await beta_red.provision("red@beta.example", agent=Red),
        }
        owners = {"red@alpha.example": alpha_red, "blue@alpha.example": alpha_blue}
        owners["red@beta.example"] = beta_red
        async with serving(alpha_red, alpha_blue, beta_red):
            for n in range(PER_GRANT):
                for address, grant in grants.items():
                    await owners[address].deliver(grant, mail(address, f"m{n:02d}"))
            expected = PER_GRANT * len(grants)
            await wait_until(lambda: len(Handled.runs) >= expected, within=30)
            await wait_until(
                lambda: len(alpha_relay.received) + len(beta_relay.received) >= expected,
                within=30,
            )
            await anyio.sleep(0.3)  # a wrongly taken message would show up by now

    by_grant: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for application_id, kind, address, subject in Handled.runs:
        by_grant[address].append((application_id, kind, subject))
    subjects = [f"m{n:02d}" for n in range(PER_GRANT)]
    for address, grant in grants.items():
        runs = by_grant[address]
        assert [subject for _, _, subject in runs] == subjects, address  # all, once, in order
        assert {application for application, _, _ in runs} == {grant.application_id}
        assert {kind for _, kind, _ in runs} == {"Blue" if address.startswith("blue") else "Red"}
    # Each application's replies went out through its own relay, and only its own.
    senders = Counter(message_from_bytes(m.data)["From"] for m in alpha_relay.received)
    assert senders == {"red@alpha.example": PER_GRANT, "blue@alpha.example": PER_GRANT}
    senders = Counter(message_from_bytes(m.data)["From"] for m in beta_relay.received)
    assert senders == {"red@beta.example": PER_GRANT}
    assert claimed_elsewhere(caplog) == []


async def test_a_grant_nobody_serves_keeps_its_mail_until_its_class_runs(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    Handled.reset()
    async with relay_peer() as relay:
        async with fleet_of(database_url, "alpha", Red, relay) as reds:
            await reds.add_domain("alpha.example")
            red = await reds.provision("red@alpha.example", agent=Red)
            blue = await reds.provision("blue@alpha.example", agent=Blue)
            async with serving(reds):
                for n in range(5):
                    await reds.deliver(blue, mail(blue.address, f"b{n}"))
                    await reds.deliver(red, mail(red.address, f"r{n}"))
                await reds.wait_idle()  # what this fleet serves
                await anyio.sleep(0.5)  # several polls: the worker must leave blue alone
                stats = await reds.statistics()
                unserved = await reds.unserved_grants()
            assert [subject for *_, subject in Handled.runs] == [f"r{n}" for n in range(5)]
            assert stats.serving
            assert stats.live_workers == 1
            assert (stats.unserved_grants, stats.unserved_waiting) == (1, 5)
            assert stats.waiting == 5
            assert [(u.grant.address, u.waiting) for u in unserved] == [(blue.address, 5)]
            # Nobody serves now: both are unserved, and red has nothing waiting.
            stopped = await reds.statistics()
            assert (stopped.serving, stopped.live_workers, stopped.unserved_grants) == (False, 0, 2)

        async with fleet_of(database_url, "alpha", Blue, relay) as blues:
            async with serving(blues):
                with anyio.fail_after(20):
                    await blues.wait_idle()
                assert (await blues.statistics()).unserved_waiting == 0
        assert [subject for _, kind, _, subject in Handled.runs if kind == "Blue"] == [
            f"b{n}" for n in range(5)
        ]
    assert claimed_elsewhere(caplog) == []


class Anything(Agent):
    seen: ClassVar[list[str]] = []

    async def on_message(self, message: InboundMessage) -> None:
        self.seen.append(self.address)


async def test_the_default_agent_serves_grants_provisioned_without_a_class(
    database_url: str,
) -> None:
    Anything.seen = []
    settings: dict[str, Any] = {"database_url": database_url, "application": "alpha", **FAST}
    async with Fleet(default_agent=Anything, **settings) as fleet:
        await fleet.add_domain("alpha.example")
        plain = await fleet.provision("plain@alpha.example")
        typed = await fleet.provision("typed@alpha.example", agent=Blue)
        await fleet.deliver(plain, mail(plain.address, "p"))
        await fleet.deliver(typed, mail(typed.address, "t"))
        async with serving(fleet):
            await fleet.wait_idle()
            await anyio.sleep(0.3)
            unserved = [u.grant.address for u in await fleet.unserved_grants()]
    assert Anything.seen == [plain.address]  # never a class the grant was not given
    assert unserved == [typed.address]


async def test_a_fleet_sees_and_sends_for_its_own_application_only(database_url: str) -> None:
    settings: dict[str, Any] = {"database_url": database_url, **FAST}
    async with Fleet(application="alpha", **settings) as alpha:
        async with Fleet(application="beta", **settings) as beta:
            await alpha.add_domain("alpha.example")
            grant = await alpha.provision("a@alpha.example")
            await alpha.set_cursor(grant.id, "imap:x", {"uid": 7})
            with pytest.raises(GrantNotFound):
                await beta.grant(grant.id)
            with pytest.raises(GrantNotFound):
                await beta.deliver(grant.id, mail(grant.address, "x"))
            with pytest.raises(GrantNotFound):
                await beta.send(grant.id, "x@outside.example", subject="s", text="t")
            with pytest.raises(GrantNotFound):
                await beta.set_cursor(grant.id, "imap:x", {"uid": 8})
            assert await beta.cursor(grant.id, "imap:x") is None
            assert await alpha.cursor(grant.id, "imap:x") == {"uid": 7}
            result = await alpha.send(grant, "x@outside.example", subject="s", text="t")
            assert result.status is SendStatus.QUEUED
            assert await beta.outbox() == []
            assert [view.grant_id for view in await alpha.outbox()] == [grant.id]


async def test_binding_a_class_while_serving_is_refused(database_url: str) -> None:
    async with Fleet(database_url=database_url, application="alpha", agents=[Red], **FAST) as fleet:
        async with serving(fleet):
            with pytest.raises(Conflict, match="before serve"):
                fleet.bind(Blue)


async def test_concurrent_sends_each_find_their_own_grant(database_url: str) -> None:
    """Concurrent sends share one lookup of their grants: each still gets its own grant,
    by id or address in any case, and an unknown or another application's grant is
    each caller's own GrantNotFound."""
    settings: dict[str, Any] = {"database_url": database_url, **FAST}
    async with Fleet(application="alpha", **settings) as alpha:
        async with Fleet(application="beta", **settings) as beta:
            await alpha.add_domain("alpha.example")
            await beta.add_domain("beta.example")
            mine = [await alpha.provision(f"a{n}@alpha.example") for n in range(5)]
            theirs = await beta.provision("b@beta.example")
            keys = [
                *(g.id for g in mine),
                *(g.address.upper() for g in mine),
                theirs.id,
                theirs.address,
                "no-such-id",
                "nobody@alpha.example",
            ]
            outcomes: dict[str, object] = {}

            async def send(key: str) -> None:
                try:
                    result = await alpha.send(key, "x@outside.example", subject=key, text="t")
                except GrantNotFound as exc:
                    outcomes[key] = exc
                else:
                    outcomes[key] = result.status

            async with anyio.create_task_group() as tg:
                for key in keys:
                    tg.start_soon(send, key)
            by_grant = Counter(view.grant_id for view in await alpha.outbox())
            assert await beta.outbox() == []
    assert by_grant == {g.id: 2 for g in mine}  # by id and by address
    for key in keys[:10]:
        assert outcomes[key] is SendStatus.QUEUED, key
    for key in keys[10:]:
        assert isinstance(outcomes[key], GrantNotFound), key
        assert key in str(outcomes[key])
