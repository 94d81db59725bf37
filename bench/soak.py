"""A soak: a fixed mixed load on a fleet run as an operator runs it, for minutes on end.

Nothing acknowledged may be lost or done twice, and the fleet's memory must
not grow. Three processes, everything on loopback:

* **The fleet**: ``python -m mailfleet run bench/soak_agent.py`` (``SoakDesk``,
  eight grants ``desk-0@`` ... ``desk-7@example.com``; each message is answered
  with a reply), with a SQLite store in a temporary folder, its MX and HTTP API
  on free ports, the peer below as its relay (``MAILFLEET_RELAY_HOST``) and as
  its nameserver (``MAILFLEET_DNS_NAMESERVERS``).
* **The peer** (this file, ``--peer``): the relay, a
  :class:`~mailfleet.transports.simulator.SimulatedInternet` that accepts
  every recipient but ``unknown+N@`` (``550 5.1.1`` at RCPT: a bounce at once)
  and, a second after accepting a message for ``late-bounce+N@``, mails an
  RFC 3464 DSN from ``<>`` to its VERP envelope sender at the fleet's MX; the
  webhook receiver (``tests/webhook_receiver.py``, answering 200); and an
  authoritative nameserver (``tests/dnsserver.py``) for the domains involved
  (SPF, DMARC, the recipients' MX), so that no lookup leaves the machine.
  Each receipt is journaled to a file with its time.
* **The driver** (this file): the load, a progress line every few seconds,
  the RSS samples, the checks.

**Load.** ``--rate`` messages/s (default 20) over ``CONNECTIONS`` kept-open
SMTP connections to the MX, message N due N / rate seconds after the start,
to ``desk-(N mod 8)``, subject ``soak N``, from one of 500 correspondents;
but each grant's every 50th message comes from a ``late-bounce+N@`` address
and every 100th from an ``unknown+N@`` one: 3 % hard bounces per grant, under
the policy's 5 % review rate. A 4xx is retried with the same bytes (the MX
stores them once). Before the load, through the fleet's HTTP API: the
grants' workspace gets the benchmarks' ``UNPACED`` policy (no rate, ramp or
breaker holds the replies back: the soak measures the fleet, not its
pacing) and one webhook subscription is created, for every event. While the
load runs the driver also reads ``GET /v1/events``, as a consumer would.

**Latencies**, p50 and p99 in ms: *accept to handler*, from the client's
``250`` to the start of the handler (the agent journals it); *reply to
relay*, from that start (where the handler calls ``reply``) to the relay's
receipt; *event to webhook*, from the event's ``time`` (millisecond
precision) to the receiver's receipt.

**RSS**: the fleet process's ``VmRSS`` (``/proc/PID/status``), sampled every
``--seconds`` / 300 (at least every second) through the load and the drain.
``rss_growth_mib`` is the least-squares slope of the samples after the
warm-up (the first 20 % of the load) times the time they span: what the
process grew by after warm-up, unmoved by one sample's garbage. The plain
difference, last sample minus the one at the end of the warm-up, is
``rss_end_minus_warm_mib``.

**Checks.** When the load ends the driver waits (``DRAIN_TIMEOUT`` at most)
until every accepted message was handled, every reply reached the relay,
every DSN was sent and every event reached the receiver, then stops the
fleet with SIGTERM and reads its store. ``lost`` counts: messages answered
``250`` but not stored; stored but never handled; handled without a reply
queued; replies to a deliverable recipient the relay never received;
bounces (at RCPT, or by DSN) the store did not record against their send;
events of the store never delivered to the receiver. ``duplicates`` counts
each second copy: a message stored twice, handled twice, replied to twice,
received twice at the relay, a bounce recorded twice, an event delivered
twice. Both are also given by stage (``lost_by_stage``,
``duplicates_by_stage``). Targets: ``lost`` 0, ``rss_growth_mib`` under 20.

Usage (from the repository root)::

    .venv/bin/python bench/soak.py                 # 10 minutes
    .venv/bin/python bench/soak.py --seconds 60    # the smoke run of the tests
    .venv/bin/python bench/soak.py --smoke         # the same

The last line is one JSON object: ``messages`` (accepted), ``messages_offered``,
``lost``, ``duplicates``, ``rss_growth_mib``, ``p99_ms`` (the three p99s by
name), ``replies``, ``bounces``, ``webhook_deliveries``, the latencies, the
RSS figures and series, and what was refused.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiosmtplib
import anyio
import httpx
import sqlalchemy as sa
from _common import UNPACED, emit, percentile
from soak_agent import GRANTS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOMAIN = "example.com"
PEER_DOMAIN = "peer.example.net"
DEFAULT_SECONDS = 600.0
SMOKE_SECONDS = 60.0
RATE = 20.0
"""Messages offered per second."""
IDLE_SECONDS = 10.0
"""How long the fleet's CPU is measured idle, before the load (the baseline)."""
CONNECTIONS = 16
"""SMTP connections the load keeps open: enough that the MX's answer time, under a
second, does not hold the offered rate back."""
CORRESPONDENTS = 500
LATE_BOUNCE_EVERY = 50
UNKNOWN_EVERY = 100
REPORT_DELAY = 1.0
"""Seconds before the peer mails a DSN back."""
WARM_UP_SHARE = 0.2
DRAIN_TIMEOUT = 180.0
"""The longest wait for the receiving sides after the load (``--seconds`` x 1.5 if less)."""
RETRIES = 20
"""Tries of one message answered 4xx (a second apart) before the client gives it up."""
TARGET_RSS_GROWTH_MIB = 20.0


