"""SMTP in and out, each against its bare baseline, and DKIM RSA signing against dkimpy.

* **Inbound**: messages/s accepted by mailfleet's MX running as a front end
  (``run_worker=False``; aiosmtpd + ``Fleet.deliver``: each ``250`` means the
  message and its queue entry are committed, on SQLite) against a bare
  aiosmtpd sink that accepts and drops. Both servers
  run in a subprocess; the same aiosmtplib client load (``CONNECTIONS``
  connections, reused) drives each from this process, in ``ROUNDS``
  alternated rounds; the figures are the medians.
* **The cost of fsync**: the same inbound load, in the same alternated rounds,
  against a second MX whose SQLite runs ``synchronous=NORMAL`` (a commit survives
  a crash of the process, not a power loss) beside the product's
  ``synchronous=FULL`` (the WAL fsynced before every ``250``).
  ``inbound_fsync_ratio`` = FULL ÷ NORMAL: group commit shares one fsync among
  the messages of a batch, so it stays close to 1.
* **Outbound**: messages/s through mailfleet's outbound path (``SENDERS``
  tasks calling ``Fleet.send``: build, DKIM-sign with RSA-2048 and Ed25519,
  store in the outbox, claim, send over ``POOL`` pooled connections, record
  the result) against two baselines in the same ``ROUNDS`` alternated rounds
  (medians): bare aiosmtplib sending the same built messages over the same
  number of reused connections, and *sign-and-send*, the same but each
  message signed in-line with the project's own signer (both keys) just
  before it is sent, no store: ``outbound_signed_ratio`` = mailfleet ÷
  sign-and-send, the fair comparison (mailfleet must sign every message).
  The relay is a bare aiosmtpd sink in a subprocess. Then where mailfleet's
  CPU goes: this process's CPU per message to queue everything with nothing
  sending, then to send it all, beside sign-and-send's CPU per message.
  Also printed: the *ceiling* no implementation could pass on this machine,
  ``os.cpu_count()`` cores divided by the CPU per message of the bare client,
  the sink (both measured in the baseline run) and the two DKIM signatures,
  as if building, storing, claiming and recording cost nothing.
* **DKIM**: RSA-2048 signatures/s with mailfleet's signer against dkimpy's own
  ``dkim.sign`` (see ``bench/dkim_sign.py``).

Usage (from the repository root)::

    .venv/bin/python bench/smtp.py
    .venv/bin/python bench/smtp.py --parts outbound   # only some (inbound,outbound,dkim)

The last line is one JSON object with ``inbound_msgs_per_s``,
``inbound_ratio``, ``inbound_unsynced_msgs_per_s``, ``inbound_fsync_ratio``,
``outbound_msgs_per_s``, ``outbound_ratio``, ``outbound_signed_ratio``,
``outbound_queue_cpu_us_per_msg``, ``outbound_send_cpu_us_per_msg``,
``outbound_signed_cpu_us_per_msg``, ``outbound_ceiling_ratio``,
``rsa_sign_per_s`` and ``rsa_sign_ratio``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import anyio
from _common import UNPACED, emit, median
from dkim_sign import measure_rsa

from mailfleet import Agent, Fleet, Grant, InboundMessage
from mailfleet.auth.dkim import DkimSigner, generate_key
from mailfleet.store import database

INBOUND_MESSAGES = 6000
ROUNDS = 3
CONNECTIONS = 20
OUTBOUND_MESSAGES = 3000
POOL = 4
SENDERS = 64

HERE = Path(__file__).resolve().parent


def message(n: int, to: str = "desk@example.com") -> bytes:
    return (
        f"From: Ada <ada@example.org>\r\nTo: {to}\r\nSubject: Message {n}\r\n"
        f"Message-ID: <m{n}@example.org>\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\n"
        "\r\n" + "A line of a message body, as people write them.\r\n" * 20
    ).encode()


# -- servers, each in its own process -----------------------------------------------------


async def run_sink() -> None:
    """A bare aiosmtpd server that accepts everything and keeps nothing."""
    from aiosmtpd.smtp import SMTP

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    server = await asyncio.get_running_loop().create_server(lambda: SMTP(Sink()), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


class Desk(Agent):
    async def on_message(self, message: InboundMessage) -> None:
        return None


async def run_mx(database_url: str, synchronous: str) -> None:
    """mailfleet's MX as a front end: each 250 means stored in the durable queue."""
    database.SQLITE_SYNCHRONOUS = synchronous  # FULL, the product's; NORMAL to compare
    async with Fleet(
        database_url=database_url,
        smtp_port=0,
        plugins="",
        run_worker=False,
        queue_limit=1_000_000,  # nothing drains the queue while this measures
    ) as fleet:
        await fleet.add_domain("example.com")
        fleet.bind(Desk)
        # every message of every run goes to one grant: no daily receive limit here
        await fleet.update_policy("default", {"daily_receive_limit": 100_000_000})
        await fleet.provision("desk@example.com", agent=Desk)
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            print(fleet.smtp_port, flush=True)


