"""The ``mailfleet`` command line, run against a real database on both backends.

The operator commands run in-process through typer's ``CliRunner`` and are
checked through a :class:`~mailfleet.Fleet` opened on the same database;
``mailfleet run`` runs as a real subprocess and is stopped with SIGINT.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from anyio.streams.text import TextReceiveStream
from typer.testing import CliRunner

from mailfleet import Agent, Fleet
from mailfleet.cli import app
from support import Invoke, ok, one_error_line, wait_for_events

ROOT = Path(__file__).resolve().parents[1]
HELPDESK = Path("examples", "helpdesk", "helpdesk.py")


class Triage(Agent):
    """An agent for ``--agent``, importable as ``test_cli:Triage``."""


def test_domains_add_and_list(mailfleet: Invoke) -> None:
    assert "example.com registered" in ok(mailfleet("domains", "add", "Example.COM"))
    ok(mailfleet("domains", "add", "example.org", "--selector", "s2024"))
    assert "example.org already registered" in ok(mailfleet("domains", "add", "example.org"))

    listed = ok(mailfleet("domains", "list")).splitlines()
    assert any("example.com" in line and "mailfleet" in line for line in listed)
    assert any("example.org" in line and "s2024" in line for line in listed)


def test_workspace_create_and_set_policy(mailfleet: Invoke, state) -> None:
    created = ok(
        mailfleet(
            "workspaces",
            "create",
            "outreach",
            "--pattern",
            "*.example.org",
            "--set",
            "daily_send_quota=200",
        )
    )
    assert "daily_send_quota" in created
    assert "*.example.org" in created

    shown = ok(
        mailfleet(
            "workspaces",
            "set-policy",
            "outreach",
            "thresholds.bounce_pause=0.08",
            "spam_sensitivity=high",
            "send_burst=5",
        )
    )
    assert any("thresholds.bounce_pause" in line and "0.08" in line for line in shown.splitlines())

    workspace = state(lambda fleet: fleet.workspace("outreach"))
    assert workspace.patterns == ("*.example.org",)
    assert workspace.policy.daily_send_quota == 200
    assert workspace.policy.thresholds.bounce_pause == 0.08
    assert workspace.policy.thresholds.bounce_review == 0.05  # untouched sibling
    assert workspace.policy.spam_sensitivity == "high"
    assert workspace.policy.send_burst == 5

    rows = ok(mailfleet("workspaces", "list")).splitlines()
    (outreach,) = [line for line in rows if "outreach" in line]
    assert "*.example.org" in outreach
    assert "200" in outreach
    assert "8.0%" in outreach
    assert any("default" in line and "yes" in line for line in rows)


def test_bad_policy_value_is_one_error_line_naming_the_field(mailfleet: Invoke, state) -> None:
    line = one_error_line(mailfleet("workspaces", "set-policy", "default", "daily_send_quota=-1"))
    assert line == "error: policy.daily_send_quota: Input should be greater than or equal to 0"

    line = one_error_line(
        mailfleet("workspaces", "create", "x", "--set", "thresholds.bounce_pause=1")
    )
    assert line.startswith("error: policy.thresholds.bounce_pause: ")
    assert "platform bound" in line

    assert one_error_line(mailfleet("workspaces", "set-policy", "default", "quota")) == (
        "error: policy: expected key=value, got 'quota'"
    )
    assert state(lambda fleet: fleet.workspace("default")).policy.daily_send_quota == 1000


def test_provision_from_a_file_with_invalid_addresses(
    mailfleet: Invoke, state, tmp_path: Path
) -> None:
    ok(mailfleet("domains", "add", "example.com"))
    listing = tmp_path / "addresses.txt"
    listing.write_text(
        "# the first wave\n"
        "agent-1@example.com\n"
        "\n"
        "  Agent-2@Example.com  \n"
        "not-an-address\n"
        "agent-3@example.com\n"
        "someone@unregistered.org\n"
    )

    out = ok(
        mailfleet("grants", "provision", "--from-file", str(listing), "--agent", "test_cli:Triage")
    )
    assert "3 created, 0 existing, 2 invalid" in out
    rows = out.splitlines()
    assert any("not-an-address" in line and "@-sign" in line for line in rows)
    assert any("someone@unregistered.org" in line and "not registered" in line for line in rows)

    grants = state(lambda fleet: fleet.grants())
    assert [g.address for g in grants] == [f"agent-{n}@example.com" for n in (1, 2, 3)]
    assert {g.agent for g in grants} == {"test_cli:Triage"}

    again = ok(mailfleet("grants", "provision", "agent-1@example.com", "-f", str(listing)))
    assert "0 created, 4 existing, 2 invalid" in again
    assert "agent-2@example.com" in ok(mailfleet("grants", "list", "--workspace", "default"))


def test_assign_and_regroup(mailfleet: Invoke, state, tmp_path: Path) -> None:
    for domain in ("example.com", "example.org"):
        ok(mailfleet("domains", "add", domain))
    ok(mailfleet("grants", "provision", "a@example.com", "b@example.org", "c@example.org"))
    ok(mailfleet("workspaces", "create", "orgs"))

    assert "example.org" in ok(mailfleet("workspaces", "patterns", "orgs", "example.org"))
    assert "moved 2 grants" in ok(mailfleet("workspaces", "regroup"))
    keys = tmp_path / "keys.txt"
    keys.write_text("# pinned here\nA@example.com\n")
    assert "moved 1 grant to orgs" in ok(mailfleet("workspaces", "assign", "orgs", "-f", str(keys)))

    # example.org now routes elsewhere: the grants follow, except the pinned one.
    ok(mailfleet("workspaces", "patterns", "orgs", "example.net"))
    ok(mailfleet("workspaces", "create", "other", "--pattern", "example.org"))
    assert "moved 2 grants" in ok(mailfleet("workspaces", "regroup"))
    where = {g.address: g.workspace for g in state(lambda fleet: fleet.grants())}
    assert where == {"a@example.com": "orgs", "b@example.org": "other", "c@example.org": "other"}

    listed = ok(mailfleet("grants", "list", "--workspace", "orgs"))
    assert "a@example.com" in listed
    assert "b@example.org" not in listed


def test_deprovision_and_events(mailfleet: Invoke, state) -> None:
    ok(mailfleet("domains", "add", "example.com"))
    ok(mailfleet("grants", "provision", "a@example.com", "b@example.com", "c@example.com"))

    out = ok(
        mailfleet("grants", "deprovision", "a@example.com", "-f", "-", input="b@example.com\n")
    )
    assert "removed 2 grants" in out
    assert [g.address for g in state(lambda fleet: fleet.grants())] == ["c@example.com"]

    events = ok(mailfleet("events", "--type", "grant.deleted")).splitlines()
    assert sum("grant.deleted" in line for line in events) == 2
    assert "no events" in ok(mailfleet("events", "--after", "1000"))


def test_grants_list_unserved(mailfleet: Invoke, state) -> None:
    ok(mailfleet("domains", "add", "example.com"))
    ok(mailfleet("grants", "provision", "a@example.com", "--agent", "test_cli:Triage"))
    ok(mailfleet("grants", "provision", "b@example.com"))

    async def deliver(fleet: Fleet) -> None:
        raw = b"From: x@example.org\r\nSubject: waiting\r\n\r\nHi.\r\n"
        for _ in range(3):
            await fleet.deliver("a@example.com", raw)

    state(deliver)
    rows = [
        line for line in ok(mailfleet("grants", "list", "--unserved")).splitlines() if "@" in line
    ]
    assert len(rows) == 2  # no worker runs: nobody serves either
    (a,) = [row for row in rows if "a@example.com" in row]
    assert "test_cli:Triage" in a
    assert re.search(r"\b3\b", a)  # its three messages wait
    (b,) = [row for row in rows if "b@example.com" in row]
    assert "(none)" in b
    bad = mailfleet("grants", "list", "--unserved", "--status", "active")
    assert bad.exit_code == 2


def test_workspace_delete(mailfleet: Invoke, state) -> None:
    ok(mailfleet("workspaces", "create", "spare"))
    assert "spare deleted" in ok(mailfleet("workspaces", "delete", "spare"))
    assert [w.name for w in state(lambda fleet: fleet.workspaces())] == ["default"]
    assert one_error_line(mailfleet("workspaces", "delete", "default")).startswith("error: ")


@pytest.mark.parametrize(
    "args",
    [
        ("grants", "provision", "a@example.com", "--workspace", "nowhere"),
        ("grants", "list", "--workspace", "nowhere"),
        ("workspaces", "assign", "nowhere", "a@example.com"),
        ("workspaces", "set-policy", "nowhere", "send_burst=2"),
    ],
)
def test_unknown_workspace_is_one_error_line(mailfleet: Invoke, args: tuple[str, ...]) -> None:
    ok(mailfleet("domains", "add", "example.com"))
    ok(mailfleet("grants", "provision", "a@example.com"))
    assert one_error_line(mailfleet(*args)) == "error: workspace: no workspace named 'nowhere'"


@pytest.fixture
def importable_helpdesk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let a test import the example in-process, and forget it afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    sys.modules.pop("helpdesk", None)


@pytest.mark.usefixtures("importable_helpdesk")
def test_agent_references(mailfleet: Invoke, state, monkeypatch: pytest.MonkeyPatch) -> None:
    ok(mailfleet("domains", "add", "example.com"))
    monkeypatch.chdir(ROOT)
    ok(mailfleet("grants", "provision", "a@example.com", "--agent", str(HELPDESK)))
    monkeypatch.chdir(ROOT / HELPDESK.parent)
    ok(mailfleet("grants", "provision", "b@example.com", "--agent", "helpdesk:Helpdesk"))
    ok(mailfleet("grants", "provision", "c@example.com", "--agent", "helpdesk.py:Helpdesk"))
    agents = {g.address: g.agent for g in state(lambda fleet: fleet.grants())}
    assert set(agents.values()) == {"helpdesk:Helpdesk"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("grants", "deprovision", "-f", "missing.txt"), "error: --from-file: cannot read "),
        (("grants", "provision"), "error: addresses: give at least one"),
        (("run", "no_such_module_here:Agent"), "error: APP: cannot import 'no_such_module_here'"),
        (("run", "nowhere/agent.py"), "error: APP: no such file: nowhere/agent.py"),
        (("run", "test_cli:Nothing"), "error: APP: test_cli has no Agent subclass named 'Nothing'"),
        (("run", "mailfleet"), "error: APP: mailfleet defines 0 Agent subclasses (none)"),
    ],
)
def test_bad_input_is_one_error_line(
    mailfleet: Invoke, args: tuple[str, ...], expected: str
) -> None:
    assert one_error_line(mailfleet(*args)).startswith(expected)


def test_settings_come_from_the_environment(
    database_url: str, state, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILFLEET_DATABASE_URL", database_url)
    ok(CliRunner().invoke(app, ["--application", "other", "domains", "add", "example.com"]))
    assert "example.com" in ok(
        CliRunner().invoke(app, ["--application", "other", "domains", "list"])
    )
    # the default application was never made here: a reading command says so, makes none
    assert one_error_line(CliRunner().invoke(app, ["domains", "list"])) == (
        "error: application: no application 'default' in this database (applications: other)"
    )


def test_bad_settings_are_one_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILFLEET_PROVISION_BATCH_SIZE", "0")
    assert one_error_line(CliRunner().invoke(app, ["domains", "list"])) == (
        "error: settings.provision_batch_size: Input should be greater than or equal to 1"
    )


@pytest.mark.anyio
async def test_run_serves_the_helpdesk_until_sigint(tmp_path: Path) -> None:
    """The README's walk-through: run the example, mail it over SMTP, find its reply."""
    command = [sys.executable, "-m", "mailfleet", "run", str(HELPDESK), "--smtp-port", "0"]
    env = {**os.environ, "MAILFLEET_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    async with await anyio.open_process(command, cwd=ROOT, env=env) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        shown = ""
        with anyio.fail_after(30):
            async for chunk in TextReceiveStream(process.stdout):
                shown += chunk
                if "press Ctrl-C" in shown:
                    break
        port = int(re.search(r"SMTP: 127\.0\.0\.1:(\d+)", shown).group(1))  # type: ignore[union-attr]
        await anyio.to_thread.run_sync(mail_the_helpdesk, port)
        async with Fleet(home=tmp_path / "home") as fleet:
            await wait_for_events(fleet, "message.captured")
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(10):
            shown += "".join([chunk async for chunk in TextReceiveStream(process.stdout)])
            errors = "".join([chunk async for chunk in TextReceiveStream(process.stderr)])
            assert await process.wait() == 0, shown + errors

    assert "help@example.com" in shown
    assert "support@example.com" in shown
    assert f"database: sqlite:///{tmp_path / 'home' / 'mailfleet.db'}" in shown
    assert shown.rstrip().endswith("Goodbye.")
    assert "Traceback" not in shown + errors

    async with Fleet(home=tmp_path / "home") as fleet:
        grants = await fleet.grants()
        (reply,) = await fleet.outbox()
    assert {(g.address, g.agent) for g in grants} == {
        ("help@example.com", "helpdesk:Helpdesk"),
        ("support@example.com", "helpdesk:Helpdesk"),
    }
    assert reply.status == "captured"
    assert reply.last_response == "captured in dev mode (no relay)"
    assert reply.recipients == ("ada@example.org",)
    assert reply.subject == "Re: My printer is on fire"


def mail_the_helpdesk(port: int) -> None:
    """What the README tells a user to do from a second terminal."""
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.sendmail(
            "ada@example.org",
            ["help@example.com"],
            b"From: ada@example.org\r\nTo: help@example.com\r\n"
            b"Subject: My printer is on fire\r\n\r\nPlease help.\r\n",
        )


def test_python_dash_m_mailfleet_shows_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mailfleet", "--help"], capture_output=True, text=True, check=True
    )
    assert "Usage: mailfleet" in done.stdout