# -- the load's messages ----------------------------------------------------------------


def sender(n: int) -> str:
    """Who writes message ``n``: a correspondent, or an address that will bounce."""
    turn = n // GRANTS  # the message's place in its grant's sequence
    if turn % LATE_BOUNCE_EVERY == LATE_BOUNCE_EVERY - 1:
        return f"late-bounce+{n}@{PEER_DOMAIN}"
    if turn % UNKNOWN_EVERY == UNKNOWN_EVERY * 3 // 4 - 1:
        return f"unknown+{n}@{PEER_DOMAIN}"
    return f"person-{n % CORRESPONDENTS}@{PEER_DOMAIN}"


def recipient(n: int) -> str:
    return f"desk-{n % GRANTS}@{DOMAIN}"


def message(n: int) -> bytes:
    return (
        f"From: Correspondent <{sender(n)}>\r\nTo: {recipient(n)}\r\nSubject: soak {n}\r\n"
        f"Message-ID: <soak-{n}@{PEER_DOMAIN}>\r\nDate: {formatdate()}\r\n"
        "\r\n" + "A line of a message body, as people write them.\r\n" * 20
    ).encode()


def number_of(subject: str | None) -> int | None:
    """The soak's number in a subject ``soak N`` or ``Re: soak N``."""
    word = (subject or "").rpartition(" ")[2]
    return int(word) if word.isdigit() else None


# -- the peer: relay, DSNs, webhook receiver, nameserver (its own process) ---------------


def zone_records() -> dict[str, dict[str, list[Any]]]:
    """What the peer's nameserver answers: every domain of the soak, sending from
    loopback."""
    spf = ["v=spf1 ip4:127.0.0.0/8 -all"]
    records: dict[str, dict[str, list[Any]]] = {}
    for domain in (DOMAIN, PEER_DOMAIN):
        records[domain] = {"MX": [(10, f"mx.{domain}")], "TXT": spf}
        records[f"mx.{domain}"] = {"A": ["127.0.0.1"]}
        records[f"_dmarc.{domain}"] = {"TXT": ["v=DMARC1; p=none"]}
    records["mx.simulated.invalid"] = {"A": ["127.0.0.1"], "TXT": spf}  # the DSNs' HELO
    return records


async def run_peer(folder: Path, mx_port: int) -> None:
    """Peer mode: serve until stdin closes; print the ports as one JSON line first."""
    sys.path.insert(0, str(ROOT / "tests"))  # the tests' real servers, reused
    from dnsserver import DnsServer
    from mailfleet.transports.simulator import PendingReport, SimulatedInternet
    from webhook_receiver import Received, Receiver

    relay_log = (folder / "relay.jsonl").open("a", buffering=1)
    dsn_log = (folder / "dsn.jsonl").open("a", buffering=1)
    hook_log = (folder / "hooks.jsonl").open("a", buffering=1)
    headers = BytesHeaderParser()

    class Relay(SimulatedInternet):
        def accepted(self, mail_from: str, recipient: str, outcome: Any, data: bytes) -> None:
            subject = headers.parsebytes(data).get("subject")
            line = {"n": number_of(subject), "rcpt": recipient, "at": time.time()}
            relay_log.write(json.dumps(line) + "\n")
            super().accepted(mail_from, recipient, outcome, data)

        async def send_report(self, report: PendingReport) -> bool:
            ok = await super().send_report(report)
            dsn_log.write(json.dumps({"rcpt": report.recipient, "ok": ok, "at": time.time()}))
            dsn_log.write("\n")
            return ok

    def hook(request: Received) -> int:
        event = json.loads(request.body)
        line = {"id": int(event["id"]), "type": event["type"], "time": event["time"]}
        line["at"] = time.time()
        hook_log.write(json.dumps(line) + "\n")
        return 200

    relay = Relay({}, report_delay=REPORT_DELAY, mx=("127.0.0.1", mx_port))
    receiver = Receiver(answer=hook, keep=False)
    with DnsServer(zone_records(), zones=(DOMAIN, PEER_DOMAIN, "simulated.invalid")) as dns:
        await receiver.start()
        async with anyio.create_task_group() as tg:
            relay_port = await tg.start(relay.run)
            ports = {"relay": relay_port, "hooks": receiver.url, "dns": dns.address}
            print(json.dumps(ports), flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)  # until the driver closes it
            tg.cancel_scope.cancel()
        await receiver.stop()
    for log in (relay_log, dsn_log, hook_log):
        log.close()


