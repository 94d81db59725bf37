"""The HTTP API served for a test: a real uvicorn server on a loopback port.

``ApiServer`` serves every application of the fleet's store (as ``mailfleet
api`` does) and hands out clients with API keys: ``server.client()`` for the
fleet's own application, ``server.client(application="other")`` for a second
one, ``admin=True`` for an admin key. Every request goes over a real socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from mailfleet import Fleet
from mailfleet.api import Tenants, create_app, serve_api
from mailfleet.model.records import Application
from mailfleet.settings import Settings
from mailfleet.store import applications


@dataclass
class ApiServer:
    """A serving API: its base URL, the fleet it shares its database with, its clients."""

    url: str
    fleet: Fleet
    tenants: Tenants
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    others: dict[str, Fleet] = field(default_factory=dict)

    async def key(self, *, application: str | None = None, admin: bool = False) -> str:
        """A new API key of ``application`` (default: the fleet's)."""
        fleet = await self.fleet_of(application)
        _, secret = await fleet.create_api_key("test", admin=admin)
        return secret

    async def fleet_of(self, application: str | None) -> Fleet:
        """The open fleet of ``application`` (created in the store if it is new)."""
        if application is None or application == self.fleet.application.name:
            return self.fleet
        if application not in self.others:
            raise KeyError(f"open it first with other_fleet({application!r})")
        return self.others[application]

    async def client(
        self, *, application: str | None = None, admin: bool = False, key: str | None = None
    ) -> httpx.AsyncClient:
        """An HTTP client of the API with a new key (or ``key``)."""
        secret = key if key is not None else await self.key(application=application, admin=admin)
        client = httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
        )
        self.clients.append(client)
        return client

    def anonymous(self) -> httpx.AsyncClient:
        """An HTTP client without a key."""
        client = httpx.AsyncClient(base_url=self.url, timeout=30)
        self.clients.append(client)
        return client


@asynccontextmanager
async def api_server(
    fleet: Fleet, *, others: tuple[str, ...] = ("other",), **overrides: Any
) -> AsyncIterator[ApiServer]:
    """Serve the API on ``fleet``'s database (port 0); ``others`` are further applications
    opened on the same store (``server.others[name]``), for tests of isolation."""
    settings = Settings.load(fleet.settings, **overrides)
    async with Tenants(
        settings, database=fleet.database, fleets={fleet.application.id: fleet}
    ) as tenants:
        opened: dict[str, Fleet] = {}
        async with anyio.create_task_group() as tg:
            for name in others:
                opened[name] = await tenants.fleet(await _application(fleet, name))
            port = await tg.start(serve_api, create_app(tenants), "127.0.0.1", 0)
            server = ApiServer(f"http://127.0.0.1:{port}", fleet, tenants, others=opened)
            try:
                yield server
            finally:
                for client in server.clients:
                    await client.aclose()
                tg.cancel_scope.cancel()


async def _application(fleet: Fleet, name: str) -> Application:
    """The application ``name`` in ``fleet``'s store (its fleet, opening, adds the rest)."""
    return await fleet.database.write(lambda conn: applications.ensure_application(conn, name))
