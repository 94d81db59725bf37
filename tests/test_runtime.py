"""The agent runtime over real databases: order, exclusivity, durability, retries, isolation."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import anyio
import pytest
import sqlalchemy as sa

from mailfleet import (
    Agent,
    Fleet,
    GrantNotFound,
    GrantStatus,
    InboundMessage,
    InvalidAgent,
    InvalidInput,
    QueueFull,
    SendResult,
    SendStatus,
)
from mailfleet.runtime.host import AgentHost
from mailfleet.runtime.worker import Worker, WorkerSettings
from mailfleet.store.scope import Scope, ServedAgents
from mailfleet.store.tables import leases_table
from support import wait_until

pytestmark = pytest.mark.anyio

FAST = {
    "poll_interval": 0.05,
    "lease_ttl": 3.0,
    "retry_base": 0.02,
    "retry_max": 0.05,
    "handler_timeout": 2.0,
    "shutdown_grace": 2.0,
}


def mail(subject: str, *, sender: str = "someone@example.org", extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: agent@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.org>\r\n{extra}\r\nHello.\r\n"
    ).encode()


@asynccontextmanager
async def serving(fleet: Fleet) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.serve)
        yield
        tg.cancel_scope.cancel()


async def open_fleet(database_url: str, agent: type[Agent], **settings: Any) -> Fleet:
    fleet = Fleet(database_url=database_url, application="test", **{**FAST, **settings})
    fleet.bind(agent)
    return fleet


class Recorder(Agent):
    """Records what it sees, per grant, and checks it never runs twice at once."""

    seen: ClassVar[dict[str, list[str]]] = defaultdict(list)
    running: ClassVar[dict[str, int]] = defaultdict(int)
    overlaps: ClassVar[int] = 0

    async def on_message(self, message: InboundMessage) -> None:
        type(self).running[self.grant.id] += 1
        if type(self).running[self.grant.id] > 1:
            type(self).overlaps += 1
        await anyio.sleep(0.001 * (hash(message.id) % 3))
        type(self).seen[self.grant.id].append(message.subject or "")
        self.state["count"] = self.state.get("count", 0) + 1
        type(self).running[self.grant.id] -= 1

    @classmethod
    def reset(cls) -> None:
        cls.seen = defaultdict(list)
        cls.running = defaultdict(int)
        cls.overlaps = 0


async def test_order_per_grant_and_one_handler_at_a_time(database_url: str) -> None:
    Recorder.reset()
    async with await open_fleet(database_url, Recorder, concurrency=8) as fleet:
        await fleet.add_domain("example.com")
        results = await fleet.provision_many(
            [f"a{i}@example.com" for i in range(20)], agent=Recorder
        )
        ids = [r.grant.id for r in results if r.grant]
        async with serving(fleet):

            async def produce(offset: int) -> None:
                for n in range(offset, 400, 4):
                    await fleet.deliver(ids[n % 20], mail(f"{n}"))

            async with anyio.create_task_group() as tg:
                for offset in range(4):
                    tg.start_soon(produce, offset)
            with anyio.fail_after(30):
                await fleet.wait_idle()
        assert Recorder.overlaps == 0
        assert sum(len(v) for v in Recorder.seen.values()) == 400
        for subjects in Recorder.seen.values():
            numbers = [int(s) for s in subjects]
            assert numbers == sorted(numbers)
        assert await fleet.agent_state(ids[0]) == {"count": 20}


class Lifecycle(Agent):
    events: ClassVar[list[str]] = []

    async def on_start(self) -> None:
        self.events.append(f"start:{self.state.get('count', 0)}")

    async def on_message(self, message: InboundMessage) -> None:
        self.state["count"] = self.state.get("count", 0) + 1
        self.events.append(f"message:{message.subject}")

    async def on_stop(self) -> None:
        self.state["stopped"] = True
        self.events.append("stop")


async def test_idle_agents_stop_and_come_back_with_their_state(database_url: str) -> None:
    Lifecycle.events = []
    async with await open_fleet(database_url, Lifecycle, idle_timeout=0.2) as fleet:
        await fleet.add_domain("example.com")
        grant = await fleet.provision("life@example.com", agent=Lifecycle)
        async with serving(fleet):
            await fleet.deliver(grant, mail("one"))
            await wait_until(lambda: "stop" in Lifecycle.events)
            await fleet.deliver(grant.address, mail("two"))
            await wait_until(lambda: Lifecycle.events.count("stop") == 2)
        assert Lifecycle.events == [
            "start:0",
            "message:one",
            "stop",
            "start:1",
            "message:two",
            "stop",
        ]
        assert await fleet.agent_state(grant.id) == {"count": 2, "stopped": True}


async def test_unfinished_work_resumes_in_order_after_a_restart(database_url: str) -> None:
    Recorder.reset()
    async with await open_fleet(database_url, Recorder) as fleet:
        await fleet.add_domain("example.com")
        grant = await fleet.provision("resume@example.com", agent=Recorder)
        for n in range(30):
            await fleet.deliver(grant, mail(f"{n}"))  # committed, nobody serving yet
    assert Recorder.seen == {}

    async with await open_fleet(database_url, Recorder) as fleet:
        async with serving(fleet):
            with anyio.fail_after(20):
                await fleet.wait_idle()
    assert Recorder.seen[grant.id] == [str(n) for n in range(30)]


class Slow(Agent):
    """Takes a while per message, so the worker holds loaded, unfinished work."""

    seen: ClassVar[list[str]] = []

    async def on_message(self, message: InboundMessage) -> None:
        await anyio.sleep(0.05)
        self.seen.append(message.subject or "")


async def test_a_lapsed_lease_of_a_running_grant_is_renewed_not_reloaded(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat came late and the lease expired while the worker still runs the
    grant: the next claim takes it back, and nothing already loaded runs twice."""
    Slow.seen = []
    async with await open_fleet(database_url, Slow, lease_ttl=30.0) as fleet:
        await fleet.add_domain("example.com")
        grant = await fleet.provision("slow@example.com", agent=Slow)
        for n in range(20):
            await fleet.deliver(grant, mail(f"{n}"))
        async with serving(fleet):
            await wait_until(lambda: len(Slow.seen) >= 2)
            await fleet.database.write(
                lambda c: c.execute(sa.update(leases_table).values(expires_at=0.0))
            )
            await fleet.deliver(grant, mail("20"))  # wakes the claimer at once
            with anyio.fail_after(20):
                await fleet.wait_idle()
    assert Slow.seen == [str(n) for n in range(21)]  # each once, in order
    assert "leases of 1 grants lapsed" in caplog.text


