"""Rules at work: each action's effect at the MX (a real SMTP client on loopback) and on
send, changes in force without a restart (and in a second process on PostgreSQL within a
second), recorded evaluations, and the dry run."""

from __future__ import annotations

import json
import os
import smtplib
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa
from anyio.streams.buffered import BufferedByteReceiveStream

from mailfleet import Fleet, SendStatus
from mailfleet.model.errors import MessageBlocked
from mailfleet.model.outbound import OutgoingMail
from mailfleet.store.scope import Tx
from mailfleet.store.tables import messages_table
from support import wait_until

pytestmark = pytest.mark.anyio
T = TypeVar("T")

DESK = "desk@example.com"


def message(subject: str = "Hello desk", sender: str = "ada@example.org") -> bytes:
    return (
        f"From: Ada <{sender}>\r\nTo: {DESK}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{abs(hash(subject))}@example.org>\r\n\r\nIs anyone there?\r\n"
    ).encode()


@asynccontextmanager
async def serving(database_url: str) -> AsyncIterator[Fleet]:
    async with Fleet(
        database_url=database_url, application="test", smtp_port=0, poll_interval=0.05
    ) as fleet:
        await fleet.add_domain("example.com")
        await fleet.provision(DESK)
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.serve)
            await wait_until(lambda: fleet.smtp_port is not None)
            yield fleet
            tg.cancel_scope.cancel()


async def smtp(fleet: Fleet, work: Callable[[smtplib.SMTP], T]) -> T:
    def run() -> T:
        with smtplib.SMTP("127.0.0.1", fleet.smtp_port or 0, timeout=10) as client:
            client.ehlo("client.example.org")
            return work(client)

    return await anyio.to_thread.run_sync(run)


def mail(sender: str = "ada@example.org", data: bytes | None = None) -> Any:
    def send(client: smtplib.SMTP) -> Any:
        client.mail(sender)
        code, reply = client.rcpt(DESK)
        if code != 250:
            return ("rcpt", code, reply.decode())
        code, reply = client.data(data or message(sender=sender))
        return ("data", code, reply.decode())

    return send


def condition(field: str, operator: str, value: Any) -> dict[str, Any]:
    return {"field": field, "operator": operator, "value": value}


async def stored(fleet: Fleet) -> list[tuple[str | None, str, bool]]:
    """(subject, folder, read) of the inbound messages, oldest first."""
    m = messages_table

    def read(conn: sa.Connection) -> list[tuple[str | None, str, bool]]:
        rows = conn.execute(
            sa.select(m.c.subject, m.c.folder, m.c.read)
            .where(m.c.direction == "in")
            .order_by(m.c.created_at, m.c.id)
        )
        return [(r.subject, r.folder, bool(r.read)) for r in rows]

    return await fleet.database.read(read)


async def test_a_block_on_the_envelope_refuses_at_rcpt(database_url: str) -> None:
    async with serving(database_url) as fleet:
        blocked = await fleet.create_list("blocked", "domain")
        await fleet.add_list_items(blocked.id, ["Spam.Example."])
        made = await fleet.create_rule(
            {
                "name": "no spam.example",
                "trigger": "inbound",
                "action": "block",
                "conditions": [condition("sender_domain", "in_list", [blocked.id])],
            }
        )
        step, code, reply = await smtp(fleet, mail("x@mail.spam.example"))
        assert (step, code) == ("rcpt", 550)
        assert "5.7.1" in reply
        assert (await smtp(fleet, mail()))[:2] == ("data", 250)
        assert [s for s, _, _ in await stored(fleet)] == ["Hello desk"]
        (evaluation,) = await fleet.rule_evaluations(DESK)
        assert (evaluation.rule_id, evaluation.action, evaluation.trigger) == (
            made.id,
            "block",
            "inbound",
        )
        assert evaluation.message_ref is None
        assert evaluation.detail["stage"] == "rcpt"
        assert evaluation.detail["sender"] == "x@mail.spam.example"


async def test_a_block_on_the_subject_refuses_at_data(database_url: str) -> None:
    async with serving(database_url) as fleet:
        await fleet.create_rule(
            {
                "name": "no lottery",
                "trigger": "inbound",
                "action": "block",
                "conditions": [condition("subject", "contains", "LOTTERY")],
            }
        )
        step, code, reply = await smtp(fleet, mail(data=message("You won the lottery")))
        assert (step, code) == ("data", 550)
        assert "5.7.1" in reply
        assert await stored(fleet) == []
        assert await fleet.events(type="message.received") == []
        (evaluation,) = await fleet.rule_evaluations(DESK)
        assert evaluation.detail["stage"] == "data"
        assert evaluation.detail["subject"] == "You won the lottery"
        with pytest.raises(MessageBlocked):  # other sources than the MX: refused as well
            await fleet.deliver(DESK, message("lottery again"))
        assert await stored(fleet) == []


