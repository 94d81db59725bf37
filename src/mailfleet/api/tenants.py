"""Who is calling, and the fleet of their application.

:class:`Tenants` turns a bearer API key into a :class:`Caller`: the key, its
application, and that application's :class:`~mailfleet.Fleet`, opened on the
store's one shared database the first time the application calls and kept
open while the API runs. Every route works through ``caller.fleet``, whose
every query is scoped to that application: a key of one application can
neither see nor change anything of another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Annotated, Any, Self

import anyio
from anyio.abc import TaskGroup, TaskStatus
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..model.errors import StoreUnavailable
from ..model.records import ApiKey, Application
from ..runtime.eventfeed import EventFeed
from ..runtime.fleet import Fleet
from ..settings import Settings
from ..store import applications
from ..store.database import Database
from ..store.migrate import migrate
from .problems import Problem

__all__ = ["NOT_RUN_HERE", "Admin", "Authorized", "Caller", "Liveness", "Tenants"]

log = logging.getLogger("mailfleet.api")

_KEY_CACHE_SECONDS = 1.0
"""How long a verified key is trusted without asking the store again (a revoked
key stops working within this time)."""

Liveness = Callable[[], Awaitable[dict[str, Any]]]
"""What ``/healthz`` reports beside the store: ``{"mx": ..., "workers": ...}``, each
``ok``, :data:`NOT_RUN_HERE`, or what is wrong."""

NOT_RUN_HERE = "not run here"
"""A part this process does not run (the MX beside ``mailfleet api``): not a fault."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: its key, its application, that application's fleet."""

    key: ApiKey
    application: Application
    fleet: Fleet

    @property
    def who(self) -> str:
        """How the caller is recorded as the author of an act (``api-key:NAME``)."""
        return f"api-key:{self.key.name}"


class Tenants:
    """The applications an API process serves, one open fleet each, on one database.

    Use it as an async context manager. Given ``database`` (a running fleet's,
    with that fleet in ``fleets``), it shares it; otherwise it opens the
    database ``settings`` name, migrating it, and closes it at the end.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        database: Database | None = None,
        fleets: dict[str, Fleet] | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        self.settings = settings
        self._given_database = database
        self._database: Database | None = database
        self._fleets: dict[str, Fleet] = dict(fleets or {})
        self._opening: dict[str, anyio.Lock] = {}
        self._keys: dict[str, tuple[float, ApiKey, Application]] = {}
        self._liveness = liveness
        self._holders: TaskGroup | None = None
        self._closing = anyio.Event()
        self._feed: EventFeed | None = None

    @property
    def database(self) -> Database:
        """The store's database."""
        if self._database is None:
            raise RuntimeError("Tenants is not open: use `async with Tenants(...)`")
        return self._database

    @property
    def feed(self) -> EventFeed:
        """The process's one poller of the store's event log (``/v1/events``, the stream)."""
        if self._feed is None:
            raise RuntimeError("Tenants is not open: use `async with Tenants(...)`")
        return self._feed

    @property
    def fleets(self) -> dict[str, Fleet]:
        """The fleets open now, by application id."""
        return dict(self._fleets)

    async def __aenter__(self) -> Self:
        if self._database is None:
            database = Database(self.settings.effective_database_url)
            try:
                await migrate(database)
            except BaseException:
                await database.aclose()
                raise
            self._database = database
        self._holders = anyio.create_task_group()
        await self._holders.__aenter__()
        self._feed = EventFeed(
            self.database,
            interval=self.settings.api_events_poll,
            settle=self.settings.api_events_settle,
        )
        self._holders.start_soon(self._run_feed, self._feed)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        try:
            if self._holders is not None:  # its holders are shielded: they all close
                await self._holders.__aexit__(None, None, None)
        finally:
            self._holders = None
            self._feed = None
            if self._given_database is None and self._database is not None:
                with anyio.CancelScope(shield=True):
                    await self._database.aclose()
            self._database = None

    async def _run_feed(self, feed: EventFeed) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed.run)
            await self._closing.wait()
            tg.cancel_scope.cancel()

    async def health(self) -> dict[str, Any]:
        """The store reachable, and what the liveness callback says of the MX and workers."""
        report: dict[str, Any] = {}
        try:
            await self.database.read(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())
            report["store"] = "ok"
        except Exception as exc:
            report["store"] = f"unavailable: {exc}"
        if self._liveness is not None:
            try:
                report.update(await self._liveness())
            except StoreUnavailable as exc:  # the workers' liveness is read from the store
                report.setdefault("workers", f"unknown: {exc}")
        return report

    async def authenticate(self, secret: str) -> Caller:
        """The caller a bearer secret stands for; a 401 problem for an unknown one."""
        now = time.monotonic()
        cached = self._keys.get(secret)
        if cached is not None and cached[0] > now:
            _, key, application = cached
        else:
            found = await self.database.read(lambda conn: applications.find_api_key(conn, secret))
            if found is None:
                self._keys.pop(secret, None)
                raise _unauthorized("the API key is unknown or revoked")
            key, application = found
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[secret] = (now + _KEY_CACHE_SECONDS, key, application)
        return Caller(key, application, await self.fleet(application))

    async def fleet_of(self, application_id: str) -> Fleet:
        """The open fleet of the application with this id (for links that carry no key)."""
        fleet = self._fleets.get(application_id)
        if fleet is not None:
            return fleet
        application = await self.database.read(
            lambda conn: applications.application_by_id(conn, application_id)
        )
        return await self.fleet(application)

    async def fleet(self, application: Application) -> Fleet:
        """The open fleet of ``application``, opened on first use."""
        fleet = self._fleets.get(application.id)
        if fleet is not None:
            return fleet
        lock = self._opening.setdefault(application.id, anyio.Lock())
        async with lock:
            fleet = self._fleets.get(application.id)
            if fleet is None:
                if self._holders is None:
                    raise RuntimeError("Tenants is not open")
                fleet = await self._holders.start(self._hold, application)
                self._fleets[application.id] = fleet
        return fleet

    async def _hold(self, application: Application, *, task_status: TaskStatus[Fleet]) -> None:
        # A fleet is entered and left in one task (its task group demands it): this
        # one, which waits for the API to close, shielded so it is never cut mid-way.
        settings = Settings.load(self.settings, application=application.name)
        with anyio.CancelScope(shield=True):
            async with Fleet(settings, database=self.database) as fleet:
                log.info("serving application %s over the API", application.name)
                task_status.started(fleet)
                await self._closing.wait()


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="mailfleet"'}
    )


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer mf_...`")


def tenants_of(request: Request) -> Tenants:
    """The :class:`Tenants` of the app serving ``request``."""
    tenants: Tenants = request.app.state.tenants
    return tenants


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("send an API key: Authorization: Bearer <key>")
    return await tenants_of(request).authenticate(credentials.credentials)


async def _admin(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    if not caller.key.admin:
        raise Problem(403, "admin_required", "this act needs an admin key")
    return caller


Authorized = Annotated[Caller, Depends(_caller)]
"""A route parameter: the authenticated caller."""

Admin = Annotated[Caller, Depends(_admin)]
"""A route parameter: the authenticated caller, holding an admin key."""