class NoSending:
    """The context of an agent that never sends."""

    async def send(self, *args: Any, **kwargs: Any) -> SendResult:
        raise AssertionError("this agent does not send")


class Stuck(Agent):
    """Hangs while ``blocked``: the worker running it can be killed mid-message."""

    blocked: ClassVar[bool] = True
    seen: ClassVar[list[str]] = []

    async def on_message(self, message: InboundMessage) -> None:
        if self.blocked:
            await anyio.sleep_forever()
        self.seen.append(message.subject or "")


async def test_a_dead_workers_grants_are_taken_over_after_its_lease(database_url: str) -> None:
    """A worker that stops without draining (as if killed) keeps its leases until they expire."""
    Stuck.blocked, Stuck.seen = True, []
    async with await open_fleet(database_url, Stuck, lease_ttl=0.5) as fleet:
        await fleet.add_domain("example.com")
        grant = await fleet.provision("orphan@example.com", agent=Stuck)
        for n in range(5):
            await fleet.deliver(grant, mail(f"{n}"))
        # A worker of its own on the same store, run without its fleet's graceful stop.
        scope = Scope(fleet.database, fleet.application.id, ServedAgents.of([Stuck.agent_name()]))
        host = AgentHost(lambda grant: Stuck, NoSending(), handler_timeout=None)
        doomed = Worker(scope, host, WorkerSettings(lease_ttl=0.5, poll_interval=0.05))
        async with anyio.create_task_group() as tg:
            tg.start_soon(doomed.run)
            await wait_until(lambda: doomed.dispatcher.statistics().running == 1)
            tg.cancel_scope.cancel()  # dies mid-message holding the lease: no drain, no release
        died = time.monotonic()
        Stuck.blocked = False
        async with serving(fleet):
            await wait_until(lambda: len(Stuck.seen) >= 1)
            taken_over = time.monotonic()
            with anyio.fail_after(20):
                await fleet.wait_idle()
        assert taken_over - died >= 0.3  # it waited for the dead worker's lease to run out
    assert Stuck.seen == [str(n) for n in range(5)]  # the interrupted message ran again, first


