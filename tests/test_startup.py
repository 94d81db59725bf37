"""Failing to start is loud; SIGTERM stops a fleet as Ctrl-C does, whatever it is doing.

A port that cannot be listened on ends ``serve_smtp`` at once with
:class:`ListenFailed`; ``mailfleet run`` and ``mailfleet worker`` then print one
``error:`` line naming the address and exit 1.

Signals come at points the tests hold the command at: while the agent's module
imports (it sleeps there), while the fleet opens (the test holds the SQLite
write lock) and while a handler runs (it sleeps). Each time the command exits
0 with its goodbye line; the running handler finishes within the grace and
its completion is committed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import select
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import anyio
import pytest

from mailfleet import Fleet, MailfleetError
from mailfleet.model.errors import ListenFailed
from mailfleet.transports.smtp_in import serve_smtp


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.anyio
async def test_serve_smtp_on_a_busy_port_raises_listen_failed(busy_port: int) -> None:
    with anyio.fail_after(5), pytest.raises(ListenFailed) as raised:
        await serve_smtp(None, host="127.0.0.1", port=busy_port)  # type: ignore[arg-type]
    failure = raised.value
    assert isinstance(failure, MailfleetError)
    assert isinstance(failure, OSError)
    assert failure.errno == errno.EADDRINUSE
    assert failure.address == f"127.0.0.1:{busy_port}"
    assert str(failure) == (
        f"cannot listen for SMTP on 127.0.0.1:{busy_port}: "
        f"address already in use ([Errno {errno.EADDRINUSE}])"
    )


# -- the commands, as real processes -------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
HELPDESK = str(Path("examples", "helpdesk", "helpdesk.py"))
GOODBYE = {"run": "mailfleet stopped. Goodbye.", "worker": "worker stopped."}

SLOW_IMPORT = """
import time

from mailfleet import Agent

print("importing", flush=True)
time.sleep(30)


class Late(Agent):
    addresses = ("late@example.com",)
"""

SLOW_HANDLER = """
from pathlib import Path

import anyio

from mailfleet import Agent, InboundMessage

STARTED = Path(__file__).with_name("handler-started")


class Slow(Agent):
    addresses = ("slow@example.com",)

    async def on_message(self, message: InboundMessage) -> None:
        STARTED.touch()
        await anyio.sleep(1)
        self.state["handled"] = message.subject  # saved with the completion
"""


@contextmanager
def mailfleet(*args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``mailfleet ARGS...`` in a process of its own, killed if it outlives the test."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mailfleet", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def read_until(process: subprocess.Popen[bytes], marker: str, *, within: float = 30) -> str:
    """What the process printed on stdout up to ``marker``; fail if it does not come."""
    assert process.stdout is not None
    fd, shown = process.stdout.fileno(), b""
    deadline = time.monotonic() + within
    while marker.encode() not in shown:
        left = deadline - time.monotonic()
        ready = left > 0 and select.select([fd], [], [], left)[0]
        chunk = os.read(fd, 65536) if ready else b""
        assert chunk, f"no {marker!r} within {within}s; printed {shown!r}"
        shown += chunk
    return shown.decode()


def not_logs(err: str) -> list[str]:
    """The lines of stderr that are not log records (``run`` and ``worker`` log at INFO,
    as JSON lines when stderr is not a terminal)."""
    return [line for line in err.splitlines() if not line.startswith('{"time": ')]


def finish(process: subprocess.Popen[bytes], *, within: float = 20) -> tuple[int, str, str]:
    """Wait for the process to end: its exit code, the rest of its stdout, its stderr."""
    out, err = process.communicate(timeout=within)
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("command", ["run", "worker"])
def test_a_busy_port_is_one_error_line_and_exit_1(command: str, busy_port: int) -> None:
    if command == "run":
        started = mailfleet("run", HELPDESK, "--smtp-port", str(busy_port))
    else:
        started = mailfleet("worker", HELPDESK, MAILFLEET_SMTP_PORT=str(busy_port))
    with started as process:
        code, out, err = finish(process)
    assert code == 1, out + err
    assert not_logs(err) == [
        f"error: cannot listen for SMTP on 127.0.0.1:{busy_port}: "
        f"address already in use ([Errno {errno.EADDRINUSE}])"
    ]
    assert "serving" not in out
    assert GOODBYE[command] not in out


@pytest.mark.parametrize(
    ("command", "signum"),
    [("run", signal.SIGTERM), ("run", signal.SIGINT), ("worker", signal.SIGTERM)],
)
def test_a_signal_while_the_agent_imports_stops_at_once(
    command: str, signum: signal.Signals, tmp_path: Path
) -> None:
    module = tmp_path / "slow_import.py"
    module.write_text(SLOW_IMPORT)
    with mailfleet(command, str(module)) as process:
        read_until(process, "importing")
        process.send_signal(signum)
        code, out, err = finish(process, within=10)
    assert (code, err) == (0, ""), out + err
    assert out.splitlines() == [GOODBYE[command]]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/PID/fd")
def test_sigterm_while_the_fleet_opens_stops_it(tmp_path: Path) -> None:
    """The database is locked, so the fleet cannot open: SIGTERM comes in the event loop."""
    database = Path(os.environ["MAILFLEET_HOME"], "mailfleet.db")
    database.parent.mkdir(parents=True)
    lock = sqlite3.connect(database, isolation_level=None)
    try:
        lock.execute("PRAGMA journal_mode=WAL")
        lock.execute("BEGIN IMMEDIATE")
        with mailfleet("run", HELPDESK, "--smtp-port", "0") as process:
            wait_for_open(process.pid, database)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            lock.rollback()
            code, out, err = finish(process)
    finally:
        lock.close()
    assert (code, err) == (0, ""), out + err
    assert out.splitlines() == [GOODBYE["run"]]


def wait_for_open(pid: int, path: Path, *, within: float = 30) -> None:
    """Wait until process ``pid`` has the file ``path`` open."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):  # closed meanwhile
                if Path(os.readlink(fd)) == path:
                    return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} did not open {path} within {within}s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_serving_lets_the_running_handler_finish(
    signum: signal.Signals, tmp_path: Path
) -> None:
    module = tmp_path / "slow_agent.py"
    module.write_text(SLOW_HANDLER)
    started = tmp_path / "handler-started"
    with mailfleet(
        "run", str(module), "--smtp-port", "0", MAILFLEET_SHUTDOWN_GRACE="20"
    ) as process:
        shown = read_until(process, "press Ctrl-C")
        port = int(re.search(r"SMTP: 127\.0\.0\.1:(\d+)", shown).group(1))  # type: ignore[union-attr]
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail(
                "ada@example.org", ["slow@example.com"], b"Subject: kept\r\n\r\nHello.\r\n"
            )
        deadline = time.monotonic() + 20
        while not started.exists():
            assert time.monotonic() < deadline, "the handler did not start"
            time.sleep(0.02)
        process.send_signal(signum)  # the handler is running: it gets the grace to finish
        code, out, err = finish(process)
    assert code == 0, out + err
    assert "Traceback" not in err
    assert out.splitlines()[-1] == GOODBYE["run"]
    # run logs at INFO, JSON lines on a stderr that is not a terminal: the message came in
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(r["logger"] == "mailfleet.intake" and r["level"] == "info" for r in logged)

    async def stored() -> tuple[dict[str, object], int]:
        async with Fleet() as fleet:
            with anyio.fail_after(5):
                await fleet.wait_idle()  # its completion was committed, nothing is left over
            return await fleet.agent_state("slow@example.com"), len(await fleet.dead_letters())

    assert anyio.run(stored) == ({"handled": "kept"}, 0)