@dataclass(frozen=True)
class Peer:
    relay_port: int
    hooks_url: str
    dns: str


@asynccontextmanager
async def peer_process(folder: Path, mx_port: int) -> AsyncIterator[Peer]:
    """This file as the peer, in a subprocess; yields its addresses once it listens."""
    command = [sys.executable, str(Path(__file__)), "--peer", str(folder), str(mx_port)]
    with (folder / "peer.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, read from a thread
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
        )
    try:
        assert process.stdout is not None
        line = await anyio.to_thread.run_sync(process.stdout.readline)
        if not line.strip():
            sys.exit(f"the peer did not start:\n{tail(folder / 'peer.log')}")
        ports = json.loads(line)
        yield Peer(ports["relay"], ports["hooks"], ports["dns"])
    finally:
        assert process.stdin is not None
        process.stdin.close()
        await anyio.to_thread.run_sync(lambda: process.wait(timeout=60))


# -- the fleet: `mailfleet run` in a subprocess -------------------------------------------


@dataclass(frozen=True)
class FleetProcess:
    pid: int
    smtp_port: int
    api: str
    key: str
    database_url: str

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far (user + system), from /proc."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float | None:
        """The process's resident set (VmRSS) in MiB, None once it has ended."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@asynccontextmanager
async def fleet_process(folder: Path, peer: Peer, smtp_port: int) -> AsyncIterator[FleetProcess]:
    """``mailfleet run`` of the soak's agent as an operator starts it (settings in the
    environment, a folder of its own); SIGTERM at the end, as an operator stops it."""
    api_port, key = free_port(), f"mf_soak_{secrets.token_hex(16)}"
    database_url = f"sqlite:///{folder}/soak.db"
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "MAILFLEET_HOME": str(folder / "home"),
        "MAILFLEET_DATABASE_URL": database_url,
        "MAILFLEET_RELAY_HOST": "127.0.0.1",
        "MAILFLEET_RELAY_PORT": str(peer.relay_port),
        "MAILFLEET_RELAY_STARTTLS": "false",
        "MAILFLEET_DNS_NAMESERVERS": peer.dns,
        "MAILFLEET_API_KEY": key,
        "MAILFLEET_SMTP_HOSTNAME": f"mx.{DOMAIN}",
        "MAILFLEET_LOG_FORMAT": "text",
        "SOAK_JOURNAL": str(folder / "handled.txt"),
    }
    command = [
        *(sys.executable, "-m", "mailfleet", "run", str(HERE / "soak_agent.py")),
        *("--smtp-port", str(smtp_port), "--api-port", str(api_port)),
    ]
    log_path = folder / "fleet.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, waited from a thread
            command, cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    fleet = FleetProcess(process.pid, smtp_port, f"http://127.0.0.1:{api_port}", key, database_url)
    try:
        await _until_listening(fleet, process, log_path)
        yield fleet
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await anyio.to_thread.run_sync(lambda: process.wait(timeout=90))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            print("the fleet did not stop within 90 s of SIGTERM: killed", flush=True)


async def _until_listening(
    fleet: FleetProcess, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                sys.exit(f"mailfleet run ended with {process.returncode}:\n{tail(log)}")
            try:
                answer = await client.get(f"{fleet.api}/healthz", timeout=5)
                if answer.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await anyio.sleep(0.2)
    sys.exit(f"mailfleet run did not answer /healthz within 120 s:\n{tail(log)}")


# -- journals -------------------------------------------------------------------------------


class Journal:
    """A file another process appends lines to; ``read()`` gives the complete new ones."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[str]:
        try:
            with self.path.open("rb") as journal:
                journal.seek(self._offset)
                data = journal.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [line.decode() for line in lines if line]