@dataclass(frozen=True)
class Server:
    """A server of this file running in a subprocess."""

    port: int
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far (user + system), from /proc."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def server(*args: str) -> AsyncIterator[Server]:
    """Start this file in a server mode in a subprocess; yield it once it listens."""
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, read from a thread
        [sys.executable, str(Path(__file__)), *args], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await anyio.to_thread.run_sync(process.stdout.readline)
        yield Server(int(line), process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


# -- clients ------------------------------------------------------------------------------


async def send_all(
    port: int,
    messages: Sequence[bytes],
    connections: int,
    prepare: Callable[[bytes], bytes] | None = None,
) -> float:
    """Send every message over ``connections`` reused connections; messages/s.

    ``prepare`` (signing, for the sign-and-send baseline) runs in-line on each message
    just before it is sent, in the sending task."""
    chunks = [messages[i::connections] for i in range(connections)]

    async def one(chunk: Sequence[bytes]) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
            for raw in chunk:
                if prepare is not None:
                    raw = prepare(raw)
                await client.sendmail("ada@example.org", ["desk@example.com"], raw)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for chunk in chunks:
            tg.start_soon(one, chunk)
    return len(messages) / (time.perf_counter() - started)


async def inbound() -> dict[str, float]:
    bare: list[float] = []
    ours: list[float] = []
    unsynced: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        async with (
            server("--sink") as sink,
            server("--mx", f"sqlite:///{folder}/mx.db", "FULL") as mx,
            server("--mx", f"sqlite:///{folder}/normal.db", "NORMAL") as normal,
        ):
            warm_up = [message(-n) for n in range(1, 201)]
            for port in (sink.port, mx.port, normal.port):
                await send_all(port, warm_up, CONNECTIONS)
            for turn in range(ROUNDS):  # alternated, so all see the same machine
                first = turn * INBOUND_MESSAGES  # new messages: none is a retry
                batch = [message(n) for n in range(first, first + INBOUND_MESSAGES)]
                bare.append(await send_all(sink.port, batch, CONNECTIONS))
                ours.append(await send_all(mx.port, batch, CONNECTIONS))
                unsynced.append(await send_all(normal.port, batch, CONNECTIONS))
    ratio = median(ours) / median(bare)
    print(
        f"inbound: mailfleet MX {median(ours):,.0f} msgs/s, bare aiosmtpd sink "
        f"{median(bare):,.0f} msgs/s (medians of {ROUNDS} alternated rounds: "
        f"{', '.join(f'{o:,.0f}/{b:,.0f}' for o, b in zip(ours, bare, strict=True))})"
    )
    print(
        f"fsync: synchronous=FULL {median(ours):,.0f} msgs/s, synchronous=NORMAL "
        f"{median(unsynced):,.0f} msgs/s (rounds: "
        f"{', '.join(f'{o:,.0f}/{u:,.0f}' for o, u in zip(ours, unsynced, strict=True))})"
    )
    return {
        "inbound_msgs_per_s": round(median(ours), 1),
        "inbound_baseline_msgs_per_s": round(median(bare), 1),
        "inbound_ratio": round(ratio, 3),
        "inbound_unsynced_msgs_per_s": round(median(unsynced), 1),
        "inbound_fsync_ratio": round(median(ours) / median(unsynced), 3),
    }


def bench_signer() -> DkimSigner:
    """The project's signer with the keys a fleet's domain gets: RSA-2048 and Ed25519."""
    return DkimSigner(
        "example.com",
        [generate_key("ed25519", selector="e"), generate_key("rsa", selector="r")],
    )


def signing_cpu_per_message() -> float:
    """CPU seconds mailfleet's signer takes for one bench message (RSA-2048 + Ed25519)."""
    signer = bench_signer()
    raw = message(0, to="bob@example.org")
    signer.sign(raw)
    started = time.process_time()
    for _ in range(500):
        signer.sign(raw)
    return (time.process_time() - started) / 500


@asynccontextmanager
async def sending_fleet(port: int) -> AsyncIterator[tuple[Fleet, Grant]]:
    """A fleet on a fresh SQLite store relaying to the sink at ``port``, and its grant."""
    with tempfile.TemporaryDirectory() as folder:
        async with Fleet(
            database_url=f"sqlite:///{folder}/out.db",
            relay_host="127.0.0.1",
            relay_port=port,
            relay_starttls=False,
            relay_pool_size=POOL,
            plugins="",
        ) as fleet:
            await fleet.add_domain("example.com")
            # the relay's throughput is measured, not the workspace's pacing
            await fleet.update_policy("default", UNPACED)
            yield fleet, await fleet.provision("desk@example.com")


async def queue_all(fleet: Fleet, grant: Grant) -> None:
    """``SENDERS`` tasks call ``Fleet.send`` until every message is queued."""

    async def produce(offset: int) -> None:
        for n in range(offset, OUTBOUND_MESSAGES, SENDERS):
            result = await fleet.send(
                grant, "bob@example.org", subject=f"Message {n}", text="Hello.\n" * 20
            )
            assert result.ok, result

    async with anyio.create_task_group() as producers:
        for offset in range(SENDERS):
            producers.start_soon(produce, offset)


async def all_sent(fleet: Fleet) -> None:
    while await fleet.outbox_count("sent") < OUTBOUND_MESSAGES:  # noqa: ASYNC110
        await anyio.sleep(0.02)


async def mailfleet_outbound(port: int) -> float:
    """Messages/s through mailfleet's outbound path to the sink at ``port``: 64 tasks
    call ``Fleet.send`` until every message is recorded sent (a fresh SQLite store)."""
    async with sending_fleet(port) as (fleet, grant), anyio.create_task_group() as tg:
        await tg.start(fleet.serve)
        started = time.perf_counter()
        await queue_all(fleet, grant)
        await all_sent(fleet)
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    return OUTBOUND_MESSAGES / elapsed


async def outbound_stages(port: int) -> tuple[float, float]:
    """Where mailfleet's outbound CPU goes: this process's CPU per message (seconds)
    to queue every message with nothing sending (build, sign, gates, outbox), then to
    send them all once queued (claim, SMTP, record)."""
    async with sending_fleet(port) as (fleet, grant):
        started = time.process_time()
        await queue_all(fleet, grant)
        queuing = (time.process_time() - started) / OUTBOUND_MESSAGES
        async with anyio.create_task_group() as tg:
            started = time.process_time()
            await tg.start(fleet.serve)
            await all_sent(fleet)
            sending = (time.process_time() - started) / OUTBOUND_MESSAGES
            tg.cancel_scope.cancel()
    return queuing, sending


async def outbound() -> dict[str, float]:
    bare: list[float] = []
    signed: list[float] = []
    ours: list[float] = []
    signer = bench_signer()
    async with server("--sink") as sink:
        port = sink.port
        built = [message(n, to="bob@example.org") for n in range(OUTBOUND_MESSAGES)]
        await send_all(port, built[:200], POOL)  # warm-up
        client_cpu, sink_cpu = time.process_time(), sink.cpu_seconds()
        bare.append(await send_all(port, built, POOL))
        client_cpu = (time.process_time() - client_cpu) / OUTBOUND_MESSAGES
        sink_cpu = (sink.cpu_seconds() - sink_cpu) / OUTBOUND_MESSAGES
        signed_cpu = time.process_time()
        for turn in range(ROUNDS):  # alternated, so all see the same machine
            if turn:
                bare.append(await send_all(port, built, POOL))
            started = time.process_time()
            signed.append(await send_all(port, built, POOL, prepare=signer.sign))
            signed_cpu = (time.process_time() - started) / OUTBOUND_MESSAGES
            ours.append(await mailfleet_outbound(port))
        queuing, sending = await outbound_stages(port)
    # What no implementation could beat here: the machine's cores spent on nothing
    # but the bare client's and the sink's CPU per message (as just measured) plus
    # the two signatures, with building, storing, claiming and recording free.
    cores = os.cpu_count() or 1
    sign_cpu = signing_cpu_per_message()
    ceiling = cores / (client_cpu + sink_cpu + sign_cpu)
    rounds = ", ".join(
        f"{o:,.0f}/{s:,.0f}/{b:,.0f}" for o, s, b in zip(ours, signed, bare, strict=True)
    )
    print(
        f"outbound: mailfleet {median(ours):,.0f} msgs/s (build, sign RSA+Ed25519, outbox, "
        f"send, record), sign-and-send {median(signed):,.0f} msgs/s, bare aiosmtplib "
        f"{median(bare):,.0f} msgs/s over {POOL} connections (medians of {ROUNDS} "
        f"alternated rounds, ours/signed/bare: {rounds})"
    )
    print(
        f"outbound ceiling on {cores} cores: {ceiling:,.0f} msgs/s = "
        f"{ceiling / median(bare):.2f}x bare "
        f"(CPU per message: client {client_cpu * 1e6:.0f} us, sink {sink_cpu * 1e6:.0f} us, "
        f"signatures {sign_cpu * 1e6:.0f} us)"
    )
    print(
        f"outbound CPU per message in this process: mailfleet queuing {queuing * 1e6:.0f} us "
        f"(build, sign, gates, outbox; nothing sending) + sending {sending * 1e6:.0f} us "
        f"(claim, SMTP, record; all queued) = {(queuing + sending) * 1e6:.0f} us, against "
        f"sign-and-send's {signed_cpu * 1e6:.0f} us (of which the signatures "
        f"{sign_cpu * 1e6:.0f} us, the bare client {client_cpu * 1e6:.0f} us)"
    )
    return {
        "outbound_queue_cpu_us_per_msg": round(queuing * 1e6, 1),
        "outbound_send_cpu_us_per_msg": round(sending * 1e6, 1),
        "outbound_signed_cpu_us_per_msg": round(signed_cpu * 1e6, 1),
        "outbound_msgs_per_s": round(median(ours), 1),
        "outbound_baseline_msgs_per_s": round(median(bare), 1),
        "outbound_ratio": round(median(ours) / median(bare), 3),
        "outbound_signed_baseline_msgs_per_s": round(median(signed), 1),
        "outbound_signed_ratio": round(median(ours) / median(signed), 3),
        "outbound_ceiling_msgs_per_s": round(ceiling, 1),
        "outbound_ceiling_ratio": round(ceiling / median(bare), 3),
    }


async def main(parts: Sequence[str]) -> None:
    figures: dict[str, float] = {}
    if "inbound" in parts:
        figures.update(await inbound())
    if "outbound" in parts:
        figures.update(await outbound())
    if "dkim" not in parts:
        emit(figures)
        return
    rsa = measure_rsa(3.0)
    print(
        f"DKIM RSA-2048: {rsa['rsa_sign_per_s']:,.0f} signatures/s, "
        f"dkimpy {rsa['dkimpy_rsa_sign_per_s']:,.0f}/s"
    )
    figures.update(rsa)
    emit(figures)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sink"]:
        anyio.run(run_sink)
    elif sys.argv[1:2] == ["--mx"]:
        anyio.run(run_mx, sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["--parts"]:  # only some: --parts outbound,dkim
        anyio.run(main, sys.argv[2].split(","))
    else:
        anyio.run(main, ("inbound", "outbound", "dkim"))