@pytest.mark.parametrize(
    ("action", "folder", "expected"),
    [
        ("mark_spam", None, ("spam", False)),
        ("assign_folder", "Receipts", ("receipts", False)),
        ("mark_read", None, ("inbox", True)),
        ("archive", None, ("archive", False)),
        ("trash", None, ("trash", False)),
    ],
)
async def test_each_filing_action_at_the_mx(
    database_url: str, action: str, folder: str | None, expected: tuple[str, bool]
) -> None:
    async with serving(database_url) as fleet:
        made = await fleet.create_rule(
            {
                "name": action,
                "trigger": "inbound",
                "action": action,
                "folder": folder,
                "conditions": [condition("sender_address", "is", "Ada@Example.org")],
            }
        )
        assert (await smtp(fleet, mail()))[:2] == ("data", 250)
        assert (await smtp(fleet, mail("bob@example.org")))[:2] == ("data", 250)
        assert [(f, r) for _, f, r in await stored(fleet)] == [expected, ("inbox", False)]
        (evaluation,) = await fleet.rule_evaluations(DESK)
        (received, _) = await fleet.events(type="message.received")
        assert evaluation.rule_id == made.id
        assert evaluation.message_ref == received.payload["message_id"]


async def test_authentication_results_are_a_field(database_url: str) -> None:
    async with serving(database_url) as fleet:
        await fleet.create_rule(
            {
                "name": "unauthenticated is spam",
                "trigger": "inbound",
                "action": "mark_spam",
                "conditions": [condition("authentication", "is_not", "dmarc=pass")],
            }
        )
        assert (await smtp(fleet, mail()))[:2] == ("data", 250)
        assert [f for _, f, _ in await stored(fleet)] == ["spam"]


async def test_stored_outbound_rules_block_a_send_beside_in_process_ones(fleet: Fleet) -> None:
    await fleet.provision("sales@example.com")
    competitors = await fleet.create_list("competitors", "domain")
    await fleet.add_list_items(competitors.id, ["rival.example"])
    made = await fleet.create_rule(
        {
            "name": "not to rivals",
            "trigger": "outbound",
            "action": "block",
            "conditions": [condition("recipient_domain", "in_list", [competitors.id])],
        }
    )

    def no_net(tx: Tx, mail: OutgoingMail) -> str | None:
        return "no .net" if any(r.endswith(".net") for r in mail.recipients) else None

    fleet.add_outbound_rule(no_net)

    async def send(to: str) -> Any:
        return await fleet.send("sales@example.com", to, subject="Offer", text="Hello.")

    ruled = await send("ceo@sales.rival.example")
    assert ruled.status is SendStatus.BLOCKED_BY_RULE
    assert ruled.detail == f"blocked_by_rule: rule 'not to rivals' ({made.id})"
    assert (await send("x@example.net")).detail == "blocked_by_rule: no .net"
    assert (await send("friend@example.org")).ok
    (evaluation,) = await fleet.rule_evaluations("sales@example.com")
    assert (evaluation.trigger, evaluation.action) == ("outbound", "block")
    assert evaluation.detail["recipients"] == ["ceo@sales.rival.example"]
    assert evaluation.detail["category"] == "transactional"
    await fleet.update_rule(made.id, {"conditions": [condition("category", "is", "transactional")]})
    assert (await send("friend@example.org")).status is SendStatus.BLOCKED_BY_RULE
    await fleet.update_rule(made.id, {"enabled": False})
    assert (await send("friend@example.org")).ok


async def test_a_list_change_is_in_force_at_once_without_a_restart(database_url: str) -> None:
    async with serving(database_url) as fleet:
        blocked = await fleet.create_list("blocked", "address")
        await fleet.create_rule(
            {
                "name": "blocked senders",
                "trigger": "inbound",
                "action": "block",
                "conditions": [condition("sender_address", "in_list", [blocked.id])],
            }
        )
        assert (await smtp(fleet, mail()))[:2] == ("data", 250)
        await fleet.add_list_items(blocked.id, ["ADA@example.org"])
        assert (await smtp(fleet, mail()))[:2] == ("rcpt", 550)
        # a change made by another fleet on the same store: found by the version check
        async with Fleet(database_url=database_url, application="test") as other:
            await other.remove_list_items(blocked.id, ["ada@example.org"])
        start = time.monotonic()
        while (await smtp(fleet, mail()))[:2] != ("data", 250):
            assert time.monotonic() - start < 1.0
            await anyio.sleep(0.05)