@dataclass
class Seen:
    """What the receiving sides and the handlers reported, as the journals grow."""

    folder: Path
    handled: dict[int, list[float]] = field(default_factory=dict)
    relayed: dict[int, list[float]] = field(default_factory=dict)
    dsns: Counter[str] = field(default_factory=Counter)
    dsn_failures: int = 0
    hooks: dict[int, list[float]] = field(default_factory=dict)
    """Event id -> receipt times."""
    hook_latencies: list[float] = field(default_factory=list)
    hook_types: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._handled = Journal(self.folder / "handled.txt")
        self._relay = Journal(self.folder / "relay.jsonl")
        self._dsn = Journal(self.folder / "dsn.jsonl")
        self._hooks = Journal(self.folder / "hooks.jsonl")

    def update(self) -> None:
        for line in self._handled.read():
            number, started = line.split()
            if number.isdigit():
                self.handled.setdefault(int(number), []).append(float(started))
        for line in self._relay.read():
            entry = json.loads(line)
            if entry["n"] is not None:
                self.relayed.setdefault(entry["n"], []).append(entry["at"])
        for line in self._dsn.read():
            entry = json.loads(line)
            if entry["ok"]:
                self.dsns[entry["rcpt"]] += 1
            else:
                self.dsn_failures += 1
        for line in self._hooks.read():
            entry = json.loads(line)
            self.hooks.setdefault(entry["id"], []).append(entry["at"])
            self.hook_types[entry["type"]] += 1
            when = entry["time"].replace("Z", "+00:00")
            self.hook_latencies.append(entry["at"] - _epoch(when))


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


# -- the load -------------------------------------------------------------------------------


@dataclass
class Load:
    seconds: float
    rate: float
    started: float = 0.0
    offered: int = 0
    accepted: dict[int, float] = field(default_factory=dict)
    """Message number -> when its 250 came."""
    retried: Counter[str] = field(default_factory=Counter)
    """4xx answers and dropped connections, by code."""
    refused: Counter[str] = field(default_factory=Counter)
    """5xx answers, and messages given up after ``RETRIES`` 4xx."""
    lag: float = 0.0
    """The latest a message was sent after its due time, in seconds."""
    finished: float = 0.0

    @property
    def total(self) -> int:
        return int(self.seconds * self.rate)

    async def run(self, smtp_port: int) -> None:
        self.started = time.time()
        async with anyio.create_task_group() as tg:
            for lane in range(CONNECTIONS):
                tg.start_soon(self._client, smtp_port, lane)
        self.finished = time.time()

    async def _client(self, port: int, lane: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60)
        try:
            for n in range(lane, self.total, CONNECTIONS):
                due = self.started + n / self.rate
                if (wait := due - time.time()) > 0:
                    await anyio.sleep(wait)
                self.lag = max(self.lag, time.time() - due)
                self.offered += 1
                await self._send(client, n)
        finally:
            if client.is_connected:
                try:
                    await client.quit()
                except aiosmtplib.SMTPException:
                    client.close()

    async def _send(self, client: aiosmtplib.SMTP, n: int) -> None:
        raw = message(n)
        for _ in range(RETRIES):
            try:
                if not client.is_connected:
                    await client.connect()
                await client.sendmail(sender(n), [recipient(n)], raw)
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code >= 500:
                    self.refused[str(exc.code)] += 1
                    return
                self.retried[str(exc.code)] += 1
            except (aiosmtplib.SMTPException, OSError) as exc:
                self.retried[type(exc).__name__] += 1
                client.close()
            else:
                self.accepted[n] = time.time()
                return
            await anyio.sleep(1.0)
        self.refused["gave up"] += 1


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Events:
    """The event log as a consumer reads it through ``GET /v1/events``."""

    client: httpx.AsyncClient
    cursor: int = 0
    ids: set[int] = field(default_factory=set)
    timings: list[float] = field(default_factory=list)
    """Seconds each ``GET /v1/events`` took."""
    failures: Counter[str] = field(default_factory=Counter)

    async def read(self) -> None:
        while True:
            started = time.perf_counter()
            try:
                answer = await self.client.get(
                    "/v1/events", params={"after": str(self.cursor), "limit": 1000}
                )
                answer.raise_for_status()
            except httpx.HTTPError as exc:
                self.failures[type(exc).__name__] += 1
                print(f"GET /v1/events failed: {type(exc).__name__} {exc}", flush=True)
                return
            finally:
                self.timings.append(time.perf_counter() - started)
            items = answer.json()["items"]
            for item in items:
                self.ids.add(int(item["id"]))
            if items:
                self.cursor = int(items[-1]["id"])
            if len(items) < 1000:
                return


