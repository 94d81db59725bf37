"""The simulated internet over real sockets: its answers by profile, the DSNs and ARF reports
it mails back (read by mailfleet's own parsers), and a fleet whose grant it pauses."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosmtplib
import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from mailfleet import Fleet, InvalidInput, Settings
from mailfleet.mail import BounceClass, ReportKind, read_report
from mailfleet.transports.simulator import (
    DEFAULT_PROFILES,
    DomainProfile,
    Outcome,
    SimulatedInternet,
    profiles_with,
)
from relay import relay_peer
from support import wait_for_events, wait_until

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
HELPDESK = ROOT / "examples" / "helpdesk" / "helpdesk.py"
VERP = "bounces+tok3n@example.com"
ORIGINAL = (
    b"From: sales@example.com\r\nTo: someone\r\nSubject: Our offer\r\n"
    b"Message-ID: <offer-1@example.com>\r\n\r\nHello.\r\n"
)


@asynccontextmanager
async def simulated(**options: Any) -> AsyncIterator[SimulatedInternet]:
    """A simulator serving on a free loopback port for the duration of the block."""
    internet = SimulatedInternet(**options)
    async with anyio.create_task_group() as tg:
        await tg.start(internet.run)
        yield internet
        tg.cancel_scope.cancel()


async def rcpt(internet: SimulatedInternet, recipient: str, sender: str = VERP) -> int:
    """The code the simulator answers RCPT with, on a connection of its own."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=internet.port, start_tls=False) as c:
        await c.ehlo()
        await c.mail(sender)
        response = await c.execute_command(b"RCPT", f"TO:<{recipient}>".encode())
        return response.code


