"""Provisioning over the HTTP API, against the Python API it wraps, on SQLite.

* **Single provisioning**: ``POST /v1/grants`` of fresh addresses, from one
  client calling sequentially (``SEQUENTIAL`` calls) and from ``CONCURRENT``
  clients at once (``CONCURRENT_CALLS`` in all, one keep-alive connection
  each): the p50 and p99 latency of one call in milliseconds, timed at the
  client (httpx), answer read. Target: p50 under 5 ms.
* **Batch**: ``POST /v1/grants/batch`` of ``BATCH`` fresh addresses, the
  answer (one result per address) read in full; the median of ``ROUNDS``
  rounds, in grants/s. Target: at least 5,000 grants/s.
* **Baseline**, in the same run: the same provisioning through the Python API
  directly, ``fleet.provision`` (sequential and concurrent) and
  ``fleet.provision_many``, on a database of its own. The ratios are the API's
  figure over the baseline's (latency: how many times slower; batch: the share
  of the throughput kept).

* **Webhooks**: ``WEBHOOK_GRANTS`` grants provisioned at once, each
  ``grant.created`` event delivered (stored, claimed, signed, posted,
  recorded with its attempt) by one ``WebhookSender`` to a receiver on
  loopback in a subprocess of its own (``--receive``: HTTP/1.1, keep-alive,
  200 to every POST), timed from the start of delivery until the backlog is
  empty, in deliveries/s. Target: at least 1,000/s. Baseline, in the same
  run: a bare httpx loop posting the same number of envelopes to the same
  receiver, ``WEBHOOK_LANES`` at a time over one client.

The API runs this file in a subprocess (``--serve URL``: uvicorn serving the
store, as ``mailfleet api`` does, without its log output), so the client's
load and the server do not share one event loop. Every answer is checked:
each call must have created its grant.

Usage (from the repository root)::

    .venv/bin/python bench/api.py
    .venv/bin/python bench/api.py --profile   # also profile the server (pyinstrument)

The last line is one JSON object with ``provision_p50_ms``, ``provision_p99_ms``,
``provision_concurrent_p50_ms``, ``provision_concurrent_p99_ms``,
``batch_grants_per_s``, ``webhook_deliveries_per_s``, the baselines' figures
(``python_...``, ``webhook_baseline_per_s``) and the ratios.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
from _common import emit, median, percentile, scratch_database, stopwatch

from mailfleet import Fleet
from mailfleet.model.records import ProvisionOutcome

DOMAIN = "bench.example.com"
WARM_UP = 50
SEQUENTIAL = 1_000
CONCURRENT = 16
CONCURRENT_CALLS = 2_000
BATCH = 10_000
ROUNDS = 3
TARGET_P50_MS = 5.0
TARGET_BATCH_PER_S = 5_000
WEBHOOK_GRANTS = 5_000
WEBHOOK_LANES = 32
TARGET_WEBHOOKS_PER_S = 1_000

HERE = Path(__file__).resolve().parent

_counter = iter(range(10**9))


def fresh(count: int, prefix: str) -> list[str]:
    """``count`` addresses never provisioned before in this run."""
    return [f"{prefix}-{next(_counter):07d}@{DOMAIN}" for _ in range(count)]


def latencies(name: str, timings: Sequence[float]) -> dict[str, float]:
    """p50 and p99 of ``timings`` (seconds) as ``<name>_p50_ms`` / ``<name>_p99_ms``."""
    return {
        f"{name}_p50_ms": percentile(timings, 0.50) * 1000,
        f"{name}_p99_ms": percentile(timings, 0.99) * 1000,
    }


async def timed_calls(
    call: Callable[[str], Awaitable[None]], addresses: Sequence[str], workers: int
) -> tuple[list[float], float]:
    """Run ``call(address)`` for each address, ``workers`` at a time; the latency of each
    call (s) and the calls per second."""
    timings: list[float] = []
    shares = [addresses[i::workers] for i in range(workers)]

    async def worker(share: Sequence[str]) -> None:
        for address in share:
            started = time.perf_counter()
            await call(address)
            timings.append(time.perf_counter() - started)

    with stopwatch() as elapsed:
        async with anyio.create_task_group() as tg:
            for share in shares:
                tg.start_soon(worker, share)
    return timings, len(addresses) / elapsed()


# -- the baseline: the Python API ----------------------------------------------------------


async def measure_python(url: str) -> dict[str, float]:
    """``fleet.provision`` (sequential, concurrent) and ``fleet.provision_many``, in-process."""
    async with Fleet(database_url=url, application="bench") as fleet:
        await fleet.add_domain(DOMAIN)

        async def provision(address: str) -> None:
            grant = await fleet.provision(address)
            if grant.address != address:
                sys.exit(f"provision({address}) gave {grant.address}")

        await timed_calls(provision, fresh(WARM_UP, "warm"), 1)
        sequential, _ = await timed_calls(provision, fresh(SEQUENTIAL, "py-seq"), 1)
        concurrent, rate = await timed_calls(
            provision, fresh(CONCURRENT_CALLS, "py-conc"), CONCURRENT
        )
        rounds = []
        for _ in range(ROUNDS):
            wanted = fresh(BATCH, "py-batch")
            with stopwatch() as elapsed:
                results = await fleet.provision_many(wanted)
            if sum(r.outcome is ProvisionOutcome.CREATED for r in results) != BATCH:
                sys.exit("provision_many: not every address was created")
            rounds.append(BATCH / elapsed())
    figures = {
        **latencies("python_provision", sequential),
        **latencies("python_provision_concurrent", concurrent),
        "python_provision_concurrent_per_s": rate,
        "python_batch_grants_per_s": median(rounds),
    }
    _print("Python API", figures, "python_")
    return figures


# -- the HTTP API ----------------------------------------------------------------------------


async def serve(url: str) -> None:
    """Server mode: serve the API of the store at ``url`` on a free port; print the port."""
    from mailfleet.api import Tenants, create_app, serve_api
    from mailfleet.settings import Settings

    profiler = _profiler() if "--profile" in sys.argv else None
    async with Tenants(Settings(database_url=url)) as tenants:
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_api, create_app(tenants), "127.0.0.1", 0)
            print(port, flush=True)
            if profiler is not None:
                profiler.start()
            try:
                await anyio.to_thread.run_sync(sys.stdin.read)  # until the bench closes it
            finally:
                if profiler is not None:
                    profiler.stop()
                    print(profiler.output_text(unicode=True, show_all=False), file=sys.stderr)
                tg.cancel_scope.cancel()


def _profiler() -> Any:
    from pyinstrument import Profiler

    return Profiler(interval=0.0005, async_mode="disabled")


@dataclass(frozen=True)
class Server:
    """The API serving in a subprocess: its base URL and process id."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far (user + system), from /proc."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def api_process(url: str) -> AsyncIterator[Server]:
    """This file serving ``url`` in a subprocess; yields it once it listens."""
    command = [sys.executable, str(HERE / "api.py"), "--serve", url, *sys.argv[1:]]
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, read from a thread
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await anyio.to_thread.run_sync(process.stdout.readline)
        if not line.strip():
            sys.exit("the API server did not start")
        yield Server(f"http://127.0.0.1:{int(line)}", process.pid)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        await anyio.to_thread.run_sync(lambda: process.wait(timeout=60))