async def prepare(client: httpx.AsyncClient, hooks_url: str) -> None:
    """The grants' workspaces unpaced, and a webhook subscription for every event, through
    the API."""
    grants = (await client.get("/v1/grants", params={"limit": 100})).raise_for_status().json()
    workspaces = {grant["workspace"] for grant in grants["items"]}
    if len(grants["items"]) != GRANTS:
        sys.exit(f"the fleet serves {len(grants['items'])} grants, not {GRANTS}")
    policy = {**UNPACED, "daily_receive_limit": 100_000_000}
    for workspace in workspaces:
        answer = await client.patch(f"/v1/workspaces/{workspace}", json={"policy": policy})
        if answer.status_code != 200:
            sys.exit(f"PATCH /v1/workspaces/{workspace}: {answer.status_code} {answer.text}")
    answer = await client.post("/v1/webhooks", json={"url": hooks_url})
    if answer.status_code != 201:
        sys.exit(f"POST /v1/webhooks: {answer.status_code} {answer.text}")


@dataclass
class Rss:
    fleet: FleetProcess
    started: float
    samples: list[tuple[float, float]] = field(default_factory=list)
    _cpu: tuple[float, float, int] = (0.0, 0.0, 0)
    """(when, CPU seconds, messages handled) at the last progress line."""

    def cpu_since_last(self, handled: int) -> tuple[float, float]:
        """The fleet's CPU share since the last call, and its CPU ms per message handled."""
        now, cpu = time.time(), self.fleet.cpu_seconds()
        then, before, handled_before = self._cpu
        self._cpu = (now, cpu, handled)
        if then == 0.0:
            return 0.0, 0.0
        share = (cpu - before) / (now - then)
        return share, (cpu - before) * 1000 / max(1, handled - handled_before)

    def sample(self) -> float | None:
        rss = self.fleet.rss_mib()
        if rss is not None:
            self.samples.append((time.time() - self.started, rss))
        return rss

    def growth(self, warm_up: float) -> tuple[float, float, float]:
        """(fitted growth after warm-up, last minus the warm-up sample, RSS at warm-up)."""
        after = [(t, v) for t, v in self.samples if t >= warm_up]
        if len(after) < 2:
            return 0.0, 0.0, after[0][1] if after else 0.0
        mean_t = sum(t for t, _ in after) / len(after)
        mean_v = sum(v for _, v in after) / len(after)
        spread = sum((t - mean_t) ** 2 for t, _ in after)
        slope = sum((t - mean_t) * (v - mean_v) for t, v in after) / spread if spread else 0.0
        return slope * (after[-1][0] - after[0][0]), after[-1][1] - after[0][1], after[0][1]

    def series(self, points: int = 16) -> list[list[float]]:
        """About ``points`` samples spread over the run: [[seconds, MiB], ...]."""
        step = max(1, len(self.samples) // points)
        chosen = self.samples[::step]
        if self.samples and chosen[-1] is not self.samples[-1]:
            chosen.append(self.samples[-1])
        return [[round(t), round(v, 1)] for t, v in chosen]


async def soak(seconds: float, rate: float, keep: bool) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="mailfleet-soak-"))
    smtp_port = free_port()
    load = Load(seconds, rate)
    seen = Seen(folder)
    progress_every = max(5.0, min(30.0, seconds / 10))
    print(
        f"soak: {seconds:g} s at {rate:g} msgs/s ({load.total:,} messages offered) to "
        f"{GRANTS} grants over {CONNECTIONS} SMTP connections; folder {folder}",
        flush=True,
    )
    async with (
        peer_process(folder, smtp_port) as peer,
        fleet_process(folder, peer, smtp_port) as fleet,
    ):
        headers = {"Authorization": f"Bearer {fleet.key}"}
        async with httpx.AsyncClient(base_url=fleet.api, headers=headers, timeout=60) as client:
            await prepare(client, peer.hooks_url)
            events = Events(client)
            await events.read()
            before_load = events.cursor  # events after it must all reach the receiver
            idle = await _idle_cpu(fleet)
            print(f"fleet idle (no load): {idle:.1%} of a core over {IDLE_SECONDS:g} s", flush=True)
            rss = Rss(fleet, time.time())
            cpu = fleet.cpu_seconds()
            rss.cpu_since_last(0)
            print(f"fleet pid {fleet.pid}, RSS {rss.sample():.1f} MiB at start", flush=True)
            async with anyio.create_task_group() as tg:
                tg.start_soon(load.run, fleet.smtp_port)
                await _watch(load, seen, events, rss, progress_every)
            drained = await _drain(load, seen, events, rss, before_load, progress_every)
            cpu = fleet.cpu_seconds() - cpu
    seen.update()
    figures = _figures(load, seen, rss, fleet.database_url, before_load, drained)
    figures.update(_latencies("events_api", events.timings))
    figures["events_api_failures"] = dict(events.failures)
    figures["fleet_idle_cpu_share"] = idle
    figures["fleet_cpu_s"] = cpu
    figures["fleet_cpu_ms_per_message"] = cpu / max(1, figures["messages"]) * 1000
    if keep:
        print(f"kept {folder}", flush=True)
    else:
        _remove(folder)
    return figures