class Flaky(Agent):
    calls: ClassVar[list[tuple[str, int]]] = []

    async def on_message(self, message: InboundMessage) -> None:
        self.calls.append((message.subject or "", message.attempt))
        if message.subject == "poison":
            raise RuntimeError("cannot digest this")
        if message.subject == "twice" and message.attempt < 3:
            raise ValueError("not yet")


class ShakyStart(Agent):
    """``on_start`` fails the first time; a message's handler leaves a state JSON cannot hold."""

    starts: ClassVar[int] = 0
    seen: ClassVar[list[tuple[str, int]]] = []

    async def on_start(self) -> None:
        type(self).starts += 1
        if type(self).starts == 1:
            raise RuntimeError("not ready yet")

    async def on_message(self, message: InboundMessage) -> None:
        self.seen.append((message.subject or "", message.attempt))
        if message.subject == "unsaveable":
            self.state["when"] = object()  # not JSON
        else:
            self.state.pop("when", None)
            self.state["count"] = self.state.get("count", 0) + 1


async def test_a_failing_on_start_and_an_unsaveable_state_are_retried_then_dead(
    database_url: str,
) -> None:
    ShakyStart.starts, ShakyStart.seen = 0, []
    async with await open_fleet(database_url, ShakyStart, max_attempts=2) as fleet:
        await fleet.add_domain("example.com")
        grant = await fleet.provision("shaky@example.com", agent=ShakyStart)
        async with serving(fleet):
            for subject in ["first", "unsaveable", "last"]:
                await fleet.deliver(grant, mail(subject))
            with anyio.fail_after(20):
                await fleet.wait_idle()
        assert ShakyStart.starts == 2  # on_start ran again after it failed
        assert ShakyStart.seen == [("first", 2), ("unsaveable", 1), ("unsaveable", 2), ("last", 1)]
        (dead,) = await fleet.dead_letters()
        assert dead.subject == "unsaveable"
        assert "not JSON-serialisable" in (dead.error or "")
        failed = [e.payload["error"] for e in await fleet.events(type="message.handler_failed")]
        assert "on_start raised RuntimeError: not ready yet" in failed[0]
        assert await fleet.agent_state(grant.id) == {"count": 2}


async def test_retry_dead_letter_and_replay(database_url: str) -> None:
    Flaky.calls = []
    async with await open_fleet(database_url, Flaky, max_attempts=3) as fleet:
        await fleet.add_domain("example.com")
        grant = await fleet.provision("flaky@example.com", agent=Flaky)
        async with serving(fleet):
            for subject in ["first", "poison", "twice", "last"]:
                await fleet.deliver(grant, mail(subject))
            with anyio.fail_after(20):
                await fleet.wait_idle()
            assert Flaky.calls == [
                ("first", 1),
                ("poison", 1),
                ("poison", 2),
                ("poison", 3),
                ("twice", 1),
                ("twice", 2),
                ("twice", 3),
                ("last", 1),
            ]
            (dead,) = await fleet.dead_letters()
            assert dead.subject == "poison"
            assert dead.attempts == 3
            assert "RuntimeError: cannot digest this" in (dead.error or "")
            failed = await fleet.events(type="message.handler_failed")
            assert len(failed) == 4
            assert {e.grant_id for e in failed} == {grant.id}
            assert len(await fleet.events(type="message.dead_lettered")) == 1

            Flaky.calls = []
            assert await fleet.replay_dead_letters() == 1
            await wait_until(lambda: len(Flaky.calls) >= 3)
            with anyio.fail_after(20):
                await fleet.wait_idle()
            assert Flaky.calls == [("poison", 1), ("poison", 2), ("poison", 3)]
            (again,) = await fleet.dead_letters()
            assert again.message_id == dead.message_id  # the same stored message


class Sleepy(Agent):
    handled: ClassVar[list[str]] = []

    async def on_message(self, message: InboundMessage) -> None:
        if message.subject == "hang":
            await anyio.sleep(60)
        self.handled.append(message.subject or "")


