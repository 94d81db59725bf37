"""The README's quickstart, run as written: the example fleet, the smtplib message from a
second terminal, and the two commands that show the reply, whose headers must be the
ones the README prints.

Only the port changes (a free one instead of 2525, so a busy 2525 cannot break the
suite) and the interpreter (this one, for ``python3``)."""

from __future__ import annotations

import email
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from email.policy import default
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAILFLEET = Path(sys.executable).with_name("mailfleet")
HELPDESK = "examples/helpdesk/helpdesk.py"  # what `make run` runs


def quickstart() -> tuple[list[str], str]:
    """The commands of the second terminal, and the reply's headers as the README shows them."""
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    second = blocks[1]  # the first block is `make run` / `make test`
    # A command starts a line with its program; the others continue the one before.
    commands = [c.strip() for c in re.split(r"\n(?=python3 |\.venv/)", second) if c.strip()]
    (headers,) = re.findall(r"```text\n(.*?)```", section, flags=re.S)
    return commands, headers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_quickstart_shows_a_threaded_signed_reply(tmp_path: Path) -> None:
    commands, shown = quickstart()
    assert commands[0].startswith("python3 -c")
    assert [c.split("#")[0].strip() for c in commands[1:]] == [
        ".venv/bin/mailfleet outbox list",
        ".venv/bin/mailfleet outbox show 1 --raw > reply.eml",
    ]
    assert f"EXAMPLE ?= {HELPDESK}" in (ROOT / "Makefile").read_text()
    if not MAILFLEET.exists():
        pytest.skip(reason=f"no mailfleet command beside {sys.executable}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLEET_")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    # `make run`: the example fleet, in this folder's .mailfleet/ (cwd: tmp_path)
    server = subprocess.Popen(
        [
            str(MAILFLEET),
            "run",
            str(ROOT / "examples/helpdesk/helpdesk.py"),
            "--smtp-port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        assert server.stdout is not None
        while "serving" not in (line := server.stdout.readline()):
            assert line, "mailfleet run ended before serving"
            assert time.monotonic() < deadline
        shell = [c.replace("2525", str(port)) for c in commands]
        shell = [re.sub(r"^python3 ", shlex.quote(sys.executable) + " ", c) for c in shell]
        shell = [c.replace(".venv/bin/mailfleet", shlex.quote(str(MAILFLEET))) for c in shell]
        sent = subprocess.run(
            ["bash", "-c", shell[0]], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert sent.returncode == 0, sent.stderr
        listing = [str(MAILFLEET), "outbox", "list", "--json"]
        while True:  # the reply is captured once the handler ran and the sender passed
            out = subprocess.run(listing, cwd=tmp_path, env=env, capture_output=True, text=True)
            if out.returncode == 0 and any(
                r["status"] == "captured" for r in json.loads(out.stdout)
            ):
                break
            assert time.monotonic() < deadline, out.stderr
            time.sleep(0.2)
        for command in shell[1:]:
            done = subprocess.run(
                ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
    assert server.returncode == 0

    raw = (tmp_path / "reply.eml").read_bytes()
    reply = email.message_from_bytes(raw, policy=default)
    signatures = reply.get_all("DKIM-Signature") or []
    assert len(signatures) == 2
    for line in shown.splitlines():
        name, _, value = line.partition(": ")
        if name == "DKIM-Signature":
            algorithm = re.search(r"a=([\w-]+);", value)
            assert algorithm is not None
            assert any(f"a={algorithm.group(1)};" in s for s in signatures), line
            continue
        assert str(reply[name]) == value, (name, reply[name])
    names = [name for name, _ in reply.items()]
    shown_names = [line.split(":", 1)[0] for line in shown.splitlines()]
    assert [n for n in names if n in shown_names] == shown_names  # in the order shown