async def _idle_cpu(fleet: FleetProcess) -> float:
    """The baseline: the share of a core the fleet uses with no load."""
    started, cpu = time.perf_counter(), fleet.cpu_seconds()
    await anyio.sleep(IDLE_SECONDS)
    return (fleet.cpu_seconds() - cpu) / (time.perf_counter() - started)


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


async def _watch(
    load: Load,
    seen: Seen,
    events: Events,
    rss: Rss,
    progress_every: float,
) -> None:
    """Sample RSS and print progress until the load has sent everything."""
    rss_every = max(1.0, load.seconds / 300)
    next_progress = time.time() + progress_every
    while load.finished == 0.0:
        await anyio.sleep(rss_every)
        rss.sample()
        if time.time() >= next_progress:
            next_progress += progress_every
            await events.read()
            seen.update()
            _progress(load, seen, events, rss)


def _progress(load: Load, seen: Seen, events: Events, rss: Rss, *, draining: bool = False) -> None:
    elapsed = time.time() - load.started
    accepted = len(load.accepted)
    where = "drain" if draining else f"{elapsed:4.0f}s/{load.seconds:g}s"
    rate = accepted / max(1e-9, min(elapsed, load.seconds))
    current = rss.samples[-1][1] if rss.samples else float("nan")
    share, per_message = rss.cpu_since_last(len(seen.handled))
    print(
        f"[{where}] offered {load.offered:,} accepted {accepted:,} ({rate:.1f}/s) "
        f"handled {len(seen.handled):,} relayed {len(seen.relayed):,} "
        f"DSNs {sum(seen.dsns.values()):,} events {len(events.ids):,} "
        f"webhooks {len(seen.hooks):,} RSS {current:.1f} MiB "
        f"CPU {share:.0%} ({per_message:.1f} ms/msg)",
        flush=True,
    )


async def _drain(
    load: Load, seen: Seen, events: Events, rss: Rss, before_load: int, progress_every: float
) -> bool:
    """Wait until the receiving sides have everything the load asked for (or
    ``DRAIN_TIMEOUT``); whether they do."""
    limit = min(DRAIN_TIMEOUT, load.seconds * 1.5)
    deadline = time.time() + limit
    next_progress = time.time() + progress_every
    quiet = 0
    while time.time() < deadline:
        await anyio.sleep(1.0)
        rss.sample()
        count = len(events.ids)
        await events.read()
        seen.update()
        quiet = quiet + 1 if len(events.ids) == count else 0
        accepted = set(load.accepted)
        relayable = {n for n in accepted if not sender(n).startswith("unknown+")}
        bouncing = {sender(n) for n in accepted if sender(n).startswith("late-bounce+")}
        done = (
            accepted <= seen.handled.keys()
            and relayable <= seen.relayed.keys()
            and bouncing <= seen.dsns.keys()
            and {i for i in events.ids if i > before_load} <= seen.hooks.keys()
            and quiet >= 3  # no new event for three seconds: the last bounces are in
        )
        if done:
            print(f"drained in {time.time() - (deadline - limit):.0f} s", flush=True)
            return True
        if time.time() >= next_progress:
            next_progress += progress_every
            _progress(load, seen, events, rss, draining=True)
    print(f"not drained after {limit:g} s: what is missing counts as lost", flush=True)
    return False


# -- the checks ----------------------------------------------------------------------------------


@dataclass
class Store:
    """What the fleet's store holds once it stopped."""

    inbound: Counter[int]
    """Message number -> inbound messages stored with its subject."""
    replies: dict[int, list[tuple[int, str]]]
    """Message number -> its replies' (outbound id, status)."""
    waiting: int
    dead: int
    reports: Counter[int]
    """Outbound id -> attributed bounce reports."""
    bounced_events: Counter[str]
    """The bounced send's message id -> message.bounced events."""
    events: dict[int, str]
    """Event id -> type, for the events after the load began."""


