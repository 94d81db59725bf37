"""The HTTP API's commands: ``mailfleet api`` and ``mailfleet keys create``; and the
API that ``mailfleet run`` serves beside the MX.

::

    mailfleet keys create ci-pipeline
    mailfleet keys create oncall --admin
    mailfleet api --port 8025

They keep the conventions of :mod:`mailfleet.cli`, which registers them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .cli import _call, _print_json, _say, _session, _until_signal, app
from .model.errors import Conflict
from .settings import Settings

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from .runtime.fleet import Fleet

DEV_KEY_NAME = "mailfleet run (dev)"
"""The name of the admin key ``mailfleet run`` makes in dev mode; each run revokes the
previous run's (set ``MAILFLEET_API_KEY`` for one that lasts)."""


@dataclass(frozen=True, slots=True)
class ApiServing:
    """The API a serving command started: its port, and the dev key it registered."""

    port: int
    key: str | None


# -- mailfleet keys ------------------------------------------------------------------------

keys_app = typer.Typer(no_args_is_help=True, help="API keys of the application.")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create_key(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the key is for (shown in acts it records).")],
    admin: Annotated[
        bool, typer.Option("--admin", help="It may also reinstate, restrict and lift.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Create an API key of the application; its secret is printed once, on stdout."""
    key, secret = _call(ctx, lambda fleet: fleet.create_api_key(name, admin=admin), create=True)
    if as_json:
        _print_json(
            {
                "id": key.id,
                "name": key.name,
                "admin": key.admin,
                "application_id": key.application_id,
                "created_at": key.created_at,
                "secret": secret,
            }
        )
        return
    kind = "admin key" if admin else "key"
    _say(f"created {kind} {key.name!r} ({key.id}); its secret, shown only now:", stderr=True)
    _say(secret)


# -- mailfleet api -------------------------------------------------------------------------


@app.command("api")
def api(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on. [default: 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (0: any free one). [default: 8025]")
    ] = None,
) -> None:
    """Serve the HTTP API alone (any number of instances on one store), until Ctrl-C.

    Every application of the store is served, each caller seeing only its own,
    by its API key, and their webhooks delivered (once per event, however many
    processes deliver; MAILFLEET_WEBHOOK_DELIVERY=false: not here). Agents run in
    `mailfleet run` or `mailfleet worker`.
    """
    session = _session(ctx)
    update: dict[str, Any] = {}
    if host is not None:
        update["api_host"] = host
    if port is not None:
        update["api_port"] = port
    settings = session.settings = Settings.load(session.settings, **update)
    session.announce()

    async def serving(stop: Any, _: None) -> None:
        import anyio

        from .api import Tenants, create_app, serve_api
        from .api.tenants import NOT_RUN_HERE
        from .runtime.webhooks import serve_webhooks, webhook_lag
        from .store.workers import live_workers_anywhere

        async def liveness() -> dict[str, Any]:
            now = time.time()
            live = await tenants.database.read(lambda c: live_workers_anywhere(c, now=now))
            return {"mx": NOT_RUN_HERE, "workers": "ok" if live else "down: none alive"}

        async with Tenants(settings, liveness=liveness) as tenants:
            with stop:
                async with anyio.create_task_group() as tg:
                    application = create_app(tenants, webhook_lag=webhook_lag)
                    bound = await tg.start(
                        serve_api, application, settings.api_host, settings.api_port
                    )
                    if settings.webhook_delivery:  # every application's, once per event
                        await tg.start(serve_webhooks, tenants.database, settings)
                    _say(f"API: http://{settings.api_host}:{bound}/v1 (docs: /docs)")
                    _say(f"database: {session.database}; serving, press Ctrl-C to stop")

    _until_signal(serving, lambda: None)
    _say("API stopped.")


# -- the API beside `mailfleet run` -------------------------------------------------------


async def serve_fleet_api(fleet: Fleet, *, task_status: TaskStatus[ApiServing]) -> None:
    """Serve the API of the store ``fleet`` opened, sharing its database, until cancelled;
    in dev mode register an admin key first (``MAILFLEET_API_KEY``, or a new one)."""
    import anyio

    from .api import Tenants, create_app, serve_api
    from .api.tenants import NOT_RUN_HERE
    from .runtime.webhooks import webhook_lag

    settings = fleet.settings

    async def liveness() -> dict[str, Any]:
        return {
            "mx": "ok" if fleet.smtp_port is not None else NOT_RUN_HERE,
            "workers": "ok" if fleet.worker_id is not None else "down: not serving",
        }

    key = await _dev_key(fleet) if settings.dev_mode else None
    tenants = Tenants(
        settings,
        database=fleet.database,
        fleets={fleet.application.id: fleet},
        liveness=liveness,
    )
    async with tenants, anyio.create_task_group() as tg:
        application = create_app(tenants, webhook_lag=webhook_lag)
        serving = partial(serve_api, application, settings.api_host, settings.api_port)
        port = await tg.start(partial(serving, grace=min(settings.shutdown_grace, 5.0)))
        task_status.started(ApiServing(port, key))


async def _dev_key(fleet: Fleet) -> str:
    from .store import applications

    configured = fleet.settings.api_key
    if configured is not None:
        secret = configured.get_secret_value()
        found = await fleet.database.read(lambda c: applications.find_api_key(c, secret))
        if found is not None:
            if found[1].id != fleet.application.id:
                raise Conflict(
                    "api_key", "MAILFLEET_API_KEY is a key of another application of this store"
                )
            return secret
        await fleet.create_api_key("MAILFLEET_API_KEY", admin=True, secret=secret)
        return secret
    await fleet.revoke_api_keys(DEV_KEY_NAME)
    _, secret = await fleet.create_api_key(DEV_KEY_NAME, admin=True)
    return secret