async def test_a_hanging_handler_times_out_without_stalling_others(database_url: str) -> None:
    Sleepy.handled = []
    async with await open_fleet(database_url, Sleepy, handler_timeout=0.2, max_attempts=2) as fleet:
        await fleet.add_domain("example.com")
        slow = await fleet.provision("slow@example.com", agent=Sleepy)
        quick = await fleet.provision("quick@example.com", agent=Sleepy)
        async with serving(fleet):
            await fleet.deliver(slow, mail("hang"))
            await fleet.deliver(slow, mail("after"))
            for n in range(5):
                await fleet.deliver(quick, mail(f"q{n}"))
            with anyio.fail_after(20):
                await fleet.wait_idle()
        assert Sleepy.handled.index("q4") < Sleepy.handled.index("after")
        (dead,) = await fleet.dead_letters()
        assert "timed out after 0.2s" in (dead.error or "")


async def test_deliver_refuses_what_it_cannot_store(database_url: str) -> None:
    async with await open_fleet(database_url, Recorder, queue_limit=3) as fleet:
        await fleet.add_domain("example.com")
        grant = await fleet.provision("full@example.com", agent=Recorder)
        for n in range(3):
            await fleet.deliver(grant, mail(f"{n}"))
        with pytest.raises(QueueFull, match="full"):
            await fleet.deliver(grant, mail("3"))
        with pytest.raises(GrantNotFound):
            await fleet.deliver("nobody@example.com", mail("x"))
        with pytest.raises(InvalidInput, match="raw RFC 5322 bytes"):
            await fleet.deliver(grant, "text")  # type: ignore[arg-type]
        assert len(await fleet.events(type="message.received")) == 3


class Replier(Agent):
    results: ClassVar[list[Any]] = []

    async def on_message(self, message: InboundMessage) -> None:
        self.results.append(await self.reply(message, text="Thanks, we are on it."))
        self.results.append(await self.send("not an address", subject="x", text="y"))


async def test_reply_queues_a_threaded_answer_and_status_gates(database_url: str) -> None:
    Replier.results = []
    async with await open_fleet(database_url, Replier) as fleet:
        await fleet.add_domain("example.com")
        grant = await fleet.provision("desk@example.com", agent=Replier)
        async with serving(fleet):
            await fleet.deliver(grant, mail("Printer on fire", extra="References: <a@x>\r\n"))
            with anyio.fail_after(10):
                await fleet.wait_idle()
            await fleet.set_grant_status(grant.id, GrantStatus.PAUSED)
            await fleet.deliver(grant, mail("Still burning"))
            await wait_until(lambda: len(Replier.results) == 4)
        reply, bad, paused, _ = Replier.results
        assert reply.status is SendStatus.QUEUED
        assert reply.message_id.endswith("@example.com>")
        assert bad.status is SendStatus.INVALID_RECIPIENT
        assert "to:" in bad.detail
        assert paused.status is SendStatus.PAUSED
        (queued,) = await fleet.events(type="message.queued")
        assert queued.payload["subject"] == "Re: Printer on fire"
        assert queued.payload["to"] == ["someone@example.org"]
        raw = await fleet.database.read(
            lambda c: c.exec_driver_sql(
                "SELECT raw FROM messages WHERE folder = 'sent'"
            ).scalar_one()
        )
        assert b"In-Reply-To: <Printer-on-fire@example.org>" in bytes(raw)
        assert b"References: <a@x> <Printer-on-fire@example.org>" in bytes(raw)


def test_handler_mistakes_fail_at_class_creation() -> None:
    with pytest.raises(InvalidAgent, match="did you mean 'on_message'"):

        class Typo(Agent):
            async def on_mesage(self, message: InboundMessage) -> None: ...

    with pytest.raises(InvalidAgent, match="async def"):

        class Blocking(Agent):
            def on_message(self, message: InboundMessage) -> None: ...  # type: ignore[override]

    with pytest.raises(InvalidAgent, match=r"must take \(self, message\)"):

        class Greedy(Agent):
            async def on_message(self, message: InboundMessage, extra: int) -> None: ...

    with pytest.raises(InvalidAgent, match=r"on_start must take \(self\)"):

        class Eager(Agent):
            async def on_start(self, what: int) -> None: ...

    class Fine(Agent):
        workspace = "triage"

        async def on_message(self, message: InboundMessage, hint: int = 0) -> None: ...

        async def on_stop(self) -> None: ...

    assert Fine.handlers == {"on_message", "on_stop"}
    assert Fine.workspace == "triage"