def read_store(url: str, after_event: int) -> Store:
    from mailfleet.store.tables import (
        events_table,
        messages_table,
        outbound_table,
        queue_table,
        reports_table,
    )

    m, o, q, r, e = messages_table, outbound_table, queue_table, reports_table, events_table
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            inbound: Counter[int] = Counter()
            for subject in conn.execute(sa.select(m.c.subject).where(m.c.direction == "in")):
                number = number_of(subject[0])
                if number is not None:
                    inbound[number] += 1
            replies: dict[int, list[tuple[int, str]]] = {}
            query = sa.select(o.c.id, o.c.status, m.c.subject).join(m, m.c.id == o.c.message_id)
            for row in conn.execute(query):
                number = number_of(row.subject)
                if number is not None:
                    replies.setdefault(number, []).append((row.id, row.status))
            statuses = dict(
                conn.execute(sa.select(q.c.status, sa.func.count()).group_by(q.c.status)).all()
            )
            reports: Counter[int] = Counter(
                row.outbound_id
                for row in conn.execute(
                    sa.select(r.c.outbound_id).where(r.c.kind == "bounce", r.c.attributed)
                )
            )
            query = sa.select(e.c.id, e.c.type, e.c.payload).where(e.c.id > after_event)
            found = conn.execute(query)
            events: dict[int, str] = {}
            bounced: Counter[str] = Counter()
            for row in found:
                events[row.id] = row.type
                if row.type == "message.bounced":
                    payload = row.payload if isinstance(row.payload, dict) else {}
                    bounced[str(payload.get("message_id"))] += 1
    finally:
        engine.dispose()
    return Store(
        inbound=inbound,
        replies=replies,
        waiting=int(statuses.get("ready", 0)),
        dead=int(statuses.get("dead", 0)),
        reports=reports,
        bounced_events=bounced,
        events=events,
    )


def _extra(copies: Any) -> int:
    """Copies beyond the first, over a mapping of counts or of lists."""
    return sum(max(0, (c if isinstance(c, int) else len(c)) - 1) for c in copies)


