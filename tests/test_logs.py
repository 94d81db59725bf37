"""What an operator reads: one log line per message received, failed handler, dead letter,
send outcome, refusal and status change, as JSON lines with their ids; never a body or a
secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from mailfleet import Agent, Fleet, GrantStatus, InboundMessage, SendStatus
from mailfleet.logs import configure_logging
from relay import relay_peer
from support import wait_until

pytestmark = pytest.mark.anyio

SECRET_BODY = "the-body-must-never-be-logged"
PASSWORD = "hunter2-never-logged"

Lines = Callable[[], list[dict[str, Any]]]


class Echo(Agent):
    async def on_message(self, message: InboundMessage) -> None:
        if message.subject == "poison":
            raise RuntimeError("cannot digest this")
        await self.reply(message, text=f"echo: {SECRET_BODY}")


@pytest.fixture
def logged() -> Iterator[tuple[io.StringIO, Lines]]:
    """Configure JSON logging into a buffer; the function returns the lines so far."""
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield stream, lines
    reset_logging()


def reset_logging() -> None:
    """Undo configure_logging for the next tests."""
    for name in ("mailfleet", "mail.log"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def mail(subject: str) -> bytes:
    return (
        f"From: ada@example.org\r\nTo: echo@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.org>\r\n\r\n{SECRET_BODY}\r\n"
    ).encode()


async def test_the_life_of_a_message_is_logged(
    database_url: str, logged: tuple[io.StringIO, Lines]
) -> None:
    stream, lines = logged
    async with relay_peer() as relay:
        settings: dict[str, Any] = {
            "relay_host": "127.0.0.1",
            "relay_port": relay.port,
            "relay_starttls": False,
            "max_attempts": 2,
            "retry_base": 0.01,
            "poll_interval": 0.05,
            "plugins": "",
        }
        async with Fleet(database_url=database_url, agents=[Echo], **settings) as fleet:
            await fleet.add_domain("example.com")
            grant = await fleet.provision("echo@example.com", agent=Echo)
            async with anyio.create_task_group() as tg:
                await tg.start(fleet.serve)
                await fleet.deliver(grant, mail("hello"))
                await fleet.deliver(grant, mail("poison"))
                await fleet.wait_idle()
                await wait_until(lambda: any("sent to" in line["message"] for line in lines()))
                tg.cancel_scope.cancel()
            await fleet.set_grant_status(grant.id, GrantStatus.PAUSED)
            refused = await fleet.send(grant, "bob@example.org", subject="s", text=SECRET_BODY)
            assert refused.status is SendStatus.PAUSED

    found = lines()
    by_logger: dict[str, list[dict[str, Any]]] = {}
    for line in found:
        assert {"time", "level", "logger", "message"} <= line.keys()
        by_logger.setdefault(line["logger"], []).append(line)

    received = by_logger["mailfleet.intake"]
    assert [line["header_message_id"] for line in received] == [
        "<hello@example.org>",
        "<poison@example.org>",
    ]
    assert all(line["grant_id"] == grant.id and line["size"] > 0 for line in received)

    failures = [line for line in by_logger["mailfleet.agents"] if line["level"] == "warning"]
    assert len(failures) == 2  # both attempts of the poison message
    assert "RuntimeError: cannot digest this" in failures[0]["message"]
    (dead,) = by_logger["mailfleet.worker"]
    assert dead["level"] == "warning"
    assert "dead-lettered after 2 attempts" in dead["message"]
    assert dead["grant_id"] == grant.id

    (sent,) = by_logger["mailfleet.sender"]
    assert sent["outcome"] == "message.sent"
    assert sent["recipients"] == ["ada@example.org"]
    assert sent["code"] == 250

    (status,) = by_logger["mailfleet.directory"][-1:]
    assert status["status"] == "paused"
    (refusal,) = by_logger["mailfleet.outbox"]
    assert refusal["status"] == "paused"
    assert "grant_paused" in refusal["message"]

    serving = [line for line in by_logger["mailfleet.fleet"] if "serving" in line["message"]]
    assert len(serving) == 1
    assert "test_logs:Echo" in serving[0]["message"]
    assert SECRET_BODY not in stream.getvalue()


async def test_no_secret_in_the_logs(database_url: str, logged: tuple[io.StringIO, Lines]) -> None:
    stream, _ = logged
    url = database_url
    if url.startswith("postgresql"):
        url = url.replace("postgres@", f"postgres:{PASSWORD}@", 1)  # trust auth ignores it
    settings: dict[str, Any] = {"relay_password": PASSWORD, "plugins": "", "smtp_port": 0}
    async with Fleet(database_url=url, default_agent=Echo, **settings) as fleet:
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            tg.cancel_scope.cancel()
    text = stream.getvalue()
    assert "serving application" in text
    assert PASSWORD not in text


def test_text_and_rich_formats_write_one_line_per_record() -> None:
    for format in ("text", "rich"):
        stream = io.StringIO()
        configure_logging("warning", format, stream=stream)  # type: ignore[arg-type]
        logging.getLogger("mailfleet.worker").info("hidden at warning")
        logging.getLogger("mailfleet.worker").warning("lost the lease of grant %s", "g1")
        text = stream.getvalue()
        assert "hidden" not in text
        assert "mailfleet.worker" in text
        assert "lost the lease of grant g1" in text
    reset_logging()