async def send(internet: SimulatedInternet, recipient: str, data: bytes = ORIGINAL) -> None:
    """Send one message from the VERP address; the simulator must accept it."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=internet.port, start_tls=False) as c:
        refused, _ = await c.sendmail(VERP, [recipient], data)
        assert not refused


# -- answers at RCPT ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipient", "code"),
    [
        ("bounce@inbox.example.com", 550),
        ("unknown+7@corp.example.net", 550),
        ("full@example.org", 552),
        ("throttle@example.org", 421),
        ("greylist@example.org", 451),
        ("late-bounce@example.org", 250),
        ("complain@example.org", 250),
        ("anyone@example.org", 250),
    ],
)
async def test_a_local_part_that_names_an_outcome_forces_it(recipient: str, code: int) -> None:
    async with simulated() as internet:
        assert await rcpt(internet, recipient) == code
        domain = recipient.rpartition("@")[2]
        assert sum(internet.stats[domain].values()) == 1


async def test_greylisting_refuses_a_pair_once_then_accepts_it() -> None:
    async with simulated() as internet:
        assert await rcpt(internet, "greylist@example.org") == 451
        assert await rcpt(internet, "greylist@example.org", sender="other@example.com") == 451
        assert await rcpt(internet, "greylist@example.org") == 250
        assert internet.stats["example.org"] == {Outcome.GREYLIST: 2, Outcome.DELIVERED: 1}


async def test_a_throttled_domain_answers_421_to_a_share_of_attempts() -> None:
    async with simulated() as internet:
        codes = [await rcpt(internet, f"u{n}@throttle.example.org") for n in range(40)]
        assert set(codes) == {250, 421}
        # Throttling is drawn per attempt: the same address is not refused for ever.
        retried = [await rcpt(internet, "u0@throttle.example.org") for _ in range(20)]
        assert 250 in retried


def test_rates_follow_the_profile_and_the_seed() -> None:
    profile = DomainProfile(
        unknown_user=0.05, mailbox_full=0.02, greylist=0.1, late_bounce=0.08, complaint=0.01
    )
    first = SimulatedInternet({"test.example": profile}, seed=7)
    again = SimulatedInternet({"test.example": profile}, seed=7)
    other = SimulatedInternet({"test.example": profile}, seed=8)
    addresses = [f"user{n}@test.example" for n in range(2000)]
    decided = [first.decide(a, mail_from=VERP) for a in addresses]
    assert decided == [again.decide(a, mail_from=VERP) for a in addresses]
    assert decided != [other.decide(a, mail_from=VERP) for a in addresses]
    counts = first.stats["test.example"]
    assert sum(counts.values()) == 2000
    for outcome in (
        Outcome.UNKNOWN_USER,
        Outcome.MAILBOX_FULL,
        Outcome.GREYLIST,
        Outcome.LATE_BOUNCE,
        Outcome.COMPLAINT,
    ):
        rate = getattr(profile, outcome.value)
        assert abs(counts[outcome] / 2000 - rate) < 0.015, (outcome, counts)
    # An address's fate stays: an unknown user is unknown on every attempt.
    unknown = next(a for a, o in zip(addresses, decided, strict=True) if o is Outcome.UNKNOWN_USER)
    assert first.decide(unknown) is Outcome.UNKNOWN_USER


def test_the_default_profiles_and_any_other_domain() -> None:
    internet = SimulatedInternet(seed=3)
    assert internet.profile("inbox.example.com") == DEFAULT_PROFILES["inbox.example.com"]
    assert internet.profile("elsewhere.test") == DomainProfile()
    decided = {internet.decide(f"u{n}@elsewhere.test") for n in range(200)}
    assert decided == {Outcome.DELIVERED}
    throttled = [internet.decide(f"u{n}@throttle.example.org") for n in range(2000)]
    assert abs(throttled.count(Outcome.THROTTLE) / 2000 - 0.30) < 0.03


def test_profiles_are_validated_and_merged_over_the_defaults() -> None:
    merged = profiles_with({"Corp.Example.net": {"late_bounce": 0.5}, "new.test": {"throttle": 1}})
    assert merged["corp.example.net"] == DomainProfile(late_bounce=0.5, mailbox_full=0.02)
    assert merged["new.test"] == DomainProfile(throttle=1.0)
    with pytest.raises(InvalidInput, match="must be a fraction from 0 to 1") as bad:
        DomainProfile(complaint=1.5)
    assert bad.value.field == "complaint"
    with pytest.raises(InvalidInput, match=r"add up to 1\.2, more than 1"):
        DomainProfile(unknown_user=0.6, late_bounce=0.6)
    with pytest.raises(InvalidInput, match="no such profile field") as unknown:
        profiles_with({"x.test": {"bounce": 0.1}})
    assert unknown.value.field == "x.test.bounce"


# -- reports -------------------------------------------------------------------------------


async def test_a_late_bounce_and_a_complaint_come_back_as_reports_mailfleet_reads() -> None:
    async with (
        relay_peer() as peer,
        simulated(report_delay=0.05, mx=("127.0.0.1", peer.port)) as internet,
    ):
        await send(internet, "late-bounce@corp.example.net")
        await send(internet, "complain@inbox.example.com")
        # counted once the peer's 250 is read, a moment after the peer has the message
        await wait_until(lambda: len(peer.received) == 2 and internet.reports_sent == 2)
    dsn, arf = sorted(peer.received, key=lambda r: b"feedback-report" in r.data)
    assert (dsn.mail_from, dsn.rcpt_tos) == ("<>", [VERP])  # the null path
    assert (arf.mail_from, arf.rcpt_tos) == ("<>", [VERP])

    bounce = read_report(dsn.data, envelope_recipients=dsn.rcpt_tos)
    assert bounce.kind is ReportKind.BOUNCE
    (failed,) = bounce.recipients
    assert (failed.address, failed.status, failed.bounce_class) == (
        "late-bounce@corp.example.net",
        "5.1.1",
        BounceClass.HARD,
    )
    assert (bounce.verp_token, bounce.original_message_id) == ("tok3n", "offer-1@example.com")
    assert b"Content-Type: text/rfc822-headers" in dsn.data

    complaint = read_report(arf.data, envelope_recipients=arf.rcpt_tos)
    assert complaint.kind is ReportKind.COMPLAINT
    assert complaint.feedback_type == "abuse"
    assert [r.address for r in complaint.recipients] == ["complain@inbox.example.com"]
    assert (complaint.verp_token, complaint.original_message_id) == (
        "tok3n",
        "offer-1@example.com",
    )
    for field in ("Version: 1", "User-Agent: ", "Original-Mail-From: ", "Arrival-Date: "):
        assert field.encode() in arf.data


async def test_a_refused_report_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mailfleet.simulator")
    async with (
        relay_peer() as peer,
        simulated(report_delay=0.01, mx=("127.0.0.1", peer.port)) as internet,
    ):
        peer.rcpt_replies[VERP] = "550 5.1.1 no such bounce address"
        await send(internet, "late-bounce@corp.example.net")
        await wait_until(lambda: internet.reports_failed == 1)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "refused the late_bounce report for late-bounce@corp.example.net" in warning.message
    assert any("late-bounce@corp.example.net (attempt 1" in r.message for r in caplog.records)


async def test_reports_pending_at_stop_and_without_an_mx_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailfleet.simulator")
    async with relay_peer() as peer, simulated(report_delay=60, mx=("127.0.0.1", peer.port)) as i:
        await send(i, "complain@example.org")
    assert "complaint report for complain@example.org to " + VERP + " not sent" in caplog.text
    assert not peer.received
    caplog.clear()
    async with simulated(report_delay=0) as internet:
        await send(internet, "late-bounce@example.org")
    assert "no MX to mail reports to" in caplog.text


# -- settings and the fleet ----------------------------------------------------------------


def test_settings_refuse_a_relay_with_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput, match="set one or the other") as both:
        Settings.load(simulate=True, relay_host="smtp.example.com")
    assert both.value.field == "settings.simulate"
    monkeypatch.setenv("MAILFLEET_SIMULATOR_PROFILES", '{"corp.example.net": {"late_bounce": 0.5}}')
    assert Settings().simulator_profiles == {"corp.example.net": {"late_bounce": 0.5}}
    with pytest.raises(InvalidInput, match=r"corp\.example\.net\.late_bounce: must be a fraction"):
        Settings.load(simulator_profiles='{"corp.example.net": {"late_bounce": 3}}')
    with pytest.raises(InvalidInput, match="a JSON object"):
        Settings.load(simulator_profiles="[]")


SENDER = "sales@example.com"
POLICY = {
    "reputation_window": 20,
    "reputation_min_sample": 10,
    "send_rate_per_minute": 100_000,
    "send_burst": 1_000,
    # the breaker would hold the grant before its pause (tests/test_breaker.py)
    "breaker": {"enabled": False},
}


async def send_all(fleet: Fleet, recipients: list[str]) -> None:
    """Send one message to each recipient and wait until the simulator answered them all."""
    before = len(await fleet.outbox(limit=10_000))
    for to in recipients:
        assert (await fleet.send(SENDER, to, subject="Offer", text="Hello.")).ok

    async def answered() -> bool:
        listed = await fleet.outbox(limit=10_000)
        return len(listed) >= before + len(recipients) and all(
            o.status in ("sent", "bounced") for o in listed
        )

    with anyio.fail_after(20):
        while not await answered():  # noqa: ASYNC110 - polling the store
            await anyio.sleep(0.02)


async def status_of(fleet: Fleet) -> str:
    return (await fleet.grant(SENDER)).status.value


async def test_late_bounces_from_the_simulator_review_then_pause_a_grant(
    database_url: str,
) -> None:
    async with Fleet(
        database_url=database_url,
        smtp_port=0,
        poll_interval=0.02,
        simulate=True,
        simulator_report_delay=0.05,
    ) as fleet:
        await fleet.add_domain("example.com")
        await fleet.create_workspace("outreach", policy=POLICY)
        await fleet.provision(SENDER, workspace="outreach")
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            internet = fleet.simulator
            assert internet is not None
            assert internet.mx == ("127.0.0.1", fleet.smtp_port)

            await send_all(fleet, [f"ok{n}@example.org" for n in range(10)])
            assert await status_of(fleet) == "active"
            await send_all(fleet, ["late-bounce+1@corp.example.net"])  # accepted: 250
            await wait_for_events(fleet, "message.bounced")  # then the DSN: 1 of 11
            assert await status_of(fleet) == "under_review"
            await send_all(fleet, ["late-bounce+2@corp.example.net"])
            await wait_for_events(fleet, "message.bounced", count=2)  # 2 of 12: over 10 %
            assert await status_of(fleet) == "paused"

            assert internet.stats["example.org"] == {Outcome.DELIVERED: 10}
            assert internet.stats["corp.example.net"] == {Outcome.LATE_BOUNCE: 2}
            assert internet.reports_sent == 2
            tg.cancel_scope.cancel()

        bounced = sorted(await fleet.events(type="message.bounced"), key=lambda e: e.id)
        assert [e.payload["recipient"] for e in bounced] == [
            "late-bounce+1@corp.example.net",
            "late-bounce+2@corp.example.net",
        ]
        assert {(e.payload["class"], e.payload["status"]) for e in bounced} == {("hard", "5.1.1")}
        assert all(e.payload["outbound_id"] is not None for e in bounced)  # matched to sends
        changes = sorted(await fleet.events(type="grant.status_changed"), key=lambda e: e.id)
        assert [(e.payload["from"], e.payload["to"]) for e in changes] == [
            ("active", "under_review"),
            ("under_review", "paused"),
        ]
        (grant,) = [level for level in await fleet.reputation(SENDER) if level.kind == "grant"]
        assert (grant.sample, grant.bounces) == (12, 2)
        assert fleet.simulator is None  # only while serving


async def test_grants_sending_to_domains_of_differing_rates_each_reach_their_state(
    database_url: str,
) -> None:
    """Three grants, twenty sends each, through the simulator: none, one and two of them
    late-bounce, so the rates are 0 %, 5 % and 10 %: healthy, under review, paused."""
    plans = {
        "good@example.com": 0,
        "review@example.com": 1,
        "paused@example.com": 2,
    }
    async with Fleet(
        database_url=database_url,
        smtp_port=0,
        poll_interval=0.02,
        simulate=True,
        simulator_report_delay=0.05,
    ) as fleet:
        await fleet.add_domain("example.com")
        await fleet.create_workspace("outreach", policy=POLICY)
        for address in plans:
            await fleet.provision(address, workspace="outreach")
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            for address, bounces in plans.items():
                local = address.split("@")[0]
                recipients = [f"{local}{n}@example.org" for n in range(20 - bounces)]
                recipients += [f"late-bounce+{local}{n}@corp.example.net" for n in range(bounces)]
                for to in recipients:
                    sent = await fleet.send(address, to, subject="Offer", text="Hello.")
                    assert sent.ok, sent
            await wait_for_events(fleet, "message.bounced", count=3)
            with anyio.fail_after(20):
                while not await _all_final(fleet):  # noqa: ASYNC110 - polling the store
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        states = {a: (await fleet.grant(a)).status.value for a in plans}
        assert states == {
            "good@example.com": "active",
            "review@example.com": "under_review",
            "paused@example.com": "paused",
        }
        changes = sorted(await fleet.events(type="grant.status_changed"), key=lambda e: e.id)
        by_grant: dict[str, list[tuple[str, str]]] = {}
        for event in changes:
            by_grant.setdefault(event.grant_id or "", []).append(
                (event.payload["from"], event.payload["to"])
            )
        ids = {a: (await fleet.grant(a)).id for a in plans}
        assert ids["good@example.com"] not in by_grant
        assert by_grant[ids["review@example.com"]] == [("active", "under_review")]
        assert by_grant[ids["paused@example.com"]] == [
            ("active", "under_review"),
            ("under_review", "paused"),
        ]
        for address, bounces in plans.items():
            (grant,) = [lv for lv in await fleet.reputation(address) if lv.kind == "grant"]
            assert (grant.sample, grant.bounces) == (20, bounces)


async def _all_final(fleet: Fleet) -> bool:
    listed = await fleet.outbox(limit=1_000)
    return len(listed) == 60 and all(o.status in ("sent", "bounced") for o in listed)


async def test_run_simulate_sends_the_helpdesk_reply_to_the_simulated_internet(
    tmp_path: Path,
) -> None:
    """``mailfleet run --simulate``: a reply to a complaining address comes back as one."""
    command = [sys.executable, "-m", "mailfleet", "run", str(HELPDESK), "--smtp-port", "0"]
    env = {
        **os.environ,
        "MAILFLEET_HOME": str(tmp_path / "home"),
        "MAILFLEET_SIMULATOR_REPORT_DELAY": "0.05",
        "COLUMNS": "200",
    }
    async with await anyio.open_process([*command, "--simulate"], cwd=ROOT, env=env) as process:
        assert process.stdout is not None
        shown = ""
        with anyio.fail_after(30):
            async for chunk in TextReceiveStream(process.stdout):
                shown += chunk
                if "press Ctrl-C" in shown:
                    break
        assert re.search(
            r"outbound: simulated internet on 127\.0\.0\.1:\d+ \(profiles: corp\.example\.net, "
            r"default, inbox\.example\.com, throttle\.example\.org\)",
            shown,
        ), shown
        port = int(re.search(r"SMTP: 127\.0\.0\.1:(\d+)", shown).group(1))  # type: ignore[union-attr]
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
            await client.sendmail(
                "complain@inbox.example.com",
                ["help@example.com"],
                b"From: complain@inbox.example.com\r\nTo: help@example.com\r\n"
                b"Subject: Printer\r\n\r\nPlease help.\r\n",
            )
        async with Fleet(home=tmp_path / "home") as fleet:
            await wait_for_events(fleet, "message.complained")
            (reply,) = await fleet.outbox()
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(10):
            assert await process.wait() == 0
    assert reply.status == "sent"
    assert reply.recipients == ("complain@inbox.example.com",)


async def test_a_fleet_without_an_mx_simulates_but_says_reports_cannot_come_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with Fleet(home=tmp_path / "state", poll_interval=0.02, simulate=True) as fleet:
        await fleet.add_domain("example.com")
        await fleet.provision(SENDER)
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            assert fleet.simulator is not None
            assert fleet.simulator.mx is None
            await send_all(fleet, ["late-bounce@corp.example.net"])
            tg.cancel_scope.cancel()
        (sent,) = await fleet.outbox()
    assert sent.status == "sent"
    warnings = [r.message for r in caplog.records if r.name == "mailfleet.simulator"]
    assert warnings == ["no MX to mail reports to: late bounces and complaints will be dropped"]
    assert "simulated internet on 127.0.0.1:" in caplog.text