async def measure_http(url: str) -> dict[str, float]:
    """``POST /v1/grants`` (sequential, concurrent) and ``POST /v1/grants/batch``."""
    async with Fleet(database_url=url, application="bench") as fleet:
        await fleet.add_domain(DOMAIN)
        _, secret = await fleet.create_api_key("bench")
    async with (
        api_process(url) as server,
        httpx.AsyncClient(
            base_url=server.url,
            headers={"Authorization": f"Bearer {secret}"},
            limits=httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT),
            timeout=120,
        ) as client,
    ):

        async def provision(address: str) -> None:
            answer = await client.post("/v1/grants", json={"address": address})
            if answer.status_code != 201:
                sys.exit(f"POST /v1/grants {address}: {answer.status_code} {answer.text}")

        await timed_calls(provision, fresh(WARM_UP, "warm"), CONCURRENT)
        sequential, _ = await timed_calls(provision, fresh(SEQUENTIAL, "http-seq"), 1)
        client_cpu, server_cpu = time.process_time(), server.cpu_seconds()
        concurrent, rate = await timed_calls(
            provision, fresh(CONCURRENT_CALLS, "http-conc"), CONCURRENT
        )
        client_cpu = time.process_time() - client_cpu
        server_cpu = server.cpu_seconds() - server_cpu
        rounds = []
        for _ in range(ROUNDS):
            wanted = fresh(BATCH, "http-batch")
            with stopwatch() as elapsed:
                answer = await client.post("/v1/grants/batch", json={"addresses": wanted})
            if answer.status_code != 200 or answer.json()["created"] != BATCH:
                sys.exit(f"POST /v1/grants/batch: {answer.status_code} {answer.text[:500]}")
            rounds.append(BATCH / elapsed())
    figures = {
        **latencies("provision", sequential),
        **latencies("provision_concurrent", concurrent),
        "provision_concurrent_per_s": rate,
        # What one concurrent call costs each side (the client is httpx, in this process).
        "provision_concurrent_client_cpu_ms": client_cpu / CONCURRENT_CALLS * 1000,
        "provision_concurrent_server_cpu_ms": server_cpu / CONCURRENT_CALLS * 1000,
        "batch_grants_per_s": median(rounds),
    }
    _print("HTTP API", figures, "")
    client_ms = figures["provision_concurrent_client_cpu_ms"]
    server_ms = figures["provision_concurrent_server_cpu_ms"]
    print(
        f"HTTP API, {CONCURRENT} concurrent: CPU per call {client_ms:.2f} ms in the client "
        f"(httpx), {server_ms:.2f} ms in the server"
    )
    return figures