LISTENING_PROCESS = """
import json, sys, time
import anyio
import mailfleet.runtime.policy as policy
from mailfleet import Fleet
from mailfleet.model.rules import MessageFacts

policy.CHECK_INTERVAL = 60.0  # only LISTEN/NOTIFY can bring a change within the test

async def main(url):
    facts = MessageFacts.of(senders=["ada@example.org"], recipients=["desk@example.com"],
                            envelope_only=True)
    async with Fleet(database_url=url, application="test") as fleet:
        last = None
        print("ready", flush=True)
        with anyio.move_on_after(30):
            while True:
                blocked = fleet.policy.ruleset.evaluate("inbound", None, facts).blocked
                if (blocked is not None) != last:
                    last = blocked is not None
                    print(json.dumps({"blocked": last, "at": time.time()}), flush=True)
                    if last is False and blocked is None and fleet.policy.ruleset.version > 3:
                        return
                await anyio.sleep(0.005)

anyio.run(main, sys.argv[1])
"""


@pytest.mark.postgres
async def test_a_second_process_on_postgresql_sees_a_change_within_a_second(
    postgres_url: str,
) -> None:
    async with Fleet(database_url=postgres_url, application="test") as fleet:
        await fleet.add_domain("example.com")
        await fleet.provision(DESK)
        blocked = await fleet.create_list("blocked", "address")
        await fleet.create_rule(
            {
                "name": "blocked senders",
                "trigger": "inbound",
                "action": "block",
                "conditions": [condition("sender_address", "in_list", [blocked.id])],
            }
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        async with await anyio.open_process(
            [sys.executable, "-c", LISTENING_PROCESS, postgres_url], env=env
        ) as process:
            assert process.stdout is not None
            stdout = BufferedByteReceiveStream(process.stdout)

            async def line() -> str:
                with anyio.fail_after(20):
                    return (await stdout.receive_until(b"\n", 10_000)).decode().strip()

            assert await line() == "ready"
            assert json.loads(await line())["blocked"] is False
            await anyio.sleep(0.3)  # its LISTEN is in place
            changed = time.time()
            await fleet.add_list_items(blocked.id, ["ada@example.org"])
            seen = json.loads(await line())
            assert seen["blocked"] is True
            assert seen["at"] - changed < 1.0
            changed = time.time()
            await fleet.remove_list_items(blocked.id, ["ada@example.org"])
            seen = json.loads(await line())
            assert seen["blocked"] is False
            assert seen["at"] - changed < 1.0
            with anyio.fail_after(10):
                await process.wait()


async def test_a_dry_run_says_what_a_rule_would_have_done(fleet: Fleet) -> None:
    await fleet.create_workspace("triage")
    await fleet.provision(DESK, workspace="triage")
    await fleet.provision("help@example.com", workspace="triage")
    await fleet.provision("sales@example.com")
    for subject in ("Invoice 1", "Hello", "invoice 2"):
        await fleet.deliver(DESK, message(subject))
    await fleet.deliver("help@example.com", message("Invoice 3"))
    await fleet.deliver("sales@example.com", message("Invoice 4"))
    rule = {
        "name": "invoices",
        "trigger": "inbound",
        "action": "assign_folder",
        "folder": "invoices",
        "conditions": [condition("subject", "contains", "invoice")],
    }
    results = await fleet.dry_run_rule(rule, grant=DESK, limit=2)
    assert [(r.subject, r.matched, r.outcome) for r in results] == [
        ("invoice 2", True, "folder invoices"),
        ("Hello", False, "no match"),
    ]
    whole = await fleet.dry_run_rule(rule, workspace="triage")
    assert sorted(r.subject or "" for r in whole if r.matched) == [
        "Invoice 1",
        "Invoice 3",
        "invoice 2",
    ]
    assert await fleet.rules() == []  # nothing saved
    assert [f for _, f, _ in await stored(fleet)] == ["inbox"] * 5  # nothing changed
    listed = await fleet.create_list("senders", "address")
    await fleet.add_list_items(listed.id, ["ada@example.org"])
    block = {
        "name": "ada",
        "trigger": "inbound",
        "action": "block",
        "conditions": [condition("sender_address", "in_list", [listed.id])],
    }
    assert {r.outcome for r in await fleet.dry_run_rule(block, grant=DESK)} == {"refused"}
    assert (await fleet.send("sales@example.com", "x@example.org", subject="Hi", text=".")).ok
    outbound = {
        "name": "to example.org",
        "trigger": "outbound",
        "action": "block",
        "conditions": [condition("recipient_domain", "is", "example.org")],
    }
    (sent,) = await fleet.dry_run_rule(outbound, grant="sales@example.com")
    assert (sent.subject, sent.outcome) == ("Hi", "blocked_by_rule")
