"""The Fleet: the supervisor that owns the store, every agent's identity, and their queues."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread
import sqlalchemy as sa
from anyio.abc import TaskGroup, TaskStatus

from ..agent import Agent
from ..mail.inbound import InboundMessage
from ..model.addresses import parse_address
from ..model.errors import GrantNotFound, InvalidInput, StoreUnavailable
from ..model.records import (
    Application,
    Grant,
)
from ..plugins import InboundSource, inbound_sources, plugin_manager
from ..settings import Settings
from ..store import (
    applications,
    cursors,
    grants,
    outbound,
    queue,
    workspaces,
)
from ..store.database import Database
from ..store.migrate import migrate
from ..store.outbound import OutboundView
from ..store.queue import DeadLetter
from ..transports.smtp_in import serve_smtp
from ..transports.smtp_out import RelayConfig, SmtpRelay
from .directory import Directory, check_json
from .host import AgentHost
from .intake import Intake
from .mx import FleetMx
from .outbox import Outbox
from .sender import Sender
from .worker import Worker, WorkerSettings, new_worker_id

__all__ = ["Fleet"]

log = logging.getLogger("mailfleet.fleet")


class Fleet(Directory):
    """Supervisor of a fleet of agents: provisioning, workspaces, policies.

    Use it as an async context manager::

        async with Fleet() as fleet:
            await fleet.add_domain("example.com")
            grant = await fleet.provision("agent-1@example.com")

    Opening it applies pending schema migrations and makes sure the
    application and its default workspace exist.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        agents: Iterable[type[Agent]] = (),
        default_agent: type[Agent] | None = None,
        **overrides: Any,
    ) -> None:
        base = settings or Settings()
        self.settings = base.model_copy(update=overrides) if overrides else base
        self.database = Database(self.settings.effective_database_url)
        self._application: Application | None = None
        self._agents: dict[str, type[Agent]] = {a.agent_name(): a for a in agents}
        self._default_agent = default_agent
        self._intake: Intake | None = None
        self._worker: Worker | None = None
        self._sender: Sender | None = None
        self._outbox: Outbox | None = None
        self._task_group: TaskGroup | None = None
        self._serving = anyio.Event()
        self.smtp_port: int | None = None
        """The port the SMTP server listens on, once ``serve()`` started it."""

    async def __aenter__(self) -> Self:
        try:
            await migrate(self.database)
            self._application = await self.database.write(self._ensure_application)
        except sa.exc.OperationalError as exc:
            await self.database.aclose()
            where = sa.make_url(self.database.url).render_as_string(hide_password=True)
            raise StoreUnavailable(f"cannot open the database {where}: {exc.orig}") from exc
        except BaseException:
            await self.database.aclose()
            raise
        self._sender = self._new_sender()
        self._outbox = Outbox(self.database, self._app_id, queued=self._sender.notify)
        self._worker = self._new_worker()
        self._intake = Intake(
            self.database,
            self._app_id,
            queue_limit=self.settings.queue_limit,
            committed=self._worker.notify,
        )
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        await self._task_group.start(self._intake.run)
        await self._task_group.start(self._outbox.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._task_group is not None:
                self._task_group.cancel_scope.cancel()
                await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            self._task_group = None
            await self.database.aclose()

    def _new_sender(self) -> Sender:
        s = self.settings
        relay = None
        if s.relay_host is not None:
            relay = SmtpRelay(
                RelayConfig(
                    host=s.relay_host,
                    port=s.relay_port,
                    starttls=s.relay_starttls,
                    implicit_tls=s.relay_tls,
                    username=s.relay_username,
                    password=(s.relay_password.get_secret_value() if s.relay_password else None),
                    pool_size=s.relay_pool_size,
                    validate_certs=s.relay_validate_certs,
                )
            )
        return Sender(
            self.database,
            self._app_id,
            relay=relay,
            local_grant=self._local_grant_id,
            deliver=self.deliver,
            retry_schedule=s.retry_schedule,
            worker_id=s.worker_id or new_worker_id(),
            concurrency=max(s.relay_pool_size * 2, 4),
            poll_interval=s.poll_interval,
        )

    async def _local_grant_id(self, address: str) -> str | None:
        grant = await self._grant_or_none(address)
        return None if grant is None else grant.id

    def _new_worker(self) -> Worker:
        s = self.settings
        assert self._outbox is not None, "the outbox is made when the fleet opens"
        host = AgentHost(self._agent_class, self._outbox, handler_timeout=s.handler_timeout)
        return Worker(
            self.database,
            self._app_id,
            host,
            WorkerSettings(
                concurrency=s.concurrency,
                queue_limit=s.queue_limit,
                handler_timeout=s.handler_timeout,
                max_attempts=s.max_attempts,
                retry_base=s.retry_base,
                retry_max=s.retry_max,
                idle_timeout=s.idle_timeout,
                lease_ttl=s.lease_ttl,
                poll_interval=s.poll_interval,
            ),
            worker_id=s.worker_id,
        )

    def _agent_class(self, grant: Grant) -> type[Agent] | None:
        if grant.agent is not None and grant.agent in self._agents:
            return self._agents[grant.agent]
        return self._default_agent

    def _ensure_application(self, conn: Any) -> Application:
        application = applications.ensure_application(conn, self.settings.application)
        workspaces.ensure_default_workspace(conn, application.id)
        return application

    @property
    def application(self) -> Application:
        """The application (tenant) this fleet serves."""
        if self._application is None:
            raise RuntimeError("the fleet is not open: use `async with Fleet(...) as fleet`")
        return self._application

    @property
    def worker_id(self) -> str:
        """The id this fleet's worker holds leases under."""
        assert self._worker is not None, "the fleet is not open"
        return self._worker.id

    def bind(self, agent: type[Agent]) -> None:
        """Run ``agent``'s handlers for the grants provisioned with it (no provisioning)."""
        self._agents[agent.agent_name()] = agent

    async def register(self, agent: type[Agent]) -> list[Grant]:
        """Run ``agent`` in this fleet: its grants' messages go to its handlers.

        Provisions the addresses the class declares (in dev mode, registering
        their domains first) and returns their grants.
        """
        self.bind(agent)
        declared = [str(parse_address(a)) for a in agent.addresses]
        if self.settings.dev_mode:
            for domain in sorted({a.rsplit("@", 1)[1] for a in declared}):
                await self.add_domain(domain)
        results = await self.provision_many(declared, workspace=agent.workspace, agent=agent)
        for result in results:
            if result.error is not None:
                raise result.error
        return [r.grant for r in results if r.grant is not None]

    # -- the runtime --------------------------------------------------------------

    async def deliver(
        self, grant: str | Grant, raw: bytes, *, source_key: str | None = None
    ) -> InboundMessage:
        """Store a message for a grant (id, address or record) and queue it.

        Returns once the message and its queue entry are committed: from then
        on it is handled at least once, in order with the grant's other
        messages, by whichever worker serves the grant. Raises
        :class:`~mailfleet.GrantNotFound` for an unknown grant and
        :class:`~mailfleet.QueueFull` when the grant's backlog is at
        ``queue_limit``; nothing is stored then.

        ``source_key`` makes the delivery idempotent (an IMAP source passes
        its UIDVALIDITY and UID): a grant stores one message per key, and
        delivering it again returns the stored message.
        """
        if self._intake is None:
            raise RuntimeError("the fleet is not open: use `async with Fleet(...) as fleet`")
        if not isinstance(raw, bytes | bytearray):
            raise InvalidInput("message", "a message is given as raw RFC 5322 bytes")
        key = grant.id if isinstance(grant, Grant) else grant
        stored = await self._intake.deliver(key, bytes(raw), source_key=source_key)
        return InboundMessage.from_stored(stored)

    async def cursor(self, grant: str, source: str) -> dict[str, Any] | None:
        """How far ``source`` (e.g. an IMAP mailbox) has been read for a grant."""
        return await self.database.read(lambda c: cursors.get_cursor(c, grant, source))

    async def set_cursor(self, grant: str, source: str, value: dict[str, Any]) -> None:
        """Remember how far ``source`` has been read for a grant (JSON value)."""
        check_json("value", value)
        await self.database.write(lambda c: cursors.set_cursor(c, grant, source, value))

    async def serve(self) -> None:
        """Run the agents until cancelled, then shut down gracefully.

        At shutdown no new message is started; running handlers get
        ``shutdown_grace`` seconds to finish, their completions are committed
        and the grants' leases given back, so another worker (or the next
        start) continues exactly where this one stopped.
        """
        worker, sender = self._worker, self._sender
        if worker is None or sender is None:
            raise RuntimeError("the fleet is not open: use `async with Fleet(...) as fleet`")
        # The worker runs shielded: cancelling serve() must not interrupt
        # handlers mid-flight; the finally block drains it, then cancels it.
        workers = anyio.CancelScope(shield=True)

        async def run_shielded() -> None:
            with workers:
                if not self.settings.run_worker:
                    return  # a front end: it stores mail; workers elsewhere run it
                async with anyio.create_task_group() as inner:
                    inner.start_soon(sender.run)
                    await worker.run()

        manager = plugin_manager(self.settings.plugin_allowlist)
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_shielded)
            if self.settings.smtp_port is not None:
                self.smtp_port = await tg.start(self._serve_smtp)
            for source in inbound_sources(manager, self.settings):
                tg.start_soon(self._run_source, source, name=f"source {source.name}")
            self._serving.set()
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await worker.drain(self.settings.shutdown_grace)
                        await sender.drain(self.settings.shutdown_grace)
                    finally:
                        workers.cancel()
                        self._serving = anyio.Event()
                        self._fresh_runtime()

    def _fresh_runtime(self) -> None:
        """A drained worker and sender are spent: make new ones for the next serve()."""
        self._sender = self._new_sender()
        self._worker = self._new_worker()
        if self._outbox is not None:
            self._outbox.queued = self._sender.notify
        if self._intake is not None:
            self._intake.committed = self._worker.notify

    async def wait_serving(self) -> None:
        """Wait until :meth:`serve` has started its listeners (``smtp_port`` is known)."""
        await self._serving.wait()

    async def _serve_smtp(self, *, task_status: TaskStatus[int]) -> None:
        s = self.settings
        tls = None
        if s.smtp_tls_cert is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(s.smtp_tls_cert, s.smtp_tls_key)
        mx = FleetMx(self._grant_or_none, self.deliver, hostname=s.smtp_hostname)
        await serve_smtp(
            mx,
            host=s.smtp_host,
            port=s.smtp_port or 0,
            hostname=s.smtp_hostname,
            max_recipients=s.smtp_max_recipients,
            tls_context=tls,
            task_status=task_status,
        )

    async def _grant_or_none(self, key: str) -> Grant | None:
        try:
            return await self.grant(key)
        except GrantNotFound:
            return None

    async def _run_source(self, source: InboundSource) -> None:
        """Run a plugin's source; a crash is logged and the source restarted with backoff."""
        delay = 1.0
        while True:
            try:
                await source.serve(self)
                return
            except Exception:
                log.exception("inbound source %s failed; restarting in %.0fs", source.name, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def wait_idle(self) -> None:
        """Wait until every message committed so far has been handled (for tests, tools)."""
        while True:
            backlog = await self.database.read(lambda c: queue.ready_count(c, self._app_id))
            if backlog == 0:
                return
            await anyio.sleep(0.02)

    async def outbox(self, *, status: str | None = None, limit: int = 100) -> list[OutboundView]:
        """Outbound messages, newest first: pending, sent, bounced, or captured in dev mode."""
        return await self.database.read(
            lambda c: outbound.list_outbound(c, self._app_id, status=status, limit=limit)
        )

    async def outbox_count(self, status: str) -> int:
        """How many outbound messages are ``pending``, ``sent``, ``bounced`` or ``captured``."""
        return await self.database.read(
            lambda c: outbound.count_outbound(c, self._app_id, status=status)
        )

    async def outbox_message(self, outbound_id: int) -> OutboundView | None:
        """One outbound message with its raw bytes (as signed and sent)."""
        return await self.database.read(
            lambda c: outbound.get_outbound(c, self._app_id, outbound_id)
        )

    async def agent_state(self, grant: str) -> dict[str, Any]:
        """The saved ``state`` of a grant's agent (empty if it never saved one)."""

        def read(conn: Any) -> dict[str, Any]:
            found = grants.get_grant(conn, self._app_id, grant)
            return queue.states(conn, [found.id]).get(found.id, {})

        return await self.database.read(read)

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """Messages whose handler failed on every attempt, oldest first."""
        return await self.database.read(lambda c: queue.dead_letters(c, self._app_id, limit=limit))

    async def replay_dead_letters(self, entry_ids: Iterable[int] | None = None) -> int:
        """Queue dead letters again (all, or the given ones); return how many."""
        wanted = None if entry_ids is None else list(entry_ids)
        count = await self.database.write(lambda c: queue.replay(c, self._app_id, wanted))
        if self._worker is not None:
            self._worker.notify()
        return count