# -- webhooks -------------------------------------------------------------------------------


async def receive() -> None:
    """Receiver mode: answer 200 to every POST on a free port (HTTP/1.1, keep-alive);
    print the port; stop when stdin closes."""
    import asyncio

    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await anyio.to_thread.run_sync(sys.stdin.read)  # until the bench closes it
    server.close()


@asynccontextmanager
async def receiver_process() -> AsyncIterator[str]:
    """This file receiving webhooks in a subprocess; yields its URL once it listens."""
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, read from a thread
        [sys.executable, str(HERE / "api.py"), "--receive"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await anyio.to_thread.run_sync(process.stdout.readline)
        if not line.strip():
            sys.exit("the webhook receiver did not start")
        yield f"http://127.0.0.1:{int(line)}/hooks"
    finally:
        assert process.stdin is not None
        process.stdin.close()
        await anyio.to_thread.run_sync(lambda: process.wait(timeout=60))


async def measure_webhooks(url: str) -> dict[str, float]:
    """Deliveries/s of one ``WebhookSender`` (a ``grant.created`` per grant), and of a bare
    httpx loop posting as many envelopes to the same receiver."""
    from mailfleet.model.envelope import envelope_bytes

    async with receiver_process() as hook:
        async with Fleet(
            database_url=url, application="bench", webhook_lanes=WEBHOOK_LANES
        ) as fleet:
            await fleet.add_domain(DOMAIN)
            webhook, _ = await fleet.webhooks.create(hook)
            results = await fleet.provision_many(fresh(WEBHOOK_GRANTS, "hook"))
            if not all(r.ok for r in results):
                sys.exit("provisioning for the webhooks failed")
            sample = envelope_bytes((await fleet.events(type="grant.created", limit=1))[0])
            with stopwatch() as elapsed:
                async with anyio.create_task_group() as tg:
                    await tg.start(fleet.webhooks.serve)
                    await fleet.webhooks.wait_delivered(poll=0.05)
                    tg.cancel_scope.cancel()
            delivered = len(
                await fleet.webhooks.deliveries(webhook.id, status="delivered", limit=10**6)
            )
            if delivered != WEBHOOK_GRANTS:
                sys.exit(f"{delivered} of {WEBHOOK_GRANTS} webhook deliveries made")
            ours = delivered / elapsed()

        headers = {"content-type": "application/json", "webhook-id": "1"}
        limits = httpx.Limits(
            max_connections=WEBHOOK_LANES, max_keepalive_connections=WEBHOOK_LANES
        )
        async with httpx.AsyncClient(limits=limits) as client:
            left = iter(range(WEBHOOK_GRANTS))

            async def post() -> None:
                for _ in left:
                    answer = await client.post(hook, content=sample, headers=headers)
                    if answer.status_code != 200:
                        sys.exit(f"the receiver answered {answer.status_code}")

            with stopwatch() as elapsed:
                async with anyio.create_task_group() as tg:
                    for _ in range(WEBHOOK_LANES):
                        tg.start_soon(post)
            bare = WEBHOOK_GRANTS / elapsed()
    figures = {
        "webhook_deliveries_per_s": ours,
        "webhook_baseline_per_s": bare,
        "webhook_ratio": ours / bare,
    }
    print(
        f"webhooks: {ours:,.0f} deliveries/s ({WEBHOOK_GRANTS:,} grants, a grant.created each, "
        f"{WEBHOOK_LANES} lanes); bare httpx loop to the same receiver {bare:,.0f}/s: "
        f"ratio {ours / bare:.2f}",
        flush=True,
    )
    return figures


def _print(what: str, figures: dict[str, float], prefix: str) -> None:
    p = prefix
    print(
        f"{what}: one provisioning p50 {figures[f'{p}provision_p50_ms']:.2f} ms, "
        f"p99 {figures[f'{p}provision_p99_ms']:.2f} ms (sequential, {SEQUENTIAL:,} calls); "
        f"{CONCURRENT} concurrent: p50 {figures[f'{p}provision_concurrent_p50_ms']:.2f} ms, "
        f"p99 {figures[f'{p}provision_concurrent_p99_ms']:.2f} ms, "
        f"{figures[f'{p}provision_concurrent_per_s']:,.0f} calls/s; "
        f"batch of {BATCH:,}: {figures[f'{p}batch_grants_per_s']:,.0f} grants/s "
        f"(median of {ROUNDS})",
        flush=True,
    )


# -- main ---------------------------------------------------------------------------------------


async def main() -> None:
    figures: dict[str, Any] = {"backend": "sqlite"}

    # 1. Provisioning: the baseline first, then the HTTP API, each on a fresh database.
    with scratch_database("sqlite") as url:
        figures.update(await measure_python(url))
    with scratch_database("sqlite") as url:
        figures.update(await measure_http(url))
    figures["provision_p50_ratio"] = (
        figures["provision_p50_ms"] / figures["python_provision_p50_ms"]
    )
    figures["provision_concurrent_p50_ratio"] = (
        figures["provision_concurrent_p50_ms"] / figures["python_provision_concurrent_p50_ms"]
    )
    figures["batch_ratio"] = figures["batch_grants_per_s"] / figures["python_batch_grants_per_s"]
    for name, met in (
        (f"p50 under {TARGET_P50_MS:g} ms", figures["provision_p50_ms"] < TARGET_P50_MS),
        (
            f"batch at least {TARGET_BATCH_PER_S:,}/s",
            figures["batch_grants_per_s"] >= TARGET_BATCH_PER_S,
        ),
    ):
        print(f"target {name}: {'met' if met else 'NOT met'}")

    with scratch_database("sqlite") as url:
        figures.update(await measure_webhooks(url))
    met = figures["webhook_deliveries_per_s"] >= TARGET_WEBHOOKS_PER_S
    print(f"target webhooks at least {TARGET_WEBHOOKS_PER_S:,}/s: {'met' if met else 'NOT met'}")

    emit(figures)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        anyio.run(serve, sys.argv[2])
    elif sys.argv[1:2] == ["--receive"]:
        anyio.run(receive)
    else:
        anyio.run(main)