def _latencies(name: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {f"{name}_p50_ms": 0.0, f"{name}_p99_ms": 0.0}
    return {
        f"{name}_p50_ms": percentile(values, 0.50) * 1000,
        f"{name}_p99_ms": percentile(values, 0.99) * 1000,
    }


def _figures(
    load: Load, seen: Seen, rss: Rss, url: str, before_load: int, drained: bool
) -> dict[str, Any]:
    store = read_store(url, before_load)
    accepted = set(load.accepted)
    unknown = {n for n in accepted if sender(n).startswith("unknown+")}
    late = {n for n in accepted if sender(n).startswith("late-bounce+")}
    replied = {n for n, rows in store.replies.items() if rows}

    def bounce_recorded(n: int) -> bool:
        rows = store.replies.get(n, [])
        if n in unknown:
            return any(status == "bounced" for _, status in rows)
        return any(store.reports[outbound] for outbound, _ in rows)

    lost = {
        "inbound": len(accepted - store.inbound.keys()),
        "handling": len({n for n in store.inbound if n in accepted} - seen.handled.keys()),
        "replies": len((seen.handled.keys() & accepted) - replied),
        "relay": len((replied - unknown) - seen.relayed.keys()),
        "bounces": sum(not bounce_recorded(n) for n in (unknown | late) & replied),
        "webhooks": len(store.events.keys() - seen.hooks.keys()),
    }
    duplicates = {
        "inbound": _extra(store.inbound.values()),
        "handling": _extra(seen.handled.values()),
        "replies": _extra(store.replies.values()),
        "relay": _extra(seen.relayed.values()),
        "bounces": _extra(store.reports.values()) + _extra(store.bounced_events.values()),
        "webhooks": _extra(seen.hooks.values()),
    }
    to_handler = [seen.handled[n][0] - load.accepted[n] for n in accepted if n in seen.handled]
    to_relay = [
        seen.relayed[n][0] - seen.handled[n][-1]
        for n in seen.relayed
        if n in seen.handled and n in accepted
    ]
    warm_up = load.seconds * WARM_UP_SHARE
    growth, end_minus_warm, warm_rss = rss.growth(warm_up)
    duration = (load.finished - load.started) or load.seconds
    figures: dict[str, Any] = {
        "seconds": load.seconds,
        "rate_offered_per_s": load.rate,
        "messages_offered": load.total,
        "messages": len(accepted),
        "messages_per_s": len(accepted) / duration,
        "lost": sum(lost.values()),
        "duplicates": sum(duplicates.values()),
        "rss_growth_mib": growth,
        "p99_ms": {},
        "replies": len(seen.relayed),
        "bounces": sum(bounce_recorded(n) for n in (unknown | late) & replied),
        "bounces_at_rcpt": len(unknown),
        "dsns_sent": sum(seen.dsns.values()),
        "dsns_refused": seen.dsn_failures,
        "webhook_deliveries": len(seen.hooks),
        "events": len(store.events),
        **_latencies("accept_to_handler", to_handler),
        **_latencies("reply_to_relay", to_relay),
        **_latencies("event_to_webhook", seen.hook_latencies),
        "rss_start_mib": rss.samples[0][1] if rss.samples else 0.0,
        "rss_warm_mib": warm_rss,
        "rss_end_mib": rss.samples[-1][1] if rss.samples else 0.0,
        "rss_peak_mib": max((v for _, v in rss.samples), default=0.0),
        "rss_end_minus_warm_mib": end_minus_warm,
        "rss_series_mib": rss.series(),
        "lost_by_stage": lost,
        "duplicates_by_stage": duplicates,
        "retried": dict(load.retried),
        "refused": dict(load.refused),
        "send_lag_max_s": load.lag,
        "queue_waiting": store.waiting,
        "dead_letters": store.dead,
        "drained": drained,
    }
    figures["p99_ms"] = {
        name: round(figures[f"{name}_p99_ms"], 1)
        for name in ("accept_to_handler", "reply_to_relay", "event_to_webhook")
    }
    return figures


def report(figures: dict[str, Any]) -> None:
    print(
        f"load: offered {figures['messages_offered']:,} messages at "
        f"{figures['rate_offered_per_s']:g}/s, accepted {figures['messages']:,} "
        f"({figures['messages_per_s']:.1f}/s; latest send {figures['send_lag_max_s']:.2f} s "
        f"after its due time; retried {figures['retried'] or 'none'}, refused "
        f"{figures['refused'] or 'none'})"
    )
    print(
        f"replies at the relay {figures['replies']:,}; bounces recorded {figures['bounces']:,} "
        f"({figures['bounces_at_rcpt']:,} at RCPT, {figures['dsns_sent']:,} DSNs); "
        f"webhooks {figures['webhook_deliveries']:,} of {figures['events']:,} events"
    )
    print(
        f"fleet CPU: idle {figures['fleet_idle_cpu_share']:.1%} of a core; under the load "
        f"{figures['fleet_cpu_s']:.1f} s, "
        f"{figures['fleet_cpu_ms_per_message']:.1f} ms per message handled"
    )
    for name in ("accept_to_handler", "reply_to_relay", "event_to_webhook"):
        print(
            f"{name.replace('_', ' ')}: p50 {figures[f'{name}_p50_ms']:.1f} ms, "
            f"p99 {figures[f'{name}_p99_ms']:.1f} ms"
        )
    series = ", ".join(f"{t}s {v}" for t, v in figures["rss_series_mib"])
    print(f"RSS (MiB): {series}")
    print(
        f"RSS after warm-up: {figures['rss_warm_mib']:.1f} MiB, end {figures['rss_end_mib']:.1f} "
        f"MiB, peak {figures['rss_peak_mib']:.1f} MiB; growth after warm-up (fitted) "
        f"{figures['rss_growth_mib']:.1f} MiB, end minus warm-up "
        f"{figures['rss_end_minus_warm_mib']:.1f} MiB"
    )
    print(f"lost {figures['lost']} {figures['lost_by_stage']}")
    print(f"duplicates {figures['duplicates']} {figures['duplicates_by_stage']}")
    for name, met in (
        ("lost 0", figures["lost"] == 0),
        ("duplicates 0", figures["duplicates"] == 0),
        (
            f"RSS growth after warm-up under {TARGET_RSS_GROWTH_MIB:g} MiB",
            figures["rss_growth_mib"] < TARGET_RSS_GROWTH_MIB,
        ),
    ):
        print(f"target {name}: {'met' if met else 'NOT met'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="load duration")
    parser.add_argument(
        "--smoke", action="store_true", help=f"a {SMOKE_SECONDS:g} s run (make test's)"
    )
    parser.add_argument("--rate", type=float, default=RATE, help="messages offered per second")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    options = parser.parse_args()
    seconds = SMOKE_SECONDS if options.smoke else options.seconds
    figures = anyio.run(soak, seconds, options.rate, options.keep)
    report(figures)
    emit(figures)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--peer"]:
        anyio.run(run_peer, Path(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