async def test_source_keys_make_delivery_idempotent(database_url: str) -> None:
    async with await open_fleet(database_url, Recorder) as fleet:
        await fleet.add_domain("example.com")
        grant = await fleet.provision("imap@example.com", agent=Recorder)
        first = await fleet.deliver(grant, mail("a"), source_key="imap:7:1")
        async with anyio.create_task_group() as tg:  # the same key, concurrently
            for _ in range(5):
                tg.start_soon(lambda: fleet.deliver(grant, mail("a"), source_key="imap:7:1"))
        again = await fleet.deliver(grant, mail("a"), source_key="imap:7:1")
        other = await fleet.deliver(grant, mail("b"), source_key="imap:7:2")
        assert again.id == first.id
        assert other.id != first.id
        assert len(await fleet.events(type="message.received")) == 2
        used = (await fleet.grant(grant.id)).stored_bytes
        assert used == len(mail("a")) + len(mail("b"))

        assert await fleet.cursor(grant.id, "imap:INBOX") is None
        await fleet.set_cursor(grant.id, "imap:INBOX", {"uidvalidity": 7, "uid": 2})
        await fleet.set_cursor(grant.id, "imap:INBOX", {"uidvalidity": 7, "uid": 3})
        assert await fleet.cursor(grant.id, "imap:INBOX") == {"uidvalidity": 7, "uid": 3}


class Threader(Agent):
    seen: ClassVar[list[InboundMessage]] = []
    replies: ClassVar[list[SendResult]] = []

    async def on_message(self, message: InboundMessage) -> None:
        self.seen.append(message)
        if message.subject == "Question":
            self.replies.append(await self.reply(message, text="Answer."))


async def test_messages_are_threaded_by_references_then_subject(database_url: str) -> None:
    Threader.seen, Threader.replies = [], []
    async with await open_fleet(database_url, Threader) as fleet:
        await fleet.add_domain("example.com")
        grant = await fleet.provision("threads@example.com", agent=Threader)
        async with serving(fleet):
            await fleet.deliver(grant, mail("Question"))
            await wait_until(lambda: len(Threader.replies) == 1)
            answer = Threader.replies[0]
            follow_up = f"In-Reply-To: {answer.message_id}\r\n"
            await fleet.deliver(grant, mail("Re: Answer", extra=follow_up))
            await fleet.deliver(grant, mail("Re: Question"))  # no references: by subject
            await fleet.deliver(grant, mail("Something else"))
            await wait_until(lambda: len(Threader.seen) == 4)
        question, via_reference, via_subject, other = Threader.seen
        assert question.thread_id is not None
        assert answer.thread_id == question.thread_id
        assert via_reference.thread_id == question.thread_id
        assert via_subject.thread_id == question.thread_id
        assert other.thread_id not in {None, question.thread_id}


class Responder(Agent):
    results: ClassVar[list[SendResult]] = []

    async def on_message(self, message: InboundMessage) -> None:
        self.results.append(await self.reply(message, text="Thanks!"))


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ("Auto-Submitted: auto-replied\r\n", "Auto-Submitted: auto-replied"),
        ("Precedence: bulk\r\n", "Precedence: bulk"),
        ("List-Id: <news.example.org>\r\n", "List-Id"),
        ("Return-Path: <>\r\n", "bounce"),
    ],
)
async def test_no_automatic_reply_to_automatic_mail(
    database_url: str, extra: str, why: str
) -> None:
    Responder.results = []
    async with await open_fleet(database_url, Responder) as fleet:
        await fleet.add_domain("example.com")
        grant = await fleet.provision("responder@example.com", agent=Responder)
        async with serving(fleet):
            await fleet.deliver(grant, mail("Out of office", extra=extra))
            await fleet.deliver(grant, mail("A person writes", extra="Auto-Submitted: no\r\n"))
            await wait_until(lambda: len(Responder.results) == 2)
        suppressed, answered = Responder.results
        assert suppressed.status is SendStatus.SUPPRESSED
        assert why in (suppressed.detail or "")
        assert answered.ok
        assert len(await fleet.events(type="message.queued")) == 1
